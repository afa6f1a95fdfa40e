//! The worker role: pulls turn wake-ups, drains each session under its lease, and runs
//! each turn with `sable_runtime::turn` (the agent loop lives there).
//!
//! A worker holds no state of its own. For a wake-up it claims the session's lease in
//! Postgres, drains the session's unfinished turns in sequence order, persists each reply
//! together with its delivery (outbox) in one transaction, and publishes live events.
//! Any number of workers share one durable consumer; the lease keeps each session to one
//! worker at a time, and the turn's attempt number fences out a worker that lost it.
//!
//! Depends on the store, bus, llm, runtime, core and telemetry crates; never on another
//! service.

mod capabilities;
mod consume;
mod local_sessions;
mod session;
mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use sable_bus::Bus;
use sable_llm::ModelClient;
use sable_runtime::turn::{TurnEnv, TurnSettings};
use sable_runtime::{AgentCatalog, OrgConfigs};
use sable_store::Store;
use sable_tools::{SkillCatalog, ToolRegistry};
use tokio_util::sync::CancellationToken;

/// What a worker needs to know beyond its connections.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per process; recorded as lease owner and on each turn it runs.
    pub worker_id: String,
    /// How long a session lease lasts without renewal. A crashed worker's sessions are
    /// picked up elsewhere after this.
    pub lease_ttl: Duration,
    /// Sessions this worker drains at once.
    pub max_concurrent_sessions: usize,
    /// How often the sweeper looks for turns whose wake-up was lost.
    pub sweep_interval: Duration,
    /// A live turn of an unleased session untouched this long is woken again.
    pub sweep_after: Duration,
    /// An approval nobody answers within this long counts as a denial.
    pub approval_ttl: Duration,
    /// On shutdown, in-flight turns get this long to finish before the process exits
    /// (their leases then expire and another worker resumes them).
    pub shutdown_grace: Duration,
    /// A turn started this many times without ending is failed instead of being run
    /// again: something about it breaks every worker that tries.
    pub max_turn_attempts: i32,
    /// Named places where fault-injection tests stop the process (disarmed in
    /// production).
    pub faults: sable_core::FaultPoints,
    /// Which prompts and replies may enter span attributes, per org.
    pub content_capture: sable_telemetry::ContentCapture,
    /// Label turn metrics with the org id (cardinality grows with the number of orgs).
    pub metrics_org_labels: bool,
}

/// What agents can do: the tool registry and the skills catalog.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub tools: ToolRegistry,
    pub skills: Arc<SkillCatalog>,
}

/// Everything the worker's tasks share: its settings, its connections, and what turns
/// run with.
pub(crate) struct WorkerContext {
    pub config: WorkerConfig,
    pub store: Store,
    pub bus: Bus,
    pub agents: AgentCatalog,
    pub turns: TurnEnv,
    pub local_sessions: local_sessions::LocalSessions,
}

/// Runs until `shutdown` is cancelled, then stops pulling and drains in-flight sessions.
pub async fn run(
    config: WorkerConfig,
    store: Store,
    bus: Bus,
    models: ModelClient,
    orgs: OrgConfigs,
    capabilities: Capabilities,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let agents = orgs.base().agents.clone();
    bus.ensure_topology_patiently(&shutdown).await?;
    let turns = TurnEnv {
        config: TurnSettings {
            worker_id: config.worker_id.clone(),
            approval_ttl: config.approval_ttl,
            max_turn_attempts: config.max_turn_attempts,
            faults: config.faults.clone(),
            content_capture: config.content_capture.clone(),
            metrics_org_labels: config.metrics_org_labels,
        },
        store: store.clone(),
        bus: bus.clone(),
        models: Arc::new(models),
        capabilities: Arc::new(capabilities::WorkerCapabilities {
            tools: capabilities.tools,
            skills: capabilities.skills,
            store: store.clone(),
        }),
        orgs,
    };
    let context = Arc::new(WorkerContext {
        local_sessions: Default::default(),
        config,
        store,
        bus,
        agents,
        turns,
    });
    tracing::info!(worker_id = %context.config.worker_id, "worker pulling turns");
    let sweeper = tokio::spawn(sweeper::run(context.clone(), shutdown.clone()));
    consume::run(context, shutdown).await;
    sweeper.await?;
    Ok(())
}
