//! Draining one session: claim its lease, run its unfinished turns in sequence order,
//! renew the lease while a turn runs, and let go only when nothing is left.

use sable_core::{OrgId, SessionId};
use sable_proto::v1::TurnWakeup;
use sable_store::{LeaseRelease, RunnableTurn, StoreError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::WorkerContext;
use crate::turn::run_turn;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainResult {
    /// We held the lease and ran every unfinished turn (or handed the rest on at shutdown).
    Drained,
    /// Another live worker holds the lease and will run the session's turns.
    HeldElsewhere,
}

pub(crate) async fn drain_session(
    context: &WorkerContext,
    org_id: OrgId,
    session_id: SessionId,
    shutdown: &CancellationToken,
) -> Result<DrainResult, StoreError> {
    let owner = context.config.worker_id.as_str();
    if !context
        .store
        .claim_session(org_id, session_id, owner, context.config.lease_ttl)
        .await?
    {
        return Ok(DrainResult::HeldElsewhere);
    }
    let drained = drain_claimed(context, org_id, session_id, shutdown).await;
    if drained.is_err() {
        // Let the session go, so the wake-up given back for a retry (here or on another
        // worker) can claim it at once instead of waiting out the lease.
        if let Err(error) = context
            .store
            .release_session(org_id, session_id, owner)
            .await
        {
            tracing::debug!(%error, %session_id, "lease not released after a failed drain; it expires");
        }
    }
    drained
}

/// Runs the session's turns in order while this worker holds its lease.
async fn drain_claimed(
    context: &WorkerContext,
    org_id: OrgId,
    session_id: SessionId,
    shutdown: &CancellationToken,
) -> Result<DrainResult, StoreError> {
    let owner = context.config.worker_id.as_str();
    loop {
        let Some(turn) = context.store.next_runnable_turn(org_id, session_id).await? else {
            match context
                .store
                .release_session_if_idle(org_id, session_id, owner)
                .await?
            {
                LeaseRelease::Released | LeaseRelease::Lost => return Ok(DrainResult::Drained),
                LeaseRelease::WorkRemains => continue,
            }
        };
        if shutdown.is_cancelled() {
            hand_off(context, &turn).await?;
            return Ok(DrainResult::Drained);
        }
        if !run_with_lease(context, &turn).await? {
            tracing::warn!(%session_id, "session lease lost mid-turn; another worker took over");
            return Ok(DrainResult::Drained);
        }
    }
}

/// Runs one turn while renewing the lease. False when the lease was lost, in which case
/// the turn's work is abandoned (its attempt is fenced out anyway).
async fn run_with_lease(context: &WorkerContext, turn: &RunnableTurn) -> Result<bool, StoreError> {
    tokio::select! {
        kept = run_turn(context, turn) => kept,
        lost = renew_until_lost(context, turn) => lost.map(|()| false),
    }
}

/// Renews the lease every third of its lifetime; returns when renewal says the lease is
/// gone, or when no renewal succeeded for a whole lease lifetime (the lease may have
/// expired and another worker may be running the turn).
async fn renew_until_lost(context: &WorkerContext, turn: &RunnableTurn) -> Result<(), StoreError> {
    let ttl = context.config.lease_ttl;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        let renewed = context
            .store
            .renew_session(turn.org_id, turn.session_id, &context.config.worker_id, ttl)
            .await;
        match renewed {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => return Ok(()),
            Err(error) if last_renewed.elapsed() >= ttl => {
                tracing::warn!(%error, session_id = %turn.session_id, "lease not renewed for a whole lifetime; giving the turn up");
                return Ok(());
            }
            // The lease may still be valid: retry at the next tick.
            Err(error) => {
                tracing::warn!(%error, session_id = %turn.session_id, "lease renewal failed")
            }
        }
    }
}

/// At shutdown: let go of the lease and wake another worker for the remaining turns.
async fn hand_off(context: &WorkerContext, next: &RunnableTurn) -> Result<(), StoreError> {
    context
        .store
        .release_session(next.org_id, next.session_id, &context.config.worker_id)
        .await?;
    let wakeup = TurnWakeup {
        turn_id: next.id.to_string(),
        org_id: next.org_id.to_string(),
        session_id: next.session_id.to_string(),
    };
    let message_id = format!("{}.{}", next.id, Uuid::new_v4());
    if let Err(error) = context
        .bus
        .publish_turn_wakeup(&wakeup, &message_id, next.trace_parent.as_deref())
        .await
    {
        tracing::warn!(%error, "hand-off wake-up not published; the sweeper will wake the session");
    }
    Ok(())
}
