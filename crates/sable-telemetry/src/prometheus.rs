//! Prometheus metrics: one process-wide recorder, rendered as text on `/metrics` by every
//! role. Labels are bounded: routes are path templates, outcomes and kinds are fixed
//! sets, tools come from the deployment's registry; no session or user ids, and org ids
//! only where a deployment opts in (`metrics_org_labels`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from a millisecond to two minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the recorder once per process (later calls are no-ops) and describes every
/// metric Sable records.
pub fn install_metrics() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests running roles in-process).
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    });
}

/// The current metrics in the Prometheus text format; empty before [`install_metrics`].
pub fn render_metrics() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Counts one tool call by tool and outcome, with its duration. For the tool loop, next
/// to [`crate::genai::tool_span`].
pub fn record_tool_call(tool: &str, outcome: &str, duration: std::time::Duration) {
    metrics::counter!("sable_tool_calls_total", "tool" => tool.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    metrics::histogram!("sable_tool_call_duration_seconds", "tool" => tool.to_owned())
        .record(duration.as_secs_f64());
}

/// The sealer chained `count` events of `action`.
pub fn record_audit_events(action: &str, count: u64) {
    metrics::counter!("sable_audit_events_total", "action" => action.to_owned()).increment(count);
}

/// The sealer's lag, and whether this process leads it.
pub fn record_audit_sealer(lag: std::time::Duration, leader: bool) {
    metrics::gauge!("sable_audit_sealer_lag_seconds").set(lag.as_secs_f64());
    metrics::gauge!("sable_audit_sealer_leader").set(if leader { 1.0 } else { 0.0 });
}

/// What a metric is, for its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// A histogram of seconds.
    Seconds,
}

/// Every metric Sable records: kind, name, help. The Grafana dashboard in `deploy/` may
/// only chart these (a test checks).
const METRICS: &[(Kind, &str, &str)] = &[
    (
        Kind::Counter,
        "sable_audit_events_total",
        "Audit events written, by action, counted when the sealer chains them (each once).",
    ),
    (
        Kind::Gauge,
        "sable_audit_sealer_lag_seconds",
        "Age of the oldest audit event the sealer found unsealed on its last pass (0 when none).",
    ),
    (
        Kind::Gauge,
        "sable_audit_sealer_leader",
        "1 on the gateway that holds the audit sealer's lease, 0 on the others.",
    ),
    (
        Kind::Counter,
        "sable_tool_calls_total",
        "Tool calls by tool and outcome.",
    ),
    (
        Kind::Seconds,
        "sable_tool_call_duration_seconds",
        "Tool call duration by tool.",
    ),
    (
        Kind::Gauge,
        "sable_queue_pending",
        "Work items waiting for the queue's shared consumer, by queue (turns, deliveries).",
    ),
    (
        Kind::Gauge,
        "sable_queue_ack_pending",
        "Work items handed out and not yet acked, by queue.",
    ),
    (
        Kind::Gauge,
        "sable_queue_redelivered",
        "Work items delivered more than once, as the queue's consumer counts them.",
    ),
    (
        Kind::Gauge,
        "sable_db_pool_connections",
        "This process's database pool: open, idle and max connections.",
    ),
    (
        Kind::Gauge,
        "sable_cron_lag_seconds",
        "How late the cron leader fired its last occurrence (recorded by the cron role).",
    ),
    (
        Kind::Gauge,
        "sable_cron_leader",
        "1 on the cron replica that holds the leader lease, 0 on the others.",
    ),
    (
        Kind::Counter,
        "sable_cron_due_total",
        "Cron occurrences that came due, as the leader found them.",
    ),
    (
        Kind::Counter,
        "sable_cron_fired_total",
        "Cron occurrences enqueued as turns (a late run_once run included).",
    ),
    (
        Kind::Counter,
        "sable_cron_failed_total",
        "Cron occurrences that could not be enqueued (recorded as failed runs).",
    ),
    (
        Kind::Counter,
        "sable_cron_missed_total",
        "Cron occurrences missed while no leader ran (handled by the misfire policy).",
    ),
    (
        Kind::Gauge,
        "sable_mcp_server_up",
        "1 when the sidecar's connection to an MCP server is up, by server (recorded by the sidecar).",
    ),
    (
        Kind::Counter,
        "sable_http_requests_total",
        "HTTP requests by route template, method and status.",
    ),
    (
        Kind::Seconds,
        "sable_http_request_duration_seconds",
        "HTTP request duration by route template.",
    ),
    (
        Kind::Counter,
        "sable_turns_started_total",
        "Turn attempts started by workers.",
    ),
    (
        Kind::Counter,
        "sable_turns_finished_total",
        "Turns ended, by status (done or failed).",
    ),
    (
        Kind::Seconds,
        "sable_turn_duration_seconds",
        "From a turn attempt's start to its end.",
    ),
    (
        Kind::Seconds,
        "sable_turn_queue_wait_seconds",
        "From a turn's acceptance to the start of its attempt.",
    ),
    (
        Kind::Counter,
        "sable_provider_calls_total",
        "Provider calls by provider kind and outcome.",
    ),
    (
        Kind::Seconds,
        "sable_provider_call_duration_seconds",
        "Provider call duration by provider kind.",
    ),
    (
        Kind::Seconds,
        "sable_provider_time_to_first_token_seconds",
        "Time to the first streamed token.",
    ),
    (
        Kind::Counter,
        "sable_provider_tokens_total",
        "Tokens by provider kind and direction (input, output, cached).",
    ),
    (
        Kind::Counter,
        "sable_wakeups_redelivered_total",
        "Wake-ups received more than once, by queue.",
    ),
    (
        Kind::Counter,
        "sable_drain_panics_total",
        "Session drains that panicked (their lease released, their wake-up given back).",
    ),
    (
        Kind::Counter,
        "sable_deliveries_total",
        "Deliveries dispatched, by channel and outcome.",
    ),
    (
        Kind::Counter,
        "sable_quota_rejections_total",
        "Requests refused because an org's quota was reached, by quota.",
    ),
];

fn describe() {
    for &(kind, name, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Seconds => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dashboard charts only metrics that exist, so a renamed metric cannot leave a
    /// panel silently empty.
    #[test]
    fn the_grafana_dashboard_charts_only_recorded_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/grafana/sable-dashboard.json"
        );
        let dashboard = std::fs::read_to_string(path).expect("the dashboard exists");
        let known: Vec<&str> = METRICS.iter().map(|(_, name, _)| *name).collect();
        let charted: std::collections::BTreeSet<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("sable_"))
            .map(|word| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| word.strip_suffix(suffix))
                    .unwrap_or(word)
            })
            .collect();
        for name in &charted {
            assert!(
                known.contains(name),
                "the dashboard charts unknown metric {name}"
            );
        }
        for name in &known {
            assert!(
                charted.contains(name),
                "the dashboard does not chart {name}"
            );
        }
    }
}
