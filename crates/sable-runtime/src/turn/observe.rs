//! How a turn shows up in traces and metrics: its `turn` span (a child of the request
//! that queued it, labelled for Langfuse), the content the capture policy lets into it,
//! and the turn counters and histograms (labelled by org only when the deployment opts
//! in).

use chrono::Utc;
use sable_store::{RunnableTurn, TurnOutcome};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::{self, ContentRole, TurnLabels};

use super::TurnEnv;

/// Opens the turn's span under the trace its message started, and returns the trace
/// context to pass on (live events, the delivery wake-up).
pub(crate) fn turn_span(turn: &RunnableTurn, attempt: i32) -> (tracing::Span, TraceContext) {
    let labels = TurnLabels {
        org_id: turn.org_id.to_string(),
        session_id: turn.session_id.to_string(),
        user_id: turn.user_id.clone(),
        trace_name: turn.agent_id.clone(),
        tags: vec![format!("channel:{}", turn.channel)],
    };
    let span = genai::turn_span(&labels, &turn.id.to_string(), turn.seq, attempt);
    let parent = turn
        .trace_parent
        .as_deref()
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::new_root);
    genai::set_parent(&span, &parent, &labels);
    let trace = genai::trace_context_of(&span).unwrap_or_else(|| parent.child());
    span.record("trace_id", trace.trace_id());
    (span, trace)
}

/// Counts the attempt and records how long the turn waited since it was accepted.
pub(crate) fn turn_started(context: &TurnEnv, turn: &RunnableTurn) {
    let labels = org_label(context, turn);
    metrics::counter!("sable_turns_started_total", labels.clone()).increment(1);
    let waited = (Utc::now() - turn.created_at).to_std().unwrap_or_default();
    metrics::histogram!("sable_turn_queue_wait_seconds", labels).record(waited.as_secs_f64());
}

/// Counts the ended turn by status (`done`, `failed`) with the attempt's duration.
pub(crate) fn turn_finished(
    context: &TurnEnv,
    turn: &RunnableTurn,
    status: &'static str,
    elapsed: std::time::Duration,
) {
    let mut labels = org_label(context, turn);
    metrics::histogram!("sable_turn_duration_seconds", labels.clone())
        .record(elapsed.as_secs_f64());
    labels.push(metrics::Label::new("status", status));
    metrics::counter!("sable_turns_finished_total", labels).increment(1);
}

fn org_label(context: &TurnEnv, turn: &RunnableTurn) -> Vec<metrics::Label> {
    if context.config.metrics_org_labels {
        vec![metrics::Label::new("org", turn.org_id.to_string())]
    } else {
        Vec::new()
    }
}

/// The user's message as the turn's input, if the org's capture policy allows it.
pub(crate) fn record_input(context: &TurnEnv, turn: &RunnableTurn, message: &str) {
    record(context, turn, ContentRole::Input, message);
}

/// The reply (or the error reply) as the turn's output, if the policy allows it.
pub(crate) fn record_output(context: &TurnEnv, turn: &RunnableTurn, outcome: &TurnOutcome) {
    let text = match outcome {
        TurnOutcome::Replied { text } => text,
        TurnOutcome::Failed { reply_text, .. } => reply_text,
    };
    record(context, turn, ContentRole::Output, text);
}

/// A tool call's arguments and result on its `tool` span, if the policy allows it (never
/// at trace level: the turn's input and output stay the user's message and the reply).
pub(crate) fn record_tool_payloads(
    context: &TurnEnv,
    turn: &RunnableTurn,
    span: &tracing::Span,
    arguments: &str,
    result: &str,
) {
    let capture = &context.config.content_capture;
    let policy = capture_policy(context, turn);
    genai::record_content(span, capture, policy, ContentRole::Input, arguments, false);
    genai::record_content(span, capture, policy, ContentRole::Output, result, false);
}

fn record(context: &TurnEnv, turn: &RunnableTurn, role: ContentRole, text: &str) {
    genai::record_content(
        &tracing::Span::current(),
        &context.config.content_capture,
        capture_policy(context, turn),
        role,
        text,
        true,
    );
}

/// The org's capture policy: the operator's entry for it, else its own settings'
/// `capture` (from the configuration its turn runs with), else the deployment's.
fn capture_policy(context: &TurnEnv, turn: &RunnableTurn) -> sable_telemetry::CapturePolicy {
    context.config.content_capture.policy_with(
        &turn.org_id.to_string(),
        context.orgs.capture_of(turn.org_id),
    )
}
