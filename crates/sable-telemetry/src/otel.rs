//! OpenTelemetry export: a tracer provider whose spans leave through one batch processor
//! per OTLP/HTTP (protobuf) target, each with a bounded queue that drops on overflow, so
//! a slow or unreachable collector never blocks a turn or grows memory without bound.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::Span as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanProcessor,
};

use crate::genai::{LANGFUSE_ENVIRONMENT, TRACE_BAGGAGE_KEYS};

/// Where spans go and how this process describes itself.
#[derive(Debug, Clone, Default)]
pub struct TracingConfig {
    /// `service.name`: one per role (`sable-gateway`, `sable-worker`, …).
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// `deployment.environment.name` and `langfuse.environment`.
    pub environment: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: Vec<(String, String)>,
    /// Every target receives every span.
    pub targets: Vec<OtlpTarget>,
    /// Spans buffered per target before new ones are dropped.
    pub max_queue_size: usize,
}

/// One OTLP/HTTP protobuf receiver: a collector, Langfuse, or both side by side.
#[derive(Debug, Clone)]
pub struct OtlpTarget {
    /// The full traces URL (`…/v1/traces`).
    pub traces_endpoint: String,
    pub headers: HashMap<String, String>,
    pub timeout: Duration,
}

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot build the HTTP client of the OTLP exporter: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Builds the provider; `None` when there is no target (tracing export off).
pub(crate) fn tracer_provider(
    config: &TracingConfig,
) -> Result<Option<SdkTracerProvider>, TracingError> {
    if config.targets.is_empty() {
        return Ok(None);
    }
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource(config))
        .with_span_processor(TraceAttributes {
            environment: config.environment.clone(),
        });
    for target in &config.targets {
        builder = builder.with_span_processor(batch_processor(target, config.max_queue_size)?);
    }
    Ok(Some(builder.build()))
}

fn resource(config: &TracingConfig) -> Resource {
    let standard = [
        ("service.version", config.service_version.clone()),
        ("deployment.environment.name", config.environment.clone()),
    ];
    Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            standard
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value))
                .chain(config.resource_attributes.iter().cloned())
                .map(|(key, value)| KeyValue::new(key, value)),
        )
        .build()
}

/// The exporter runs on the batch processor's own thread, so it uses the blocking
/// client (the async one panics there: no reactor).
fn batch_processor(
    target: &OtlpTarget,
    max_queue_size: usize,
) -> Result<BatchSpanProcessor, TracingError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(target.timeout)
        .build()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(target.traces_endpoint.clone())
        .with_headers(target.headers.clone())
        .with_timeout(target.timeout)
        .build()
        .map_err(|source| TracingError::Exporter {
            endpoint: target.traces_endpoint.clone(),
            source,
        })?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(max_queue_size.max(1))
        .with_scheduled_delay(Duration::from_millis(500))
        .build();
    Ok(BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build())
}

/// Stamps every span with the trace-level attributes Langfuse groups by (session, user,
/// trace name, tags, org) from the context's baggage, and with the environment. A turn
/// puts them in baggage once ([`crate::genai::set_parent`]); every span below it (provider
/// calls in `sable-llm`, tool calls) then carries them without knowing about them.
#[derive(Debug)]
pub(crate) struct TraceAttributes {
    pub(crate) environment: String,
}

impl SpanProcessor for TraceAttributes {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        span.set_attribute(KeyValue::new(
            LANGFUSE_ENVIRONMENT,
            self.environment.clone(),
        ));
        let baggage = cx.baggage();
        for key in TRACE_BAGGAGE_KEYS {
            if let Some(value) = baggage.get(*key) {
                span.set_attribute(crate::genai::trace_attribute(key, value.as_str()));
            }
        }
    }

    fn on_end(&self, _span: SpanData) {}

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}
