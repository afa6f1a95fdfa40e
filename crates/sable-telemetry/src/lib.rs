//! Logging, tracing export, GenAI span vocabulary, content capture policy, Prometheus
//! metrics and W3C trace context for Sable's roles.
//!
//! Owns how a process logs (text or JSON with trace and span ids, filtered by
//! `RUST_LOG`), how its `tracing` spans leave as OpenTelemetry over OTLP/HTTP (to a
//! collector, Langfuse, or both), and the `traceparent` that ties a turn's work across
//! gateway, bus and worker into one trace. Depends on nothing of ours and never reads the
//! environment: the binary passes a [`TracingConfig`]. Logs never carry prompts, replies
//! or secrets; content enters spans only under a [`ContentCapture`] policy.

mod capture;
pub mod genai;
mod langfuse;
mod log_format;
mod otel;
mod prometheus;
mod trace_context;

pub use capture::{CapturePolicy, ContentCapture, REDACTED};
pub use langfuse::LangfuseProject;
pub use otel::{OtlpTarget, TracingConfig, TracingError};
pub use prometheus::{
    install_metrics, record_audit_events, record_audit_sealer, record_tool_call, render_metrics,
};
pub use trace_context::TraceContext;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Keeps span export alive; dropping it flushes what is queued (bounded by the
/// exporter's timeout) and stops the export threads.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging only (no span export).
pub fn init_logging(format: LogFormat) {
    // Without targets there is no exporter to fail.
    let _guard = init(format, &TracingConfig::default());
}

/// Installs the global subscriber once (later calls install nothing): log lines to
/// stderr filtered by `RUST_LOG` (default `info` for Sable, `warn` for libraries), and,
/// when `tracing` has targets, Sable's spans exported over OTLP whatever `RUST_LOG` says.
pub fn init(format: LogFormat, tracing: &TracingConfig) -> Result<TelemetryGuard, TracingError> {
    let provider = otel::tracer_provider(tracing)?;
    let export = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sable"))
            .with_filter(Targets::new().with_target("sable", LevelFilter::INFO))
    });
    let installed = tracing_subscriber::registry()
        .with(export)
        .with(log_layer(format).with_filter(log_filter()))
        .try_init();
    // Already installed (tests, embedded roles): keep the first, export nothing twice.
    let provider = if installed.is_ok() { provider } else { None };
    Ok(TelemetryGuard { provider })
}

fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,sable=info,sable_gateway=info,sable_worker=info,sable_store=info,sable_bus=info",
        )
    })
}

fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Colour only for a person at a terminal; never escape codes in files or collectors.
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer
            .fmt_fields(fmt::format::JsonFields::new())
            .event_format(log_format::WithTraceIds(
                fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ))
            .boxed(),
    }
}
