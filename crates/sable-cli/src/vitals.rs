//! What every serving process reports about itself on a fixed beat: a heartbeat row (the
//! runtime diagnostics list live processes from these) and gauges of the work queues'
//! backlog and of its database pool on `/metrics`.

use std::time::Duration;

use sable_bus::{Bus, WorkQueue};
use sable_store::{RoleInstance, Store};
use tokio_util::sync::CancellationToken;

/// A process unseen for this many beats is no longer listed as live.
pub(crate) const BEATS_BEFORE_GONE: u32 = 3;

/// Reports until `shutdown`, every `every`.
pub(crate) fn spawn(
    store: Store,
    bus: Bus,
    role: &str,
    instance_id: String,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let instance = RoleInstance {
        instance_id,
        role: role.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: chrono::Utc::now(),
        last_seen_at: chrono::Utc::now(),
    };
    tokio::spawn(async move {
        loop {
            report(&store, &bus, &instance).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

async fn report(store: &Store, bus: &Bus, instance: &RoleInstance) {
    if let Err(error) = store.record_heartbeat(instance).await {
        tracing::debug!(%error, "heartbeat not recorded");
    }
    for (name, queue) in [
        ("turns", WorkQueue::Turns),
        ("deliveries", WorkQueue::Deliveries),
    ] {
        let Ok(stats) = bus.queue_stats(queue).await else {
            continue;
        };
        #[allow(clippy::cast_precision_loss)]
        let gauge = |value: u64| value as f64;
        metrics::gauge!("sable_queue_pending", "queue" => name).set(gauge(stats.pending));
        metrics::gauge!("sable_queue_ack_pending", "queue" => name).set(gauge(stats.ack_pending));
        metrics::gauge!("sable_queue_redelivered", "queue" => name).set(gauge(stats.redelivered));
    }
    if let Ok(pool) = store.pool_stats().await {
        metrics::gauge!("sable_db_pool_connections", "state" => "open").set(f64::from(pool.size));
        metrics::gauge!("sable_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
        metrics::gauge!("sable_db_pool_connections", "state" => "max").set(f64::from(pool.max));
    }
}
