//! Pulling turn wake-ups and handing each to a session task, bounded in number.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sable_bus::Delivered;
use sable_core::{OrgId, SessionId};
use sable_proto::v1::TurnWakeup;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::WorkerContext;
use crate::session::{drain_session, let_session_go};

/// Pulls until `shutdown`, then waits up to the grace period for in-flight sessions.
pub(crate) async fn run(context: Arc<WorkerContext>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(context.config.max_concurrent_sessions));
    let batch = context.config.max_concurrent_sessions.clamp(1, 256);
    while !shutdown.is_cancelled() {
        let mut wakeups = match context.bus.turn_wakeups(batch).await {
            Ok(wakeups) => wakeups,
            Err(error) => {
                tracing::warn!(%error, "turn consumer unavailable; retrying");
                pause(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let slot = tokio::select! {
                () = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                next = wakeups.next() => next,
            };
            match next {
                Some(Ok(wakeup)) => {
                    let context = context.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        handle_wakeup(&context, wakeup, &shutdown).await;
                        drop(slot);
                    });
                }
                Some(Err(error)) => tracing::warn!(%error, "turn consumer error"),
                None => break,
            }
        }
    }
    tracker.close();
    if tokio::time::timeout(context.config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown grace ran out with turns in flight; their leases will expire and another worker resumes them"
        );
    }
}

/// Drains the wake-up's session. The wake-up is acked once the lease question is settled
/// (we drained the session, or another live worker holds it); after a database failure it
/// is given back for redelivery after a short, growing delay (not the 30 s ack wait).
async fn handle_wakeup(
    context: &WorkerContext,
    wakeup: Delivered<TurnWakeup>,
    shutdown: &CancellationToken,
) {
    let ids = (
        wakeup.payload.org_id.parse::<OrgId>(),
        wakeup.payload.session_id.parse::<SessionId>(),
    );
    let (Ok(org_id), Ok(session_id)) = ids else {
        tracing::warn!("malformed turn wake-up dropped");
        ack(&wakeup).await;
        return;
    };
    if wakeup.delivery_count() > 1 {
        metrics::counter!("sable_wakeups_redelivered_total", "queue" => "turns").increment(1);
    }
    // One drain per session per process: a second wake-up only asks the running drain
    // for another pass, which closes the gap between its last look and its release.
    let Some(mut draining) = context.local_sessions.enter(session_id) else {
        ack(&wakeup).await;
        return;
    };
    loop {
        // A panic in a turn ends this drain only: the session is let go (here and its
        // lease) and the wake-up given back, as after a database failure, instead of
        // leaving a drain that no longer runs to swallow the session's next wake-ups.
        let drained = AssertUnwindSafe(drain_session(context, org_id, session_id, shutdown))
            .catch_unwind()
            .await;
        let failed = match drained {
            Ok(Ok(_)) => false,
            Ok(Err(error)) => {
                tracing::warn!(%error, %session_id, "session drain interrupted; the wake-up will be redelivered");
                true
            }
            Err(panic) => {
                tracing::error!(panic = panic_message(&*panic), %session_id, "session drain panicked; the wake-up will be redelivered");
                metrics::counter!("sable_drain_panics_total").increment(1);
                let_session_go(context, org_id, session_id).await;
                true
            }
        };
        if failed {
            drop(draining);
            wakeup.retry_with_backoff().await;
            return;
        }
        match draining.finish() {
            Some(again) => draining = again,
            None => break,
        }
    }
    ack(&wakeup).await;
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

async fn ack(wakeup: &Delivered<TurnWakeup>) {
    if let Err(error) = wakeup.ack().await {
        tracing::warn!(%error, "turn wake-up ack failed; a redelivery is harmless");
    }
}

pub(crate) async fn pause(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
