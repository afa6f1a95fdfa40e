//! `GET /v1/diagnostics/runtime` (admin keys only): the deployment's live processes and
//! versions, the work queues' backlog, this gateway's bus connection and database pool,
//! and MCP status.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use sable_bus::{QueueStats, WorkQueue};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::ErrorBody;
use crate::routes::tools::ServerView;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(runtime))
}

/// The deployment as this gateway sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Runtime {
    gateway_version: &'static str,
    /// The processes whose heartbeat is recent.
    roles: Vec<LiveRole>,
    bus: BusView,
    database: DatabaseView,
    mcp: McpView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LiveRole {
    instance_id: String,
    /// `gateway`, `worker`, `cron` or `mcp-sidecar`.
    role: String,
    version: String,
    started_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BusView {
    connected: bool,
    /// The work queues (`turns`, `deliveries`) by name.
    queues: BTreeMap<&'static str, QueueView>,
}

/// A work queue's backlog, or why it could not be read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum QueueView {
    Stats {
        pending: u64,
        ack_pending: u64,
        redelivered: u64,
    },
    Unreadable {
        error: String,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DatabaseView {
    pool: PoolView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PoolView {
    size: u32,
    idle: u32,
    max: u32,
}

/// The MCP sidecar as this gateway reaches it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct McpView {
    /// `not_configured` (no `SABLE_MCP_SIDECAR_URL`), `unreachable` or `up`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    servers: Vec<ServerView>,
}

/// The deployment's live processes and versions, the work queues' backlog, this
/// gateway's bus connection and database pool, and MCP status (admin keys only).
#[utoipa::path(
    get,
    path = "/v1/diagnostics/runtime",
    tag = "diagnostics",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The runtime's state", body = Runtime),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ),
)]
async fn runtime(
    State(state): State<AppState>,
    _caller: Authenticated,
) -> Result<Json<Runtime>, ApiError> {
    let roles = state.store.live_roles(state.config.live_within).await?;
    let pool = state.store.pool_stats().await?;
    let mut queues = BTreeMap::new();
    for (name, queue) in [
        ("turns", WorkQueue::Turns),
        ("deliveries", WorkQueue::Deliveries),
    ] {
        let stats = state.bus.queue_stats(queue).await;
        queues.insert(name, queue_view(stats));
    }
    Ok(Json(Runtime {
        gateway_version: env!("CARGO_PKG_VERSION"),
        roles: roles
            .iter()
            .map(|role| LiveRole {
                instance_id: role.instance_id.clone(),
                role: role.role.clone(),
                version: role.version.clone(),
                started_at: role.started_at,
                last_seen_at: role.last_seen_at,
            })
            .collect(),
        bus: BusView {
            connected: state.bus.is_connected(),
            queues,
        },
        database: DatabaseView {
            pool: PoolView {
                size: pool.size,
                idle: pool.idle,
                max: pool.max,
            },
        },
        mcp: mcp_view(&state).await,
    }))
}

/// The MCP sidecar as this gateway reaches it: `not_configured` (no
/// `SABLE_MCP_SIDECAR_URL`), `unreachable` (with the error) or `up` with its servers.
async fn mcp_view(state: &AppState) -> McpView {
    let Some(catalog) = state.config.tools.mcp() else {
        return McpView {
            status: "not_configured",
            revision: None,
            error: None,
            servers: Vec::new(),
        };
    };
    match crate::routes::tools::sidecar_status(catalog).await {
        Ok(status) => McpView {
            status: "up",
            revision: Some(status.revision),
            error: None,
            servers: crate::routes::tools::servers_json(&status),
        },
        Err(error) => McpView {
            status: "unreachable",
            revision: None,
            error: Some(error.message().to_owned()),
            servers: Vec::new(),
        },
    }
}

fn queue_view(stats: Result<QueueStats, sable_bus::BusError>) -> QueueView {
    match stats {
        Ok(stats) => QueueView::Stats {
            pending: stats.pending,
            ack_pending: stats.ack_pending,
            redelivered: stats.redelivered,
        },
        Err(error) => QueueView::Unreadable {
            error: error.to_string(),
        },
    }
}
