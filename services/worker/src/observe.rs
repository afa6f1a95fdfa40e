//! How a turn shows up in traces and metrics: its `turn` span (a child of the request
//! that queued it, labelled for Langfuse), the content the capture policy lets into it,
//! and the queue-wait histogram.

use chrono::Utc;
use sable_store::{RunnableTurn, TurnOutcome};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::{self, ContentRole, TurnLabels};

use crate::WorkerContext;

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

/// Seconds from the turn's acceptance to the start of this attempt.
pub(crate) fn record_queue_wait(turn: &RunnableTurn) {
    let waited = (Utc::now() - turn.created_at).to_std().unwrap_or_default();
    metrics::histogram!("sable_turn_queue_wait_seconds").record(waited.as_secs_f64());
}

/// The user's message as the turn's input, if the org's capture policy allows it.
pub(crate) fn record_input(context: &WorkerContext, turn: &RunnableTurn, message: &str) {
    record(context, turn, ContentRole::Input, message);
}

/// The reply (or the error reply) as the turn's output, if the policy allows it.
pub(crate) fn record_output(context: &WorkerContext, turn: &RunnableTurn, outcome: &TurnOutcome) {
    let text = match outcome {
        TurnOutcome::Replied { text } => text,
        TurnOutcome::Failed { reply_text, .. } => reply_text,
    };
    record(context, turn, ContentRole::Output, text);
}

fn record(context: &WorkerContext, turn: &RunnableTurn, role: ContentRole, text: &str) {
    genai::record_content(
        &tracing::Span::current(),
        &context.config.content_capture,
        &turn.org_id.to_string(),
        role,
        text,
        true,
    );
}
