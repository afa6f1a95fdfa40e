//! The turn sweeper: wakes sessions whose live turns lost their wake-up (a publish that
//! failed while NATS was down) or their worker (a crash, after the lease expired), and
//! expires approvals nobody answered in time (a denial), waking their parked turns.

use std::sync::Arc;

use sable_proto::v1::TurnWakeup;
use sable_store::StaleWakeup;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::WorkerContext;
use crate::consume::pause;

pub(crate) async fn run(context: Arc<WorkerContext>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match context
            .store
            .claim_stale_turns(context.config.sweep_after, 500)
            .await
        {
            Ok(stale) => wake_all(&context, &stale, "stale turn woken again").await,
            Err(error) => tracing::debug!(%error, "turn sweep skipped"),
        }
        match context.store.expire_approvals(100).await {
            Ok(expired) => {
                metrics::counter!("sable_approvals_expired_total").increment(expired.len() as u64);
                wake_all(
                    &context,
                    &expired,
                    "approval expired; turn woken to continue",
                )
                .await;
            }
            Err(error) => tracing::debug!(%error, "approval expiry skipped"),
        }
        pause(&shutdown, context.config.sweep_interval).await;
    }
}

async fn wake_all(context: &WorkerContext, turns: &[StaleWakeup], what: &str) {
    for turn in turns {
        let wakeup = TurnWakeup {
            turn_id: turn.id.to_string(),
            org_id: turn.org_id.to_string(),
            session_id: turn.session_id.to_string(),
        };
        // A fresh message id: the original one may still be in the duplicate window.
        let message_id = format!("{}.{}", turn.id, Uuid::new_v4());
        match context
            .bus
            .publish_turn_wakeup(&wakeup, &message_id, None)
            .await
        {
            Ok(()) => tracing::info!(turn_id = %turn.id, "{what}"),
            Err(error) => tracing::warn!(%error, "turn not woken; next sweep retries"),
        }
    }
}
