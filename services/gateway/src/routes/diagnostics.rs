//! `GET /v1/diagnostics/runtime` (admin keys only): the deployment's live processes and
//! versions, the work queues' backlog, this gateway's bus connection and database pool,
//! and MCP status.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use sable_bus::{QueueStats, WorkQueue};
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/diagnostics/runtime", get(runtime))
}

async fn runtime(
    State(state): State<AppState>,
    _caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let roles = state.store.live_roles(state.config.live_within).await?;
    let pool = state.store.pool_stats().await?;
    let mut queues = serde_json::Map::new();
    for (name, queue) in [
        ("turns", WorkQueue::Turns),
        ("deliveries", WorkQueue::Deliveries),
    ] {
        let stats = state.bus.queue_stats(queue).await;
        queues.insert(name.to_owned(), queue_json(stats));
    }
    Ok(Json(json!({
        "gateway_version": env!("CARGO_PKG_VERSION"),
        "roles": roles.iter().map(|role| json!({
            "instance_id": role.instance_id,
            "role": role.role,
            "version": role.version,
            "started_at": role.started_at,
            "last_seen_at": role.last_seen_at,
        })).collect::<Vec<_>>(),
        "bus": {"connected": state.bus.is_connected(), "queues": queues},
        "database": {"pool": {"size": pool.size, "idle": pool.idle, "max": pool.max}},
        "mcp": mcp_json(&state).await,
    })))
}

/// The MCP sidecar as this gateway reaches it: `not_configured` (no
/// `SABLE_MCP_SIDECAR_URL`), `unreachable` (with the error) or `up` with its servers.
async fn mcp_json(state: &AppState) -> Value {
    let Some(catalog) = state.config.tools.mcp() else {
        return json!({"status": "not_configured", "servers": []});
    };
    match crate::routes::tools::sidecar_status(catalog).await {
        Ok(status) => json!({
            "status": "up",
            "revision": status.revision,
            "servers": crate::routes::tools::servers_json(&status),
        }),
        Err(error) => json!({
            "status": "unreachable",
            "error": error.message(),
            "servers": [],
        }),
    }
}

fn queue_json(stats: Result<QueueStats, sable_bus::BusError>) -> Value {
    match stats {
        Ok(stats) => json!({
            "pending": stats.pending,
            "ack_pending": stats.ack_pending,
            "redelivered": stats.redelivered,
        }),
        Err(error) => json!({"error": error.to_string()}),
    }
}
