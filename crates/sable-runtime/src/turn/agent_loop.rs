//! The agent loop of one turn: ask the model; run the tool calls it asks for,
//! concurrently, persisting each as it finishes; feed the results back; repeat until it
//! answers, the round limit is reached, or a call needs a person's approval (the turn is
//! parked, holding nothing).
//!
//! Every round is written to the store before its calls run, so a turn resumed after a
//! crash or an approval rebuilds its rounds from the store and continues with exactly
//! the calls still open.

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;
use sable_llm::{ChatMessage, ToolCall};
use sable_store::{
    NewApproval, NewToolCall, RunnableTurn, StoreError, ToolCallRecord, ToolCallResult,
};
use tracing::Instrument;

use super::{ToolFailure, Toolbox, TurnEnv};
use crate::AgentDefinition;

/// Identical calls (same tool, same arguments) allowed in one turn; asking for the same
/// call this many times ends the turn.
const MAX_IDENTICAL_CALLS: usize = 3;

/// One attempt of one turn, as the loop's steps need it.
pub(crate) struct Scope<'a> {
    pub context: &'a TurnEnv,
    pub turn: &'a RunnableTurn,
    pub attempt: i32,
    pub agent: &'a AgentDefinition,
    pub tools: Box<dyn Toolbox>,
}

/// The rounds of a turn so far, as the model must see them again.
#[derive(Default)]
pub(crate) struct Rounds {
    pub messages: Vec<ChatMessage>,
    pub count: i32,
    /// How often each (tool, arguments) was asked for.
    seen: HashMap<(String, String), usize>,
}

impl Rounds {
    /// Counts a call; true when it has now been asked for too often.
    fn note_call(&mut self, call: &ToolCall) -> bool {
        let key = (call.name.clone(), canonical_arguments(&call.arguments));
        let seen = self.seen.entry(key).or_default();
        *seen += 1;
        *seen >= MAX_IDENTICAL_CALLS
    }
}

/// What running (or resuming) a round came to.
pub(crate) enum RoundEnd {
    /// Every call has a result; ask the model again.
    Continue,
    /// A call waits for approval; the turn is parked in the store.
    /// Parked on an approval of this tool's call.
    Parked(String),
    /// The turn was taken over by another worker.
    Fenced,
    /// The same call was asked for too often; ends the turn.
    Repeated(String),
}

/// One call of a round, as recorded.
struct PendingCall {
    position: i32,
    call: ToolCall,
    /// Set when the call has a final result already.
    result: Option<(String, bool)>,
    approval: Option<String>,
    approval_comment: Option<String>,
    /// Asked for in this attempt; false for calls an earlier attempt recorded.
    fresh: bool,
}

/// Rebuilds the rounds an earlier attempt recorded and settles their open calls: a call
/// interrupted mid-run runs again only if its tool is idempotent; a decided approval
/// runs (approved) or answers the model (denied or expired).
pub(crate) async fn resume_rounds(
    scope: &Scope<'_>,
    rounds: &mut Rounds,
) -> Result<RoundEnd, StoreError> {
    let (context, turn) = (scope.context, scope.turn);
    let records = context.store.tool_calls(turn.org_id, turn.id).await?;
    let mut by_round: Vec<(i32, Option<String>, Vec<ToolCallRecord>)> = Vec::new();
    for record in records {
        match by_round.last_mut() {
            Some((round, _, calls)) if *round == record.round => calls.push(record),
            _ => by_round.push((record.round, record.round_text.clone(), vec![record])),
        }
    }
    for (round, text, records) in by_round {
        rounds.count = round;
        let calls = records
            .into_iter()
            .map(|record| PendingCall {
                position: record.position,
                call: ToolCall {
                    id: record.call_id,
                    name: record.tool,
                    arguments: record.arguments,
                },
                result: record
                    .result
                    .filter(|_| matches!(record.status.as_str(), "ok" | "error" | "denied"))
                    .map(|result| (result, record.status != "ok")),
                approval: record.approval_status,
                approval_comment: record.approval_comment,
                fresh: false,
            })
            .collect();
        match settle_round(scope, rounds, round, text.unwrap_or_default(), calls).await? {
            RoundEnd::Continue => {}
            end => return Ok(end),
        }
    }
    Ok(RoundEnd::Continue)
}

/// Records a new round the model asked for, then settles it.
pub(crate) async fn run_round(
    scope: &Scope<'_>,
    rounds: &mut Rounds,
    text: String,
    calls: Vec<ToolCall>,
) -> Result<RoundEnd, StoreError> {
    if let Some(repeated) = calls.iter().find(|call| rounds.note_call(call)) {
        return Ok(RoundEnd::Repeated(repeated.name.clone()));
    }
    let round = rounds.count + 1;
    let new_calls: Vec<NewToolCall> = calls
        .iter()
        .map(|call| NewToolCall {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
        })
        .collect();
    scope
        .context
        .store
        .begin_tool_round(scope.turn, scope.attempt, round, &text, &new_calls)
        .await?;
    rounds.count = round;
    let calls = calls
        .into_iter()
        .zip(0..)
        .map(|(call, position)| PendingCall {
            position,
            call,
            result: None,
            approval: None,
            approval_comment: None,
            fresh: true,
        })
        .collect();
    settle_round(scope, rounds, round, text, calls).await
}

/// What to do with one call of a round.
enum Disposition {
    Run,
    /// Wait for a person's approval.
    Park,
    /// It has its result (now or before).
    Settled,
}

/// Decides what to do with a call; settles it on the spot when its outcome is already
/// known (a denial, an expiry, or an interrupted call that must not be repeated).
async fn dispose(
    scope: &Scope<'_>,
    round: i32,
    pending: &mut PendingCall,
) -> Result<Disposition, StoreError> {
    if pending.result.is_some() {
        return Ok(Disposition::Settled);
    }
    let name = pending.call.name.as_str();
    let (status, message) = match pending.approval.as_deref() {
        Some("approved") => return Ok(Disposition::Run),
        Some("expired") => (
            "denied",
            format!("The call to '{name}' was not approved in time, so it did not run."),
        ),
        Some("denied") => (
            "denied",
            format!(
                "A person denied the call to '{name}', so it did not run.{}",
                pending
                    .approval_comment
                    .as_deref()
                    .map_or(String::new(), |comment| format!(
                        " Their comment: {comment}"
                    ))
            ),
        ),
        Some(_) => return Ok(Disposition::Park),
        None if needs_approval_now(scope, name).await? => return Ok(Disposition::Park),
        None if !pending.fresh && !scope.tools.is_idempotent(name) => (
            "error",
            format!(
                "The call to '{name}' was interrupted and is not repeated, because it may have taken effect."
            ),
        ),
        None => return Ok(Disposition::Run),
    };
    let code = if status == "denied" {
        "denied"
    } else {
        "interrupted"
    };
    let result = finished(
        &pending.call,
        (round, pending.position),
        status,
        &message,
        Some(code),
        Utc::now(),
        0,
    );
    scope
        .context
        .store
        .finish_tool_call(scope.turn, &result)
        .await?;
    pending.result = Some((message, true));
    Ok(Disposition::Settled)
}

/// Gives every call of the round a result, running the open ones concurrently, unless one
/// needs an approval nobody gave yet: then the others run and the turn parks on it.
async fn settle_round(
    scope: &Scope<'_>,
    rounds: &mut Rounds,
    round: i32,
    text: String,
    mut calls: Vec<PendingCall>,
) -> Result<RoundEnd, StoreError> {
    let context = scope.context;
    let mut to_run = Vec::new();
    let mut needs_approval = None;
    for (index, pending) in calls.iter_mut().enumerate() {
        match dispose(scope, round, pending).await? {
            Disposition::Run => to_run.push(index),
            Disposition::Park => {
                needs_approval.get_or_insert(index);
            }
            Disposition::Settled => {}
        }
    }
    let results = futures::future::join_all(to_run.iter().map(|&index| {
        let pending = &calls[index];
        execute(scope, round, pending.position, &pending.call)
    }))
    .await;
    for (index, result) in to_run.into_iter().zip(results) {
        calls[index].result = Some(result?);
    }
    if let Some(index) = needs_approval {
        let pending = &calls[index];
        let approval = NewApproval {
            round,
            position: pending.position,
            tool: pending.call.name.clone(),
            arguments: pending.call.arguments.clone(),
            expires_in: context.config.approval_ttl,
        };
        if !context
            .store
            .park_turn(scope.turn, scope.attempt, &approval)
            .await?
        {
            return Ok(RoundEnd::Fenced);
        }
        metrics::counter!("sable_approvals_requested_total").increment(1);
        tracing::info!(tool = %pending.call.name, round, "turn parked until a person approves a tool call");
        return Ok(RoundEnd::Parked(pending.call.name.clone()));
    }
    rounds.messages.push(ChatMessage::Assistant {
        content: text,
        tool_calls: calls.iter().map(|pending| pending.call.clone()).collect(),
    });
    for pending in calls {
        let (content, is_error) = pending.result.unwrap_or_default();
        rounds.messages.push(ChatMessage::Tool {
            tool_call_id: pending.call.id,
            content,
            is_error,
        });
    }
    Ok(RoundEnd::Continue)
}

/// True when a call to `name` must wait for a person: the agent says so, or the tool is
/// high-risk; unless someone already approved the tool for this session.
async fn needs_approval_now(scope: &Scope<'_>, name: &str) -> Result<bool, StoreError> {
    let high_risk = scope.tools.is_high_risk(name);
    if !high_risk
        && !scope
            .agent
            .approval_required
            .iter()
            .any(|tool| tool == name)
    {
        return Ok(false);
    }
    Ok(!scope
        .context
        .store
        .tool_approved_for_session(scope.turn, name)
        .await?)
}

/// Runs one call and records its result; the text is what the model reads.
async fn execute(
    scope: &Scope<'_>,
    round: i32,
    position: i32,
    call: &ToolCall,
) -> Result<(String, bool), StoreError> {
    let (context, tools) = (scope.context, &scope.tools);
    let started_at = Utc::now();
    let started = Instant::now();
    let span = sable_telemetry::genai::tool_span(&call.name, &call.id);
    // The round is recorded with this call `running`; its result is not yet.
    context.config.faults.reach("mid_tool");
    let outcome = if tools.offers(&call.name) {
        tools
            .call(&call.name, &call.arguments)
            .instrument(span.clone())
            .await
    } else {
        Err(ToolFailure::unknown(&call.name))
    };
    let elapsed = started.elapsed();
    let (status, content, code) = match outcome {
        Ok(text) => (
            "ok",
            truncate(text, scope.agent.max_tool_result_chars),
            None,
        ),
        Err(error) => (
            "error",
            format!("error ({}): {error}", error.code),
            Some(error.code),
        ),
    };
    span.record("sable.tool.outcome", code.unwrap_or("ok"));
    super::observe::record_tool_payloads(context, scope.turn, &span, &call.arguments, &content);
    // Label values are bounded by the registry: a name it does not know is `unknown`.
    let label = tools.metric_label(&call.name);
    sable_telemetry::record_tool_call(label, code.unwrap_or("ok"), elapsed);
    let result = finished(
        call,
        (round, position),
        status,
        &content,
        code,
        started_at,
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
    );
    context.store.finish_tool_call(scope.turn, &result).await?;
    Ok((content, status != "ok"))
}

fn finished(
    call: &ToolCall,
    (round, position): (i32, i32),
    status: &str,
    result: &str,
    code: Option<&str>,
    started_at: chrono::DateTime<Utc>,
    duration_ms: i64,
) -> ToolCallResult {
    ToolCallResult {
        round,
        position,
        tool: call.name.clone(),
        call_id: call.id.clone(),
        status: status.to_owned(),
        result: result.to_owned(),
        error_code: code.map(str::to_owned),
        started_at,
        duration_ms,
    }
}

/// Cuts a result to `max_chars`, saying so.
fn truncate(text: String, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text;
    }
    let kept: String = text.chars().take(max_chars).collect();
    format!(
        "{kept}\n[truncated: the result had {total} characters; only the first {max_chars} are shown]"
    )
}

/// The arguments in a form where key order and spacing do not matter.
fn canonical_arguments(arguments: &str) -> String {
    serde_json::from_str::<serde_json::Value>(arguments)
        .map_or_else(|_| arguments.trim().to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_results_are_cut_with_a_note() {
        let text = truncate("abcdef".repeat(100), 10);
        assert!(
            text.starts_with("abcdefabcd\n[truncated: the result had 600 characters"),
            "{text}"
        );
        assert_eq!(truncate("short".into(), 10), "short");
    }

    #[test]
    fn the_same_call_with_reordered_arguments_counts_as_repeated() {
        let mut rounds = Rounds::default();
        let call = |arguments: &str| ToolCall {
            id: "x".into(),
            name: "time".into(),
            arguments: arguments.into(),
        };
        assert!(!rounds.note_call(&call(r#"{"a":1,"b":2}"#)));
        assert!(!rounds.note_call(&call(r#"{ "b": 2, "a": 1 }"#)));
        assert!(rounds.note_call(&call(r#"{"a":1,"b":2}"#)));
    }
}
