//! Waiting for a turn to end: live events from core NATS, and Postgres every poll
//! interval only while the subscription cannot be trusted (it failed, or the bus was
//! disconnected since it began, so an event may have been missed); otherwise once at the
//! start when the turn may have ended already, and every fifth interval as a backstop.

use sable_bus::EventSubscription;
use sable_core::{OrgId, TurnStatus};
use sable_proto::v1::turn_event::Kind;
use sable_store::{AcceptedTurn, TurnRecord};

use crate::{ApiError, AppState};

/// With a trusted subscription, Postgres is read only every this many poll intervals.
const TRUSTED_POLL_EVERY: u32 = 5;

/// How a turn ended.
#[derive(Debug, Clone)]
pub(crate) struct FinishedTurn {
    pub status: String,
    pub reply_text: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// The result of waiting.
#[derive(Debug, Clone)]
pub(crate) enum WaitOutcome {
    Finished(FinishedTurn),
    /// The wait timed out; the turn goes on and can be read later.
    StillRunning(TurnStatus),
    /// This gateway is shutting down; the turn goes on and can be read from any other.
    Interrupted(TurnStatus),
}

/// Waits until the turn ends or the configured wait timeout passes, calling `on_delta`
/// with each piece of streamed text.
pub(crate) async fn wait_for_turn(
    state: &AppState,
    org_id: OrgId,
    accepted: &AcceptedTurn,
    mut subscription: Option<EventSubscription>,
    mut on_delta: impl FnMut(String),
) -> Result<WaitOutcome, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.wait_timeout;
    let mut poll = tokio::time::interval(state.config.wait_poll_interval);
    let turn_id = accepted.turn_id.to_string();
    let mut last_status = accepted.status;
    // One look right after subscribing when the turn may have ended before the
    // subscription began: it is an earlier request's turn, or a worker draining the
    // session may reach it before this request's wake-up does.
    let mut first_look = !accepted.created || accepted.behind_others;
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            event = next_event(&mut subscription) => match event {
                Some(event) if event.turn_id == turn_id => match event.kind {
                    Some(Kind::Delta(delta)) => on_delta(delta.text),
                    Some(Kind::Parked(_)) => return Ok(WaitOutcome::StillRunning(TurnStatus::WaitingApproval)),
                    Some(Kind::Finished(finished)) => return Ok(WaitOutcome::Finished(FinishedTurn {
                        status: finished.status,
                        reply_text: finished.reply_text,
                        error_code: Some(finished.error_code).filter(|code| !code.is_empty()),
                        error_message: Some(finished.error_message).filter(|message| !message.is_empty()),
                    })),
                    None => {}
                },
                Some(_) => {}
                None => subscription = None,
            },
            _ = poll.tick() => {
                ticks += 1;
                let trusted = subscription.as_ref().is_some_and(EventSubscription::is_healthy);
                // Even a trusted subscription misses the event of a worker that died
                // between its commit and its publish: look now and then regardless.
                let backstop = ticks.is_multiple_of(TRUSTED_POLL_EVERY);
                if trusted && !std::mem::take(&mut first_look) && !backstop {
                    continue;
                }
                match state.store.turn(org_id, accepted.turn_id).await {
                Ok(turn) if turn.status.is_final() => return Ok(WaitOutcome::Finished(finished_from_record(turn))),
                // Parked until a person decides: waiting longer would only time out.
                Ok(turn) if turn.status == TurnStatus::WaitingApproval => return Ok(WaitOutcome::StillRunning(turn.status)),
                Ok(turn) => last_status = turn.status,
                // The message is accepted already: a failed poll must not turn into an
                // error the client would retry (making a second turn). Keep waiting.
                Err(error) => tracing::debug!(%error, "turn poll failed; still waiting"),
                }
            },
            () = tokio::time::sleep_until(deadline) => return Ok(WaitOutcome::StillRunning(last_status)),
            () = state.shutdown.cancelled() => return Ok(WaitOutcome::Interrupted(last_status)),
        }
    }
}

async fn next_event(
    subscription: &mut Option<EventSubscription>,
) -> Option<sable_proto::v1::TurnEvent> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

fn finished_from_record(turn: TurnRecord) -> FinishedTurn {
    FinishedTurn {
        status: turn.status.to_string(),
        reply_text: turn.reply_text.unwrap_or_default(),
        error_code: turn.error_code,
        error_message: turn.error_message,
    }
}
