//! Draining one session: claim its lease, run its unfinished turns in sequence order,
//! renew the lease while a turn runs, and let go only when nothing is left.

use sable_core::{OrgId, SessionId};
use sable_proto::v1::TurnWakeup;
use sable_store::{BegunTurn, LeaseRelease, NextTurn, RunnableTurn, StoreError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::WorkerContext;
use sable_runtime::turn::{Lease, run_turn};

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
    let drained = drain(context, org_id, session_id, shutdown).await;
    if drained.is_err() {
        let_session_go(context, org_id, session_id).await;
    }
    drained
}

/// Lets the session's lease go after its drain failed or panicked, so the wake-up given
/// back for a retry (here or on another worker) can claim it at once instead of waiting
/// out the lease.
pub(crate) async fn let_session_go(context: &WorkerContext, org_id: OrgId, session_id: SessionId) {
    let owner = context.config.worker_id.as_str();
    if let Err(error) = context
        .store
        .release_session(org_id, session_id, owner)
        .await
    {
        tracing::debug!(%error, %session_id, "lease not released after a failed drain; it expires");
    }
}

/// Runs the session's turns in order while this worker holds its lease. Each turn costs
/// two statements: one claims the lease and starts the turn (with its history), one ends
/// it and lets the lease go when nothing else was queued.
async fn drain(
    context: &WorkerContext,
    org_id: OrgId,
    session_id: SessionId,
    shutdown: &CancellationToken,
) -> Result<DrainResult, StoreError> {
    let owner = context.config.worker_id.as_str();
    let history_limit = i64::from(context.agents.max_history_messages());
    let mut holding = false;
    loop {
        if shutdown.is_cancelled() {
            hand_off(context, org_id, session_id, holding).await?;
            return Ok(DrainResult::Drained);
        }
        let next = context
            .store
            .begin_next_turn(
                org_id,
                session_id,
                owner,
                context.config.lease_ttl,
                history_limit,
            )
            .await?;
        match next {
            NextTurn::Begun(begun) => {
                holding = true;
                match run_with_lease(context, &begun).await? {
                    Lease::Released => return Ok(DrainResult::Drained),
                    Lease::Kept => {}
                    Lease::Lost => {
                        tracing::warn!(%session_id, "session lease lost mid-turn; another worker took over");
                        return Ok(DrainResult::Drained);
                    }
                }
            }
            NextTurn::NotClaimed if !holding => return Ok(DrainResult::HeldElsewhere),
            // Nothing runnable while the lease is ours: let go unless a turn just arrived.
            NextTurn::NotClaimed | NextTurn::LeaseWithoutTurn => {
                match context
                    .store
                    .release_session_if_idle(org_id, session_id, owner)
                    .await?
                {
                    LeaseRelease::Released | LeaseRelease::Lost => {
                        return Ok(DrainResult::Drained);
                    }
                    LeaseRelease::WorkRemains => holding = true,
                }
            }
        }
    }
}

/// Runs one turn while renewing the lease. When the lease is lost the turn's work is
/// abandoned (its attempt is fenced out anyway).
async fn run_with_lease(context: &WorkerContext, begun: &BegunTurn) -> Result<Lease, StoreError> {
    tokio::select! {
        lease = run_turn(&context.turns, begun) => lease,
        lost = renew_until_lost(context, &begun.turn) => lost.map(|()| Lease::Lost),
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

/// At shutdown: let go of the lease (when held) and wake another worker for the
/// session's remaining turns.
async fn hand_off(
    context: &WorkerContext,
    org_id: OrgId,
    session_id: SessionId,
    holding: bool,
) -> Result<(), StoreError> {
    if holding {
        context
            .store
            .release_session(org_id, session_id, &context.config.worker_id)
            .await?;
    }
    let Some(next) = context.store.next_runnable_turn(org_id, session_id).await? else {
        return Ok(());
    };
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
