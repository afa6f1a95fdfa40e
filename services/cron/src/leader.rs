//! Leader election through the store's lease row: every replica tries to take or renew
//! it each tick; only the holder fires, and only while its lease is surely still valid.

use std::time::{Duration, Instant};

use sable_runtime::TurnIntake;
use sable_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{CronConfig, LEADER_LEASE, fire};

/// Competes for the lease until `shutdown`, firing due tasks while it holds it.
pub(crate) async fn run(
    config: &CronConfig,
    store: &Store,
    intake: &TurnIntake,
    shutdown: &CancellationToken,
) {
    let pause = config.tick_interval.min(config.lease_ttl / 3);
    // Stop firing a little before the lease could have expired, in case a renewal was
    // slow: the next replica may take over at expiry.
    let margin = config.lease_ttl / 5;
    let mut leading = false;
    metrics::gauge!("sable_cron_leader").set(0.0);
    while !shutdown.is_cancelled() {
        let asked = Instant::now();
        let held = match store
            .acquire_lease(LEADER_LEASE, &config.instance_id, config.lease_ttl)
            .await
        {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(%error, "cannot reach the lease; not leading");
                false
            }
        };
        if held != leading {
            leading = held;
            metrics::gauge!("sable_cron_leader").set(if held { 1.0 } else { 0.0 });
            tracing::info!(instance = %config.instance_id, leading, "cron leadership changed");
        }
        if held {
            let valid_until = asked + config.lease_ttl.saturating_sub(margin);
            fire::fire_due(config, store, intake, valid_until).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    if leading {
        if let Err(error) = store.release_lease(LEADER_LEASE, &config.instance_id).await {
            tracing::warn!(%error, "could not release the leader lease; it expires on its own");
        }
        metrics::gauge!("sable_cron_leader").set(0.0);
    }
}

/// True while the lease taken at some instant is still ours by our own clock.
pub(crate) fn still_leading(valid_until: Instant) -> bool {
    Instant::now() < valid_until
}

/// How long a transient enqueue failure waits before its next attempt.
pub(crate) fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)))
}
