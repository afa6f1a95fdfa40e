//! Running one turn: route to a model profile, build the model's context, stream the
//! answer as live events, compact the session once if it outgrew the window, record every
//! provider call, then end the turn, append the reply and queue its delivery in one
//! statement.
//!
//! The worker owns consumption and leases; this module owns what happens inside a turn.
//! It reaches the outside through `TurnEnv`: the store and the bus as they are, and the
//! model client and the agent's tools behind the traits of `ports`.

mod agent_loop;
mod observe;
mod ports;
#[cfg(test)]
mod tests;

pub use ports::{Capabilities, Models, ToolFailure, Toolbox};

use chrono::{DateTime, Utc};
use sable_llm::{CallAttempt, CallReport, ProviderErrorKind, TokenUsage};
use sable_proto::v1::turn_event::Kind;
use sable_proto::v1::{DeliveryWakeup, TextDelta, TurnEvent, TurnFinished, TurnParked};
use std::sync::Arc;
use std::time::Duration;

use sable_bus::Bus;
use sable_store::{
    BegunTurn, FinishTurn, HistoryEntry, ProviderCallRecord, RunnableTurn, SessionSummary, Store,
    StoreError, TurnEnded, TurnOutcome, TurnRoute, Usage,
};
use sable_telemetry::TraceContext;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{
    AgentDefinition, OrgConfigError, OrgConfigs, RouteDecision, SkillEntry, build_chat_request,
    build_summary_request, choose_profile, estimate_tokens, input_budget,
};
use agent_loop::{RoundEnd, Rounds, Scope, resume_rounds, run_round};

/// What a turn may use: shared by every turn a worker runs.
#[derive(Clone)]
pub struct TurnEnv {
    pub config: TurnSettings,
    pub store: Store,
    pub bus: Bus,
    pub models: Arc<dyn Models>,
    pub capabilities: Arc<dyn Capabilities>,
    /// Each org's agents and models over the deployment's (`models` answers orgs
    /// without models of their own).
    pub orgs: OrgConfigs,
}

/// How turns run.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// Recorded as lease owner and on each turn it runs.
    pub worker_id: String,
    /// An approval nobody answers within this long counts as a denial.
    pub approval_ttl: Duration,
    /// A turn started this many times without ending is failed instead of run again.
    pub max_turn_attempts: i32,
    /// Named places where fault-injection tests stop the process (disarmed in
    /// production).
    pub faults: sable_core::FaultPoints,
    /// Which prompts and replies may enter span attributes, per org.
    pub content_capture: sable_telemetry::ContentCapture,
    /// Label turn metrics with the org id (cardinality grows with the number of orgs).
    pub metrics_org_labels: bool,
}

/// What a turn produced, before it is committed.
struct Answer {
    outcome: TurnOutcome,
    usage: Option<Usage>,
    route: Option<TurnRoute>,
}

/// What became of the session's lease when a turn stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The turn ended and nothing else was queued: the lease was let go with it.
    Released,
    /// Still ours: more turns are queued, or the turn parked on an approval.
    Kept,
    /// Another worker took the turn over; the drain must stop.
    Lost,
}

/// What the attempt's provider calls cost and how they went, recorded with its ending.
#[derive(Debug, Default)]
pub(crate) struct Spend {
    usage: TokenUsage,
    calls: Vec<ProviderCallRecord>,
}

/// Runs a started turn to its end.
pub async fn run_turn(context: &TurnEnv, begun: &BegunTurn) -> Result<Lease, StoreError> {
    let (turn, attempt) = (&begun.turn, begun.attempt);
    let (span, trace) = observe::turn_span(turn, attempt);
    observe::turn_started(context, turn);
    let started = std::time::Instant::now();
    async {
        let mut spend = Spend::default();
        let step = if attempt > context.config.max_turn_attempts {
            Step::Finish(failed(failure(
                "too_many_attempts",
                format!("the turn was interrupted {} times", attempt - 1),
            )))
        } else {
            answer(context, begun, &trace, &mut spend).await?
        };
        let answer = match step {
            Step::Finish(answer) => answer,
            Step::Parked(tool) => {
                metrics::counter!("sable_turns_parked_total").increment(1);
                record_spent_calls(context, turn, &spend.calls).await;
                let event = TurnEvent {
                    turn_id: turn.id.to_string(),
                    session_id: turn.session_id.to_string(),
                    kind: Some(Kind::Parked(TurnParked { tool })),
                };
                context
                    .bus
                    .publish_event(
                        turn.org_id,
                        turn.session_id,
                        &event,
                        Some(&trace.to_string()),
                    )
                    .await;
                return Ok(Lease::Kept);
            }
            Step::Fenced => return Ok(Lease::Lost),
        };
        observe::record_output(context, turn, &answer.outcome);
        let status = if matches!(answer.outcome, TurnOutcome::Replied { .. }) {
            "done"
        } else {
            "failed"
        };
        let lease = finish(context, turn, attempt, answer, spend.calls, &trace).await?;
        if lease != Lease::Lost {
            observe::turn_finished(context, turn, status, started.elapsed());
        }
        Ok(lease)
    }
    .instrument(span)
    .await
}

/// Records provider calls of an attempt that will not end now (it parked). Best effort:
/// they describe the past, and failing the turn for them would run it again.
async fn record_spent_calls(context: &TurnEnv, turn: &RunnableTurn, calls: &[ProviderCallRecord]) {
    if let Err(error) = context.store.record_provider_calls(turn, calls).await {
        tracing::warn!(%error, "provider calls not recorded");
    }
}

fn failed(outcome: TurnOutcome) -> Answer {
    Answer {
        outcome,
        usage: None,
        route: None,
    }
}

/// Where the turn's agent loop stopped.
enum Step {
    /// The turn has its outcome; end it.
    Finish(Answer),
    /// Parked on an approval: the store holds the turn; nothing to end yet.
    Parked(String),
    /// Another worker took the turn over.
    Fenced,
}

/// Runs the agent loop. Provider failures become a failed outcome with an error reply;
/// only store failures are errors here.
async fn answer(
    context: &TurnEnv,
    begun: &BegunTurn,
    trace: &TraceContext,
    spend: &mut Spend,
) -> Result<Step, StoreError> {
    let turn = &begun.turn;
    let org = match context
        .orgs
        .at_version(turn.org_id, begun.config_version)
        .await
    {
        Ok(org) => org,
        Err(OrgConfigError::Store(error)) => return Err(error),
        Err(invalid) => {
            tracing::warn!(error = %invalid, "the org's configuration does not build");
            return Ok(Step::Finish(failed(failure(
                "org_config_invalid",
                invalid.to_string(),
            ))));
        }
    };
    // An org with models of its own runs its turns with them (its providers, its keys).
    let scoped;
    let context = match &org.models {
        Some(models) => {
            scoped = TurnEnv {
                models: models.clone(),
                ..context.clone()
            };
            &scoped
        }
        None => context,
    };
    let Some(agent) = org.agents.get(&turn.agent_id) else {
        return Ok(Step::Finish(failed(failure(
            "unknown_agent",
            format!("agent '{}' is not configured", turn.agent_id),
        ))));
    };
    let (deltas, forwarder) = forward_deltas(context, turn, trace);
    let mut on_delta = |text: &str| {
        let _ = deltas.send(text.to_owned());
        context.config.faults.reach("mid_stream");
    };
    let mut route: Option<RouteDecision> = None;
    let step = agent_loop(
        context,
        begun,
        &org,
        &agent,
        spend,
        &mut route,
        &mut on_delta,
    )
    .await;
    drop(deltas);
    let _ = forwarder.await;
    let outcome = match step? {
        Ok(outcome) => outcome,
        Err(step) => return Ok(step),
    };
    let route = route.map(|decision| TurnRoute {
        profile: decision.profile,
        reason: decision.reason,
    });
    let usage = Some(spend.usage)
        .filter(|usage| *usage != TokenUsage::default())
        .map(to_store_usage);
    Ok(Step::Finish(Answer {
        outcome,
        usage,
        route,
    }))
}

/// Asks the model until it answers, running the tool rounds it asks for; compacts the
/// session once when the request would not fit the model's window (or the provider says
/// it did not). `Err(step)` when the loop parked or was fenced out.
async fn agent_loop(
    context: &TurnEnv,
    begun: &BegunTurn,
    org: &crate::OrgConfig,
    agent: &AgentDefinition,
    spend: &mut Spend,
    route: &mut Option<RouteDecision>,
    on_delta: &mut (dyn FnMut(&str) + Send),
) -> Result<Result<TurnOutcome, Step>, StoreError> {
    let (turn, attempt) = (&begun.turn, begun.attempt);
    let scope = Scope {
        context,
        turn,
        attempt,
        agent,
        tools: context.capabilities.for_turn(turn, agent, org).await,
    };
    let skills = scope.tools.skills().to_vec();
    let mut rounds = Rounds::default();
    let mut compacted = false;
    // A first attempt has no earlier rounds to resume.
    let mut next = if attempt > 1 {
        resume_rounds(&scope, &mut rounds).await?
    } else {
        RoundEnd::Continue
    };
    // The session's summary and history, read with the turn's start and again only after
    // a compaction changed them; tool rounds add to the request, not to the store's view.
    // The turn began with as much history as the deployment's agents read; an org's
    // agent that reads more reads it again.
    let mut view = if agent.history_messages > context.orgs.base().agents.max_history_messages() {
        SessionView::load(context, turn, agent).await?
    } else {
        SessionView::begun(begun, agent)
    };
    loop {
        match next {
            RoundEnd::Continue => {}
            RoundEnd::Parked(tool) => return Ok(Err(Step::Parked(tool))),
            RoundEnd::Fenced => return Ok(Err(Step::Fenced)),
            RoundEnd::Repeated(tool) => return Ok(Ok(repeated_call(&tool))),
        }
        let decision = route.get_or_insert_with(|| {
            let message = view
                .history
                .last()
                .map_or("", |entry| entry.content.as_str());
            observe::record_input(context, turn, message);
            choose_profile(agent, message)
        });
        let profile = decision.profile.clone();
        let mut request = view.request(agent, &skills);
        request.messages.extend(rounds.messages.iter().cloned());
        request.tools = scope.tools.specs().to_vec();
        if !compacted && over_budget(context, &profile, agent, &request) {
            compacted = true;
            if view.compact(&scope, &profile, spend).await? {
                continue;
            }
        }
        context.config.faults.reach("before_provider_call");
        let report = context.models.complete(&profile, &request, on_delta).await;
        record_calls(attempt, "answer", &report, spend);
        let completion = match report.result {
            Err(error) if error.kind == ProviderErrorKind::ContextOverflow && !compacted => {
                compacted = true;
                if view.compact(&scope, &profile, spend).await? {
                    continue;
                }
                return Ok(Ok(provider_failure(&error)));
            }
            Err(error) => return Ok(Ok(provider_failure(&error))),
            Ok(completion) => completion,
        };
        if completion.tool_calls.is_empty() {
            return Ok(Ok(TurnOutcome::Replied {
                text: completion.text,
            }));
        }
        if rounds.count >= i32::try_from(agent.max_tool_rounds).unwrap_or(i32::MAX) {
            return Ok(Ok(round_limit_reached(agent.max_tool_rounds)));
        }
        next = run_round(&scope, &mut rounds, completion.text, completion.tool_calls).await?;
    }
}

/// The model asked for the same call too often: ends the turn, saying so plainly.
fn repeated_call(tool: &str) -> TurnOutcome {
    stopped(
        "tool_call_repeated",
        format!("the model asked for the same '{tool}' call 3 times"),
        "I stopped because I kept repeating the same step without getting closer to an answer. Could you rephrase or add detail?",
    )
}

/// The model was still calling tools after the agent's round limit.
fn round_limit_reached(max_rounds: u32) -> TurnOutcome {
    stopped(
        "tool_round_limit",
        format!("the model was still calling tools after {max_rounds} rounds"),
        &format!(
            "I stopped after {max_rounds} rounds of tool calls without reaching an answer. Could you narrow the question?"
        ),
    )
}

/// What the store holds of the session for the model: its summary and newest messages.
struct SessionView {
    summary: SessionSummary,
    history: Vec<HistoryEntry>,
}

impl SessionView {
    /// The view read with the turn's start, cut to this agent's history length.
    fn begun(begun: &BegunTurn, agent: &AgentDefinition) -> Self {
        let keep = usize::try_from(agent.history_messages).unwrap_or(usize::MAX);
        let skip = begun.history.len().saturating_sub(keep);
        Self {
            summary: begun.summary.clone(),
            history: begun.history[skip..].to_vec(),
        }
    }

    async fn load(
        context: &TurnEnv,
        turn: &RunnableTurn,
        agent: &AgentDefinition,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            summary: context.store.session_summary(turn).await?,
            history: context
                .store
                .history(turn, i64::from(agent.history_messages))
                .await?,
        })
    }

    /// The model's request before this turn's tool rounds: prompt, skills, summary, history.
    fn request(&self, agent: &AgentDefinition, skills: &[SkillEntry]) -> sable_llm::ChatRequest {
        build_chat_request(
            agent,
            skills,
            self.summary.text.as_deref(),
            self.history
                .iter()
                .map(|entry| (entry.role, entry.content.as_str())),
        )
    }

    /// Folds the session's earlier turns into its summary, then reads the view again.
    /// False when there was nothing to fold or the summary call failed.
    async fn compact(
        &mut self,
        scope: &Scope<'_>,
        profile: &str,
        spend: &mut Spend,
    ) -> Result<bool, StoreError> {
        let (context, turn, agent) = (scope.context, scope.turn, scope.agent);
        if !compact(
            context,
            turn,
            scope.attempt,
            agent,
            profile,
            &self.summary,
            spend,
        )
        .await?
        {
            return Ok(false);
        }
        *self = Self::load(context, turn, agent).await?;
        Ok(true)
    }
}

/// True when the request is estimated to exceed the model's window less the answer's
/// reserve.
fn over_budget(
    context: &TurnEnv,
    profile: &str,
    agent: &AgentDefinition,
    request: &sable_llm::ChatRequest,
) -> bool {
    context.models.profile(profile).is_some_and(|spec| {
        estimate_tokens(&spec.model, request)
            > input_budget(spec.context_window, agent.max_output_tokens)
    })
}

fn provider_failure(error: &sable_llm::ProviderError) -> TurnOutcome {
    tracing::warn!(code = error.code(), error = %error, "provider call failed");
    failure(error.code(), error.message.clone())
}

/// A turn the agent loop ended on purpose, with a reply saying why in plain words.
fn stopped(code: &str, message: String, reply: &str) -> TurnOutcome {
    TurnOutcome::Failed {
        code: code.to_owned(),
        message,
        reply_text: reply.to_owned(),
    }
}

/// Summarises the session's older messages into its stored summary (messages are kept)
/// so the next call fits the window. False when there was nothing to fold or the summary
/// call failed.
async fn compact(
    context: &TurnEnv,
    turn: &RunnableTurn,
    attempt: i32,
    agent: &AgentDefinition,
    profile: &str,
    summary: &SessionSummary,
    spend: &mut Spend,
) -> Result<bool, StoreError> {
    let through_seq = turn.seq - 1;
    if through_seq <= summary.through_seq {
        return Ok(false);
    }
    let older = context
        .store
        .messages_between(turn, summary.through_seq, through_seq)
        .await?;
    // About four characters a token: keep the summary request within half the window.
    let window = context
        .models
        .profile(profile)
        .map_or(8_000, |spec| spec.context_window);
    let max_chars = usize::try_from(window)
        .unwrap_or(usize::MAX)
        .saturating_mul(2);
    let request = build_summary_request(
        summary.text.as_deref(),
        older
            .iter()
            .map(|entry| (entry.role, entry.content.as_str())),
        max_chars,
    );
    let report = context
        .models
        .complete(profile, &request, &mut |_| {})
        .await;
    record_calls(attempt, "compaction", &report, spend);
    let Ok(completion) = report.result else {
        return Ok(false);
    };
    // The summary takes at most a third of the input budget (three bytes a token, as
    // `estimate_tokens` counts), leaving the rest for the prompt and the newest messages.
    let summary_chars = input_budget(window, agent.max_output_tokens);
    let summary: String = completion.text.chars().take(summary_chars).collect();
    context
        .store
        .save_summary(turn, &summary, through_seq)
        .await?;
    tracing::info!(agent = %agent.id, through_seq, "session compacted to fit the model's window");
    Ok(true)
}

/// Adds a provider exchange's calls to the attempt's spend (written when the turn ends).
fn record_calls(attempt: i32, purpose: &str, report: &CallReport, spend: &mut Spend) {
    for call in &report.attempts {
        spend.usage.add(call.usage.unwrap_or_default());
        observe_call(call);
        spend.calls.push(call_record(attempt, purpose, call));
    }
}

/// Provider metrics: calls by outcome, latency, time to first token, tokens. Labels are
/// the provider kind and a fixed set of outcome codes.
fn observe_call(call: &CallAttempt) {
    let kind = call.provider_kind;
    metrics::counter!("sable_provider_calls_total", "provider_kind" => kind, "outcome" => call.outcome.clone()).increment(1);
    #[allow(clippy::cast_precision_loss)]
    let seconds = |millis: u64| millis as f64 / 1000.0;
    metrics::histogram!("sable_provider_call_duration_seconds", "provider_kind" => kind)
        .record(seconds(call.duration_ms));
    if let Some(first_token) = call.time_to_first_token_ms {
        metrics::histogram!("sable_provider_time_to_first_token_seconds", "provider_kind" => kind)
            .record(seconds(first_token));
    }
    if let Some(usage) = call.usage {
        for (direction, tokens) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_input_tokens),
        ] {
            metrics::counter!("sable_provider_tokens_total", "provider_kind" => kind, "direction" => direction).increment(tokens);
        }
    }
}

fn call_record(attempt: i32, purpose: &str, call: &CallAttempt) -> ProviderCallRecord {
    let tokens = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let millis = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    ProviderCallRecord {
        turn_attempt: attempt,
        purpose: purpose.to_owned(),
        profile: call.profile.clone(),
        provider: call.provider.clone(),
        provider_kind: call.provider_kind.to_owned(),
        model: call.model.clone(),
        outcome: call.outcome.clone(),
        error_message: call.error_message.clone(),
        retry_number: i32::try_from(call.retry_number).unwrap_or(i32::MAX),
        failover_reason: call.failover_reason.clone(),
        started_at: DateTime::<Utc>::from_timestamp_millis(millis(call.started_at_unix_ms))
            .unwrap_or_default(),
        time_to_first_token_ms: call.time_to_first_token_ms.map(millis),
        duration_ms: millis(call.duration_ms),
        input_tokens: call.usage.map(|usage| tokens(usage.input_tokens)),
        output_tokens: call.usage.map(|usage| tokens(usage.output_tokens)),
        cached_input_tokens: call.usage.map(|usage| tokens(usage.cached_input_tokens)),
    }
}

fn to_store_usage(usage: TokenUsage) -> Usage {
    let tokens = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    Usage {
        input_tokens: tokens(usage.input_tokens),
        output_tokens: tokens(usage.output_tokens),
        cached_input_tokens: tokens(usage.cached_input_tokens),
    }
}

/// Publishes streamed text as live events, in order, from a task of its own so the
/// provider stream never waits on NATS; pieces that queued up meanwhile go out together.
fn forward_deltas(
    context: &TurnEnv,
    turn: &RunnableTurn,
    trace: &TraceContext,
) -> (mpsc::UnboundedSender<String>, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
    let bus = context.bus.clone();
    let (org_id, session_id, turn_id) = (turn.org_id, turn.session_id, turn.id.to_string());
    let traceparent = trace.to_string();
    let task = tokio::spawn(async move {
        while let Some(mut text) = receiver.recv().await {
            // Text that arrived while the last event was going out leaves as one event.
            while let Ok(more) = receiver.try_recv() {
                text.push_str(&more);
            }
            let event = TurnEvent {
                turn_id: turn_id.clone(),
                session_id: session_id.to_string(),
                kind: Some(Kind::Delta(TextDelta { text })),
            };
            bus.publish_event(org_id, session_id, &event, Some(&traceparent))
                .await;
        }
    });
    (sender, task)
}

fn failure(code: &str, message: String) -> TurnOutcome {
    TurnOutcome::Failed {
        code: code.to_owned(),
        reply_text: format!("Sorry, I could not answer this message ({code}). Please try again."),
        message,
    }
}

/// Commits the outcome (with the attempt's provider calls, letting the lease go when
/// nothing else is queued), then announces it: a live `finished` event for waiting
/// clients and, for replies a channel must push, a delivery wake-up for the dispatcher.
async fn finish(
    context: &TurnEnv,
    turn: &RunnableTurn,
    attempt: i32,
    answer: Answer,
    provider_calls: Vec<ProviderCallRecord>,
    trace: &TraceContext,
) -> Result<Lease, StoreError> {
    let finished = finished_event(&answer.outcome);
    let finish = FinishTurn {
        turn,
        attempt,
        outcome: answer.outcome,
        usage: answer.usage,
        route: answer.route,
        provider_calls,
        lease_owner: Some(&context.config.worker_id),
    };
    let ending = finish_with_retries(context, finish);
    let ended = if turn.channel == sable_core::Channel::Api.as_str() {
        // API callers read their reply: the commit that ends the turn is its delivery.
        let span = tracing::info_span!(
            "deliver",
            otel.name = "deliver reply",
            sable.delivery.by = "commit"
        );
        ending.instrument(span).await?
    } else {
        ending.await?
    };
    let Some(ended) = ended else {
        tracing::warn!("turn was taken over by another worker; this attempt's result is discarded");
        return Ok(Lease::Lost);
    };
    context.config.faults.reach("after_reply_persisted");
    let traceparent = trace.to_string();
    let status = finished.status.clone();
    let event = TurnEvent {
        turn_id: turn.id.to_string(),
        session_id: turn.session_id.to_string(),
        kind: Some(Kind::Finished(finished)),
    };
    context
        .bus
        .publish_event(turn.org_id, turn.session_id, &event, Some(&traceparent))
        .await;
    if !ended.delivered {
        let wakeup = DeliveryWakeup {
            delivery_id: ended.delivery_id.to_string(),
            org_id: turn.org_id.to_string(),
            channel: turn.channel.clone(),
            session_id: turn.session_id.to_string(),
        };
        if let Err(error) = context
            .bus
            .publish_delivery_wakeup(&wakeup, &wakeup.delivery_id, Some(&traceparent))
            .await
        {
            tracing::warn!(%error, "delivery wake-up not published; the sweeper will retry");
        }
    }
    tracing::info!(%status, "turn finished");
    Ok(if ended.lease_released {
        Lease::Released
    } else {
        Lease::Kept
    })
}

/// Ends the turn, retrying a failing store a few times: giving up would run the turn
/// again and stream a second answer to a user who already saw the first.
async fn finish_with_retries(
    context: &TurnEnv,
    finish: FinishTurn<'_>,
) -> Result<Option<TurnEnded>, StoreError> {
    let mut delay = std::time::Duration::from_millis(100);
    for _ in 0..5 {
        match context.store.finish_turn(finish.clone()).await {
            Err(error) if error.is_unavailable() => {
                tracing::warn!(%error, "ending the turn failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            result => return result,
        }
    }
    context.store.finish_turn(finish).await
}

fn finished_event(outcome: &TurnOutcome) -> TurnFinished {
    match outcome {
        TurnOutcome::Replied { text } => TurnFinished {
            status: "done".into(),
            reply_text: text.replace('\0', ""),
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
