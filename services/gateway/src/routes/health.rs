//! `GET /healthz` (the process is up) and `GET /readyz` (Postgres and NATS reachable).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ErrorDetail;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Each dependency: `ok` or `unreachable`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Checks {
    postgres: &'static str,
    nats: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// Always `ready`.
    status: &'static str,
    checks: Checks,
}

/// A dependency is unreachable: the error (`not_ready`) and which one.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NotReady {
    error: ErrorDetail,
    checks: Checks,
}

/// Postgres and NATS are reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Postgres and NATS are reachable", body = Ready),
        (status = 503, description = "A dependency is unreachable", body = NotReady),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let postgres_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
        Ok(Ok(()))
    );
    let nats_ok = state.bus.is_connected();
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let checks = Checks {
        postgres: word(postgres_ok),
        nats: word(nats_ok),
    };
    if postgres_ok && nats_ok {
        return Json(Ready {
            status: "ready",
            checks,
        })
        .into_response();
    }
    let body = NotReady {
        error: ErrorDetail {
            code: "not_ready".to_owned(),
            message: "a dependency is unreachable".to_owned(),
            quota: None,
        },
        checks,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
