//! Span export settings of a role, from the standard OpenTelemetry variables and the
//! Langfuse preset: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`,
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` / `_HEADERS` / `_TIMEOUT`,
//! `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (only `http/protobuf`), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`; `LANGFUSE_HOST` + keys (from [`Settings`]) add Langfuse as
//! a second target, or the only one.

use std::time::Duration;

use sable_telemetry::{LangfuseProject, OtlpTarget, TracingConfig};

use crate::settings::Settings;

/// How long one export request may take (`OTEL_EXPORTER_OTLP_TIMEOUT` default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The export settings of `role` (`gateway`, `worker`, `dev`); no targets when export is
/// off or nothing is configured.
pub(crate) fn tracing_config(settings: &Settings, role: &str) -> anyhow::Result<TracingConfig> {
    let mut config = TracingConfig {
        service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| format!("sable-{role}")),
        service_version: env!("CARGO_PKG_VERSION").to_owned(),
        environment: settings.environment.clone(),
        resource_attributes: var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|value| pairs(&value))
            .unwrap_or_default(),
        targets: Vec::new(),
        max_queue_size: settings.otel_max_queue_size,
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(config);
    }
    if let Some(protocol) = signal_var("PROTOCOL")
        && protocol != "http/protobuf"
    {
        anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; use http/protobuf");
    }
    let timeout = signal_var("TIMEOUT")
        .and_then(|millis| millis.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    if var("OTEL_TRACES_EXPORTER").is_none_or(|exporter| exporter != "none")
        && let Some(endpoint) = collector_endpoint()
    {
        config.targets.push(OtlpTarget {
            traces_endpoint: endpoint,
            headers: signal_var("HEADERS")
                .map(|value| pairs(&value).into_iter().collect())
                .unwrap_or_default(),
            timeout,
        });
    }
    if let Some(project) = langfuse_project(settings)? {
        config.targets.push(project.otlp_target(timeout));
    }
    Ok(config)
}

/// The Langfuse project, when `LANGFUSE_HOST` is set (its keys are then required).
pub(crate) fn langfuse_project(settings: &Settings) -> anyhow::Result<Option<LangfuseProject>> {
    let Some(host) = settings
        .langfuse_host
        .clone()
        .filter(|host| !host.is_empty())
    else {
        return Ok(None);
    };
    let (Some(public_key), Some(secret_key)) =
        (&settings.langfuse_public_key, &settings.langfuse_secret_key)
    else {
        anyhow::bail!("LANGFUSE_HOST is set: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY too");
    };
    Ok(Some(LangfuseProject {
        host,
        public_key: public_key.clone(),
        secret_key: secret_key.expose().to_owned(),
    }))
}

/// The traces URL: the per-signal variable as is, or the base endpoint + `/v1/traces`.
fn collector_endpoint() -> Option<String> {
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })
}

/// `OTEL_EXPORTER_OTLP_TRACES_<NAME>`, else `OTEL_EXPORTER_OTLP_<NAME>`.
fn signal_var(name: &str) -> Option<String> {
    var(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
        .or_else(|| var(&format!("OTEL_EXPORTER_OTLP_{name}")))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// `key=value,key2=value2` (the format of the headers and resource variables).
fn pairs(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_lists_parse_and_skip_garbage() {
        assert_eq!(
            pairs("a=1, b = two ,junk,=x"),
            vec![("a".into(), "1".into()), ("b".into(), "two".into())]
        );
    }
}
