//! The gateway role: Sable's HTTP API, the reply dispatcher and Feishu's long connections.
//!
//! Accepts messages (writing message + queued turn in one Postgres transaction, then
//! publishing a wake-up), answers waiting clients from live events or Postgres, serves
//! turn and history reads, holds a WebSocket per Feishu `long-connection` app, and
//! dispatches pending deliveries to their channels. Holds no state of its own: any
//! number of gateways can run side by side.
//!
//! Depends on the store, bus, core, runtime, tools (the registry and the MCP sidecar's
//! client, for the tool views) and telemetry crates; never on another service.

mod audit_sealer;
mod auth;
mod body;
mod console;
mod dispatcher;
mod error;
mod feishu;
mod limits;
mod openapi;
pub mod permissions;
mod quotas;
mod routes;
mod serve;
#[doc(hidden)]
pub mod testing;
mod waiter;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use sable_bus::Bus;
use sable_runtime::TurnIntake;
use sable_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use audit_sealer::AuditConfig;
pub use error::ApiError;
pub use feishu::{
    DEFAULT_BASE_URL as FEISHU_DEFAULT_BASE_URL, FeishuAppInput, FeishuConfig,
    build_app as build_feishu_app, webhook_path as feishu_webhook_path,
};
pub use limits::{MAX_HEADER_BYTES, MAX_URI_BYTES};
pub use routes::keys::DEFAULT_KEY_ROLE;
pub use serve::HttpLimits;
pub use webhook::WebhookChannel;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What a gateway needs to know beyond its connections.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// What the deployment's files give every org (the agents a request may name, the
    /// bindings, the default agent, the model catalog); each org's own configuration is
    /// layered over it.
    pub org_base: sable_runtime::OrgConfigBase,
    /// How often intake rechecks an org's configuration version.
    pub org_config_refresh: Duration,
    /// Longest a `"wait": true` request or SSE stream waits before answering 202.
    pub wait_timeout: Duration,
    /// How often a waiting request rechecks Postgres in case a live event was missed.
    pub wait_poll_interval: Duration,
    /// How often the delivery sweeper looks for pending deliveries with lost wake-ups.
    pub sweep_interval: Duration,
    /// A pending delivery untouched this long has its wake-up published again.
    pub sweep_after: Duration,
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
    /// Connection-level limits against slow and hostile clients.
    pub http: HttpLimits,
    /// The tool registry workers use (with the MCP sidecar's catalog when one is
    /// configured), for `GET /v1/tools`, `GET /v1/mcp/servers` and diagnostics.
    pub tools: sable_tools::ToolRegistry,
    /// The Feishu / Lark channel (apps live in the store).
    pub feishu: FeishuConfig,
    /// The audit trail's sealer and retention.
    pub audit: AuditConfig,
    /// The platform administrator's bootstrap key (`SABLE_ADMIN_KEY`), if any.
    pub admin_key: Option<sable_core::Secret>,
    /// How long this gateway uses its copy of the orgs' quotas before checking the table
    /// again (`quota_cache_ms`): another gateway's change applies within this long.
    pub quota_cache: Duration,
}

/// Shared by every request handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub bus: Bus,
    pub config: Arc<GatewayConfig>,
    /// Cancelled at shutdown: waiting and streaming requests answer at once.
    pub shutdown: CancellationToken,
    /// Where accepted messages become queued turns (shared with the cron service).
    pub intake: TurnIntake,
    pub feishu: feishu::FeishuState,
    pub auth_cache: Arc<auth::AuthCache>,
    /// The deployment's change count as this gateway last polled it (the key cache and
    /// intake's org configurations follow it).
    pub change_feed: Arc<sable_runtime::ChangeFeed>,
    /// Key uses waiting for their batched write.
    pub key_uses: Arc<auth::KeyUses>,
    pub quotas: Arc<quotas::QuotaGuard>,
}

impl AppState {
    /// The per-org configurations (shared with intake).
    pub(crate) fn orgs(&self) -> &sable_runtime::OrgConfigs {
        self.intake.orgs()
    }

    /// The agents `org_id`'s callers see and may name: the deployment's, with the org's
    /// own layered over them.
    pub(crate) async fn agents_of(
        &self,
        org_id: sable_core::OrgId,
    ) -> Result<Vec<Arc<sable_runtime::AgentDefinition>>, ApiError> {
        let org = self.orgs().current(org_id).await?;
        Ok(org
            .agents
            .ids()
            .filter_map(|id| org.agents.get(id))
            .collect())
    }
}

/// Serves the API on `listener` and runs the dispatcher and the Feishu long connections
/// until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(
    config: GatewayConfig,
    store: Store,
    bus: Bus,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    bus.ensure_topology_patiently(&shutdown).await?;
    let state = app_state(config, store, bus, shutdown.clone());
    let changes = tokio::spawn(auth::follow_changes(
        state.store.clone(),
        state.change_feed.clone(),
        shutdown.clone(),
    ));
    let dispatcher = tokio::spawn(dispatcher::run(state.clone(), shutdown.clone()));
    let sweeper = tokio::spawn(dispatcher::sweep_deliveries(
        state.clone(),
        shutdown.clone(),
    ));
    let sealer = tokio::spawn(audit_sealer::run(
        state.store.clone(),
        state.config.audit.clone(),
        shutdown.clone(),
    ));
    let feishu_connections = tokio::spawn(feishu::long_connection::run(
        state.clone(),
        shutdown.clone(),
    ));
    tracing::info!(addr = %listener.local_addr()?, "gateway serving");
    let limits = state.config.http.clone();
    serve::serve(listener, router(state), &limits, shutdown.clone()).await;
    shutdown.cancel();
    dispatcher.await?;
    sweeper.await?;
    sealer.await?;
    feishu_connections.await?;
    changes.await?;
    Ok(())
}

/// The state every handler shares, built once per gateway.
fn app_state(
    config: GatewayConfig,
    store: Store,
    bus: Bus,
    shutdown: CancellationToken,
) -> AppState {
    let orgs = sable_runtime::OrgConfigs::new(
        store.clone(),
        config.org_base.clone(),
        config.feishu.secrets_key.clone(),
        false,
        config.org_config_refresh,
    );
    let change_feed = Arc::new(sable_runtime::ChangeFeed::default());
    orgs.follow(change_feed.clone());
    let intake = TurnIntake::new(store.clone(), bus.clone(), orgs);
    AppState {
        quotas: Arc::new(quotas::QuotaGuard::new(store.clone(), config.quota_cache)),
        store,
        bus,
        feishu: feishu::FeishuState::new(&config.feishu),
        config: Arc::new(config),
        shutdown,
        intake,
        auth_cache: Arc::new(auth::AuthCache::new(change_feed.clone())),
        change_feed,
        key_uses: Arc::default(),
    }
}

fn router(state: AppState) -> Router {
    let (served, _document) = openapi::api().split_for_parts();
    served
        // Not JSON APIs, so not in the document: the MCP endpoint (JSON-RPC) and the
        // console's static assets.
        .merge(routes::mcp::router(&state))
        .merge(console::router())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::MethodNotAllowed(method.to_string())
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            permissions::enforce,
        ))
        .route_layer(axum::middleware::from_fn(routes::metrics::record))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(limits::refuse_oversized))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
}
