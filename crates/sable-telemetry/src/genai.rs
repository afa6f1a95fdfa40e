//! Span vocabulary for LLM work: OpenTelemetry GenAI (`gen_ai.*`) and Langfuse
//! (`langfuse.*`) attributes, the turn labels every span of a turn carries, crossing from
//! a stored `traceparent` into a span, and the tool-call span.
//!
//! Provider-call spans are opened by `sable-llm` (it sits beside this crate, so it spells
//! the same `gen_ai.*` names itself); this module owns the rest.

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{CapturePolicy, ContentCapture, TraceContext};

pub const LANGFUSE_SESSION_ID: &str = "langfuse.session.id";
pub const LANGFUSE_USER_ID: &str = "langfuse.user.id";
pub const LANGFUSE_TRACE_NAME: &str = "langfuse.trace.name";
pub const LANGFUSE_TRACE_TAGS: &str = "langfuse.trace.tags";
pub const LANGFUSE_ORG_ID: &str = "langfuse.trace.metadata.org_id";
pub const LANGFUSE_ENVIRONMENT: &str = "langfuse.environment";
pub const LANGFUSE_OBSERVATION_TYPE: &str = "langfuse.observation.type";
pub const LANGFUSE_OBSERVATION_INPUT: &str = "langfuse.observation.input";
pub const LANGFUSE_OBSERVATION_OUTPUT: &str = "langfuse.observation.output";
pub const LANGFUSE_TRACE_INPUT: &str = "langfuse.trace.input";
pub const LANGFUSE_TRACE_OUTPUT: &str = "langfuse.trace.output";

/// The trace-level attributes a turn carries in baggage, copied onto every span.
pub(crate) const TRACE_BAGGAGE_KEYS: &[&str] = &[
    LANGFUSE_SESSION_ID,
    LANGFUSE_USER_ID,
    LANGFUSE_TRACE_NAME,
    LANGFUSE_TRACE_TAGS,
    LANGFUSE_ORG_ID,
];

/// Who and what a turn is about, as Langfuse groups traces: by session and user, named
/// after the agent, tagged with the channel.
#[derive(Debug, Clone, Default)]
pub struct TurnLabels {
    pub org_id: String,
    pub session_id: String,
    pub user_id: Option<String>,
    /// The trace's name (the agent id).
    pub trace_name: String,
    pub tags: Vec<String>,
}

impl TurnLabels {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (LANGFUSE_SESSION_ID, self.session_id.clone()),
            (LANGFUSE_TRACE_NAME, self.trace_name.clone()),
            (LANGFUSE_ORG_ID, self.org_id.clone()),
            (LANGFUSE_TRACE_TAGS, self.tags.join(",")),
        ];
        if let Some(user_id) = &self.user_id {
            pairs.push((LANGFUSE_USER_ID, user_id.clone()));
        }
        pairs.retain(|(_, value)| !value.is_empty());
        pairs
    }

    /// Sets the labels on a span that started before they were known (the gateway's
    /// request span learns the session only once the message is accepted).
    pub fn annotate(&self, span: &tracing::Span) {
        for (key, value) in self.pairs() {
            let attribute = trace_attribute(key, &value);
            span.set_attribute(attribute.key, attribute.value);
        }
    }
}

/// One trace attribute; tags travel as a comma-joined string and become an array.
pub(crate) fn trace_attribute(key: &str, value: &str) -> KeyValue {
    if key == LANGFUSE_TRACE_TAGS {
        let tags: Vec<StringValue> = value
            .split(',')
            .filter(|tag| !tag.is_empty())
            .map(|tag| StringValue::from(tag.to_owned()))
            .collect();
        return KeyValue::new(key.to_owned(), Value::Array(Array::String(tags)));
    }
    KeyValue::new(key.to_owned(), value.to_owned())
}

/// Makes `span` a child of `parent` (a stored or received `traceparent`) and puts the
/// turn's labels in its baggage so every span below carries them (empty labels add
/// nothing). Call it right after creating the span, before entering it. A no-op when
/// export is off.
pub fn set_parent(span: &tracing::Span, parent: &TraceContext, labels: &TurnLabels) {
    let span_context = SpanContext::new(
        TraceId::from_bytes(parent.trace_id_bytes()),
        SpanId::from_bytes(parent.span_id_bytes()),
        if parent.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    let baggage = labels
        .pairs()
        .into_iter()
        .map(|(key, value)| KeyValue::new(key, value));
    let context = opentelemetry::Context::new()
        .with_remote_span_context(span_context)
        .with_baggage(baggage);
    // Fails only when export is off (no layer) or the span already started.
    let _ = span.set_parent(context);
}

/// The exported span's own trace context, to pass on as `traceparent`; `None` when
/// export is off.
pub fn trace_context_of(span: &tracing::Span) -> Option<TraceContext> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        TraceContext::from_parts(
            span_context.trace_id().to_bytes(),
            span_context.span_id().to_bytes(),
            span_context.is_sampled(),
        )
    })
}

/// Which side of an observation a piece of content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRole {
    Input,
    Output,
}

/// Puts content (a prompt, a completion, a tool payload) on `span` as Langfuse's
/// observation input or output, if `policy` (the org's, from
/// [`ContentCapture::policy_with`]) allows it. With `trace_level`, also as the trace's
/// input or output. Content becomes an OpenTelemetry attribute only, never a `tracing`
/// field, so no log line can carry it.
pub fn record_content(
    span: &tracing::Span,
    capture: &ContentCapture,
    policy: CapturePolicy,
    role: ContentRole,
    text: &str,
    trace_level: bool,
) {
    let Some(text) = capture.apply_policy(policy, text) else {
        return;
    };
    let (observation, trace) = match role {
        ContentRole::Input => (LANGFUSE_OBSERVATION_INPUT, LANGFUSE_TRACE_INPUT),
        ContentRole::Output => (LANGFUSE_OBSERVATION_OUTPUT, LANGFUSE_TRACE_OUTPUT),
    };
    if trace_level {
        span.set_attribute(trace, text.clone());
    }
    span.set_attribute(observation, text);
}

/// The span of one tool call, a Langfuse `tool` observation. The tool loop opens it
/// around each call (`.instrument(tool_span(name, id))`) and records the outcome with
/// `span.record("sable.tool.outcome", "ok")`; payloads go through [`record_content`].
/// It inherits the turn's session and user from the turn span's baggage.
pub fn tool_span(tool_name: &str, call_id: &str) -> tracing::Span {
    tracing::info_span!(
        "tool",
        otel.name = format!("execute_tool {tool_name}").as_str(),
        "langfuse.observation.type" = "tool",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool_name,
        gen_ai.tool.call.id = call_id,
        sable.tool.outcome = tracing::field::Empty,
    )
}

/// The span of one turn in a worker, a Langfuse `agent` observation.
pub fn turn_span(labels: &TurnLabels, turn_id: &str, seq: i64, attempt: i32) -> tracing::Span {
    tracing::info_span!(
        "turn",
        otel.name = format!("invoke_agent {}", labels.trace_name).as_str(),
        "langfuse.observation.type" = "agent",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = labels.trace_name.as_str(),
        turn_id,
        session_id = labels.session_id.as_str(),
        org_id = labels.org_id.as_str(),
        seq,
        attempt,
        trace_id = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::otel::TraceAttributes;

    /// Keeps every exported span in memory.
    #[derive(Debug, Clone, Default)]
    struct Collected(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collected {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().expect("collected lock").extend(batch);
            Ok(())
        }
    }

    fn attribute(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|pair| pair.key.as_str() == key)
            .map(|pair| pair.value.to_string())
    }

    #[test]
    fn a_tool_span_inside_a_turn_is_its_child_and_carries_the_turns_labels() {
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(TraceAttributes {
                environment: "test".into(),
            })
            .with_simple_exporter(collected.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let labels = TurnLabels {
            org_id: "org-1".into(),
            session_id: "session-1".into(),
            user_id: Some("user-1".into()),
            trace_name: "helper".into(),
            tags: vec!["channel:api".into()],
        };
        let parent = TraceContext::new_root();

        tracing::subscriber::with_default(subscriber, || {
            let turn = turn_span(&labels, "turn-1", 1, 1);
            set_parent(&turn, &parent, &labels);
            let _entered = turn.enter();
            tool_span("http_fetch", "call-1").in_scope(|| {});
        });

        let spans = collected.0.lock().expect("collected lock");
        let named = |name: &str| {
            spans
                .iter()
                .find(|span| span.name == name)
                .unwrap_or_else(|| panic!("no {name} in {spans:?}"))
        };
        let (turn, tool) = (
            named("invoke_agent helper"),
            named("execute_tool http_fetch"),
        );
        assert_eq!(turn.span_context.trace_id().to_string(), parent.trace_id());
        assert_eq!(turn.parent_span_id.to_string(), parent.span_id());
        assert_eq!(tool.parent_span_id, turn.span_context.span_id());
        for span in [turn, tool] {
            assert_eq!(
                attribute(span, LANGFUSE_SESSION_ID).as_deref(),
                Some("session-1")
            );
            assert_eq!(attribute(span, LANGFUSE_USER_ID).as_deref(), Some("user-1"));
            assert_eq!(
                attribute(span, LANGFUSE_ENVIRONMENT).as_deref(),
                Some("test")
            );
        }
        assert_eq!(
            attribute(tool, LANGFUSE_OBSERVATION_TYPE).as_deref(),
            Some("tool")
        );
        assert_eq!(
            attribute(tool, "gen_ai.tool.call.id").as_deref(),
            Some("call-1")
        );
        assert_eq!(
            attribute(turn, LANGFUSE_OBSERVATION_TYPE).as_deref(),
            Some("agent")
        );
    }
}
