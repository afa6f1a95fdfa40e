//! The span of one provider attempt: an OpenTelemetry GenAI `chat` span that Langfuse
//! shows as a generation with its model and token usage. Trace-level labels (session,
//! user) come from the enclosing turn; content is not recorded here.
//!
//! The attribute names are the `gen_ai.*` semantic conventions and Langfuse's
//! `langfuse.observation.*`; `sable-telemetry::genai` documents the whole vocabulary
//! (this crate sits beside it and cannot depend on it).

use crate::{Completion, ProviderError};

/// Opens the span of one attempt on `model` of the provider `system`.
pub(crate) fn attempt_span(
    system: &str,
    profile: &str,
    model: &str,
    retry_number: u32,
) -> tracing::Span {
    tracing::info_span!(
        "provider_call",
        otel.name = format!("chat {model}").as_str(),
        "langfuse.observation.type" = "generation",
        "langfuse.observation.model.name" = model,
        gen_ai.operation.name = "chat",
        gen_ai.system = system,
        gen_ai.provider.name = system,
        gen_ai.request.model = model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.usage.cache_read_input_tokens = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        sable.profile = profile,
        sable.retry_number = retry_number,
    )
}

/// Records how the attempt ended: response model, finish reason and usage, or the error.
pub(crate) fn record_result(span: &tracing::Span, result: &Result<Completion, ProviderError>) {
    match result {
        Ok(completion) => {
            if let Some(model) = &completion.model {
                span.record("gen_ai.response.model", model.as_str());
            }
            if let Some(reason) = &completion.finish_reason {
                span.record("gen_ai.response.finish_reasons", reason.as_str());
            }
            if let Some(usage) = completion.usage {
                // As i64: the exporter turns u64 values into strings, which Langfuse
                // would not count as tokens.
                let tokens = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
                span.record("gen_ai.usage.input_tokens", tokens(usage.input_tokens));
                span.record("gen_ai.usage.output_tokens", tokens(usage.output_tokens));
                span.record(
                    "gen_ai.usage.cache_read_input_tokens",
                    tokens(usage.cached_input_tokens),
                );
            }
        }
        Err(error) => {
            span.record("error.type", error.code());
            span.record("otel.status_code", "ERROR");
        }
    }
}
