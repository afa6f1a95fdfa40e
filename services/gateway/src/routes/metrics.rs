//! `GET /metrics` (Prometheus text format) and the middleware that counts every request
//! by route template, method and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Every metric of this process in Prometheus' text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((
        status = 200,
        description = "Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4",
        body = String,
    )),
)]
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        sable_telemetry::render_metrics(),
    )
}

/// Records `sable_http_requests_total` and `sable_http_request_duration_seconds`. The
/// route label is the matched template (`/v1/turns/{turn_id}`), never the raw path, so
/// its cardinality stays bounded.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("sable_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("sable_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
