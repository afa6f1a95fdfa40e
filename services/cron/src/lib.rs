//! The cron role: fires each due scheduled task exactly once into the turn queue, however
//! many replicas run.
//!
//! One replica leads at a time, by holding a lease row in the store (renewed every tick,
//! expiring after `lease_ttl`; no NATS KV). The leader reads the tasks whose next
//! occurrence has come, enqueues each occurrence through the same intake as
//! `POST /v1/messages` with the idempotency key `cron:<task_id>:<scheduled RFC 3339 UTC>`,
//! records the run, and moves the task's next occurrence on with a compare-and-set. A
//! leader change, a restart between enqueueing and recording, or two leaders for a moment
//! can therefore repeat the enqueue but never the turn. Occurrences found later than
//! `misfire_grace` follow the task's misfire policy. Serves `/healthz`, `/readyz` and
//! `/metrics` on the listener it is given.
//!
//! Depends on the store, the runtime's intake, core and telemetry; never on another
//! service.

mod fire;
mod http;
mod leader;

use std::time::Duration;

use sable_runtime::TurnIntake;
use sable_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The lease row every replica competes for.
pub const LEADER_LEASE: &str = "cron-leader";

/// What a cron replica needs to know beyond its connections.
#[derive(Debug, Clone)]
pub struct CronConfig {
    /// Unique per process: the lease owner.
    pub instance_id: String,
    /// A leader that stops renewing loses the lease after this long.
    pub lease_ttl: Duration,
    /// How often the leader looks for due tasks (and renews; at most a third of the TTL
    /// is used).
    pub tick_interval: Duration,
    /// An occurrence found later than this was missed: the misfire policy decides.
    pub misfire_grace: Duration,
    /// Runs kept per task (older ones are deleted).
    pub run_retention: i64,
    /// Due tasks handled per tick.
    pub batch_size: i64,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            instance_id: "cron".into(),
            lease_ttl: Duration::from_secs(10),
            tick_interval: Duration::from_millis(500),
            misfire_grace: Duration::from_secs(30),
            run_retention: 200,
            batch_size: 100,
        }
    }
}

/// Competes for leadership and fires due tasks until `shutdown` is cancelled, serving
/// health and metrics on `listener` (none in `sable dev`, whose gateway serves them);
/// a leader gives the lease up on the way out.
pub async fn run(
    config: CronConfig,
    store: Store,
    intake: TurnIntake,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(instance = %config.instance_id, "cron replica starting");
    let server = listener
        .map(|listener| tokio::spawn(http::serve(listener, store.clone(), shutdown.clone())));
    leader::run(&config, &store, &intake, &shutdown).await;
    shutdown.cancel();
    if let Some(server) = server {
        server.await??;
    }
    Ok(())
}
