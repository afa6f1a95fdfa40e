//! The gateway role: Sable's HTTP API and the reply dispatcher.
//!
//! Accepts messages (writing message + queued turn in one Postgres transaction, then
//! publishing a wake-up), answers waiting clients from live events or Postgres, serves
//! turn and history reads, and dispatches pending deliveries to their channels. Holds no
//! state of its own: any number of gateways can run side by side.
//!
//! Depends on the store, bus, core, runtime, tools (the registry and the MCP sidecar's
//! client, for the tool views) and telemetry crates; never on another service.

mod auth;
mod body;
mod dispatcher;
mod error;
mod routes;
mod waiter;
mod webhook;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sable_bus::Bus;
use sable_core::AgentId;
use sable_runtime::Bindings;
use sable_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use webhook::WebhookChannel;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What a gateway needs to know beyond its connections.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The agent for sessions that name none.
    pub default_agent: AgentId,
    /// Agents a request may name.
    pub agents: BTreeSet<String>,
    /// Longest a `"wait": true` request or SSE stream waits before answering 202.
    pub wait_timeout: Duration,
    /// How often a waiting request rechecks Postgres in case a live event was missed.
    pub wait_poll_interval: Duration,
    /// How often the delivery sweeper looks for pending deliveries with lost wake-ups.
    pub sweep_interval: Duration,
    /// A pending delivery untouched this long has its wake-up published again.
    pub sweep_after: Duration,
    /// Which agent answers a message that names none.
    pub bindings: Bindings,
    /// Where replies of the `webhook` channel are POSTed; `None` refuses that channel.
    pub webhook: Option<WebhookChannel>,
    /// Named places where fault-injection tests stop the process (disarmed in
    /// production).
    pub faults: sable_core::FaultPoints,
    /// The Langfuse UI the turn diagnostics link traces to, when spans go there.
    pub langfuse_host: Option<String>,
    /// The Langfuse project of the keys, for direct links (optional).
    pub langfuse_project_id: Option<String>,
    /// A process whose heartbeat is older than this is not listed as live.
    pub live_within: Duration,
    /// The agents, for what each is offered (`GET /v1/tools`).
    pub agent_catalog: sable_runtime::AgentCatalog,
    /// The tool registry workers use (with the MCP sidecar's catalog when one is
    /// configured), for `GET /v1/tools`, `GET /v1/mcp/servers` and diagnostics.
    pub tools: sable_tools::ToolRegistry,
}

/// Shared by every request handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub bus: Bus,
    pub config: Arc<GatewayConfig>,
}

/// Serves the API on `listener` and runs the dispatcher until `shutdown` is cancelled,
/// then drains in-flight requests.
pub async fn run(
    config: GatewayConfig,
    store: Store,
    bus: Bus,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    bus.ensure_topology_patiently(&shutdown).await?;
    let state = AppState {
        store,
        bus,
        config: Arc::new(config),
    };
    let dispatcher = tokio::spawn(dispatcher::run(state.clone(), shutdown.clone()));
    let sweeper = tokio::spawn(dispatcher::sweep_deliveries(
        state.clone(),
        shutdown.clone(),
    ));
    tracing::info!(addr = %listener.local_addr()?, "gateway serving");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    dispatcher.await?;
    sweeper.await?;
    Ok(())
}

fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::messages::router())
        .merge(routes::turns::router())
        .merge(routes::sessions::router())
        .merge(routes::approvals::router())
        .merge(routes::metrics::router())
        .merge(routes::diagnostics::router())
        .merge(routes::tools::router())
        .fallback(|| async { ApiError::NotFound("route") })
        .route_layer(axum::middleware::from_fn(routes::metrics::record))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
