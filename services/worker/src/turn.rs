//! Running one turn: build the model's context, stream the provider's answer as live
//! events, then end the turn, append the reply and queue its delivery in one transaction.

use sable_proto::v1::turn_event::Kind;
use sable_proto::v1::{DeliveryWakeup, TextDelta, TurnEvent, TurnFinished};
use sable_runtime::build_chat_request;
use sable_store::{FinishTurn, RunnableTurn, StoreError, TurnOutcome, TurnStart, Usage};
use sable_telemetry::TraceContext;
use tracing::Instrument;

use crate::WorkerContext;

/// A turn that has been started this many times without ending is failed instead of being
/// run again: something about it breaks every worker that tries.
const MAX_ATTEMPTS: i32 = 5;

/// Runs the turn to its end. True while this worker still holds the session's lease;
/// false when it lost it (the drain must stop). An already-ended turn is a no-op.
pub(crate) async fn run_turn(
    context: &WorkerContext,
    turn: &RunnableTurn,
) -> Result<bool, StoreError> {
    let attempt = match context
        .store
        .start_turn(turn, &context.config.worker_id)
        .await?
    {
        TurnStart::Started { attempt } => attempt,
        TurnStart::AlreadyEnded => return Ok(true),
        TurnStart::LeaseLost => return Ok(false),
    };
    let trace = turn
        .trace_parent
        .as_deref()
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::new_root)
        .child();
    let span = tracing::info_span!(
        "turn",
        turn_id = %turn.id,
        session_id = %turn.session_id,
        org_id = %turn.org_id,
        seq = turn.seq,
        attempt,
        trace_id = %trace.trace_id(),
    );
    async {
        let outcome = if attempt > MAX_ATTEMPTS {
            failure(
                "too_many_attempts",
                format!("the turn was interrupted {} times", attempt - 1),
            )
        } else {
            answer(context, turn, &trace).await?
        };
        finish(context, turn, attempt, outcome, &trace).await
    }
    .instrument(span)
    .await
}

/// Asks the provider. Provider failures become a failed outcome with an error reply;
/// only store failures are errors here.
async fn answer(
    context: &WorkerContext,
    turn: &RunnableTurn,
    trace: &TraceContext,
) -> Result<TurnOutcome, StoreError> {
    let Some(agent) = context.agents.get(&turn.agent_id) else {
        return Ok(failure(
            "unknown_agent",
            format!("agent '{}' is not configured", turn.agent_id),
        ));
    };
    let history = context
        .store
        .history(turn, i64::from(agent.history_messages))
        .await?;
    let request = build_chat_request(
        &agent,
        history
            .iter()
            .map(|entry| (entry.role, entry.content.as_str())),
    );
    let (deltas, mut delta_receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    let call = async move {
        let mut on_delta = |text: &str| {
            let _ = deltas.send(text.to_owned());
        };
        context.provider.stream_chat(&request, &mut on_delta).await
    };
    let traceparent = trace.to_string();
    let forward = async {
        while let Some(text) = delta_receiver.recv().await {
            let event = TurnEvent {
                turn_id: turn.id.to_string(),
                session_id: turn.session_id.to_string(),
                kind: Some(Kind::Delta(TextDelta { text })),
            };
            context
                .bus
                .publish_event(turn.org_id, turn.session_id, &event, Some(&traceparent))
                .await;
        }
    };
    let (result, ()) = tokio::join!(call, forward);
    Ok(match result {
        Ok(completion) => TurnOutcome::Replied {
            text: completion.text,
            usage: completion.usage.map(|usage| Usage {
                input_tokens: i64::try_from(usage.input_tokens).unwrap_or(i64::MAX),
                output_tokens: i64::try_from(usage.output_tokens).unwrap_or(i64::MAX),
            }),
        },
        Err(error) => {
            tracing::warn!(code = error.code(), error = %error, partial_output = error.partial_output, "provider call failed");
            failure(error.code(), error.message)
        }
    })
}

fn failure(code: &str, message: String) -> TurnOutcome {
    TurnOutcome::Failed {
        code: code.to_owned(),
        reply_text: format!("Sorry, I could not answer this message ({code}). Please try again."),
        message,
    }
}

/// Commits the outcome, then announces it: a live `finished` event for waiting clients
/// and a delivery wake-up for the dispatcher.
async fn finish(
    context: &WorkerContext,
    turn: &RunnableTurn,
    attempt: i32,
    outcome: TurnOutcome,
    trace: &TraceContext,
) -> Result<bool, StoreError> {
    let finished = finished_event(&outcome);
    let Some(delivery_id) = context
        .store
        .finish_turn(FinishTurn {
            turn,
            attempt,
            outcome,
        })
        .await?
    else {
        tracing::warn!("turn was taken over by another worker; this attempt's result is discarded");
        return Ok(false);
    };
    let traceparent = trace.to_string();
    let event = TurnEvent {
        turn_id: turn.id.to_string(),
        session_id: turn.session_id.to_string(),
        kind: Some(Kind::Finished(finished)),
    };
    context
        .bus
        .publish_event(turn.org_id, turn.session_id, &event, Some(&traceparent))
        .await;
    let wakeup = DeliveryWakeup {
        delivery_id: delivery_id.to_string(),
        org_id: turn.org_id.to_string(),
        channel: turn.channel.clone(),
    };
    if let Err(error) = context
        .bus
        .publish_delivery_wakeup(&wakeup, &wakeup.delivery_id, Some(&traceparent))
        .await
    {
        tracing::warn!(%error, "delivery wake-up not published; the sweeper will retry");
    }
    tracing::info!(status = %finished_status(&event), "turn finished");
    Ok(true)
}

fn finished_event(outcome: &TurnOutcome) -> TurnFinished {
    match outcome {
        TurnOutcome::Replied { text, .. } => TurnFinished {
            status: "done".into(),
            reply_text: text.clone(),
            ..Default::default()
        },
        TurnOutcome::Failed {
            code,
            message,
            reply_text,
        } => TurnFinished {
            status: "failed".into(),
            reply_text: reply_text.clone(),
            error_code: code.clone(),
            error_message: message.clone(),
        },
    }
}

fn finished_status(event: &TurnEvent) -> &str {
    match &event.kind {
        Some(Kind::Finished(finished)) => &finished.status,
        _ => "",
    }
}
