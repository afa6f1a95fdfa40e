//! Logging set-up, Prometheus metrics and W3C trace context for Sable's roles.
//!
//! Owns how a process logs (text or JSON, filtered by `RUST_LOG`) and the `traceparent`
//! that ties a turn's work across gateway, bus and worker into one trace. Depends on
//! nothing of ours. Logs never carry prompts, replies or secrets.

mod prometheus;
mod trace_context;

pub use prometheus::{install_metrics, render_metrics};
pub use trace_context::TraceContext;

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber once; later calls are ignored. The filter comes from
/// `RUST_LOG`, defaulting to `info` for Sable and `warn` for libraries.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,sable=info,sable_gateway=info,sable_worker=info,sable_store=info,sable_bus=info",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // Already installed (tests, embedded roles): keep the first.
    let _ = installed;
}
