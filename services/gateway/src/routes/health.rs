//! `GET /healthz` (the process is up) and `GET /readyz` (Postgres and NATS reachable).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let postgres_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
        Ok(Ok(()))
    );
    let nats_ok = state.bus.is_connected();
    let checks = json!({"postgres": if postgres_ok { "ok" } else { "unreachable" }, "nats": if nats_ok { "ok" } else { "unreachable" }});
    if postgres_ok && nats_ok {
        return (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        );
    }
    let body = json!({
        "error": {"code": "not_ready", "message": "a dependency is unreachable"},
        "checks": checks,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body))
}
