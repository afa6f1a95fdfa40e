//! `/healthz` (the process is up), `/readyz` (the store answers) and `/metrics`.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use sable_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) async fn serve(
    listener: TcpListener,
    store: Store,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { sable_telemetry::render_metrics() }),
        )
        .with_state(store);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(store): State<Store>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "the store is unreachable"),
    }
}
