//! Typed settings, layered: built-in defaults, then `config/sable.toml` (or the file named
//! by `--config` / `SABLE_CONFIG`), then `SABLE_*` environment variables, then the
//! conventional `OPENAI_BASE_URL` and `LANGFUSE_*`. The `OTEL_*` variables are read by
//! `telemetry.rs`. Provider keys are read where `config/providers.toml`
//! says (`OPENAI_API_KEY` by default) by `models.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use sable_core::Secret;
use sable_telemetry::{CapturePolicy, ContentCapture, LogFormat};
use serde::Deserialize;

/// The file read when no `--config` is given; a missing default file is not an error.
pub const DEFAULT_CONFIG_PATH: &str = "config/sable.toml";

/// Every setting of every role. Durations are in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database_url: String,
    pub nats_url: String,
    pub nats_prefix: String,
    pub gateway_addr: String,
    /// Where a worker serves `/metrics` and `/healthz` (the gateway serves them on its
    /// API address).
    pub metrics_addr: String,
    pub agents_dir: PathBuf,
    /// Where skills live: one folder per skill holding its `SKILL.md`.
    pub skills_dir: PathBuf,
    /// Rules from channel, conversation or user to an agent; a missing file means none.
    pub bindings_file: PathBuf,
    pub default_agent: String,
    pub log_format: LogFormat,
    pub providers_file: PathBuf,
    pub models_file: PathBuf,
    /// Overrides the model of the `default` profile (`SABLE_MODEL`).
    pub model: Option<String>,
    /// Overrides the base URL of the `openai` provider (`OPENAI_BASE_URL`).
    pub openai_base_url: Option<String>,
    /// Overrides every provider's timeouts when set.
    pub provider_connect_timeout_ms: Option<u64>,
    pub provider_idle_timeout_ms: Option<u64>,
    pub provider_timeout_ms: Option<u64>,
    pub db_max_connections: u32,
    pub db_acquire_timeout_ms: u64,
    pub lease_ttl_ms: u64,
    pub sweep_interval_ms: u64,
    pub sweep_after_ms: u64,
    pub wait_timeout_ms: u64,
    pub wait_poll_interval_ms: u64,
    /// A gateway connection that has not sent a whole request head this long after it
    /// opened (or after its previous response: the idle keep-alive limit) is closed.
    pub http_header_timeout_ms: u64,
    /// A request body that has not arrived whole this long is refused with 408.
    pub http_body_timeout_ms: u64,
    /// Connections one gateway serves at once; more wait in the listen backlog.
    pub http_max_connections: usize,
    pub worker_concurrency: usize,
    pub worker_id: Option<String>,
    pub shutdown_grace_ms: u64,
    /// An approval nobody answers within this long counts as a denial.
    pub approval_ttl_ms: u64,
    /// Networks (CIDR) or host names `http_fetch` may reach although they are private,
    /// loopback or link-local; e.g. `["10.1.0.0/16", "intranet.example"]`.
    pub http_fetch_allow: Vec<String>,
    /// Where the gateway POSTs replies of the `webhook` channel (unset: channel refused).
    pub webhook_url: Option<String>,
    pub webhook_timeout_ms: u64,
    /// The envelope key sealing channel secrets at rest (`SABLE_SECRETS_KEY`, base64 of
    /// 32 bytes). `sable dev` creates one in its data folder when unset.
    pub secrets_key: Option<Secret>,
    /// The platform administrator's bootstrap key (`SABLE_ADMIN_KEY`): whoever presents
    /// it may manage every org. Unset: only `sable admin key create --platform` keys.
    pub admin_key: Option<Secret>,
    /// Timeout of each call to the Feishu / Lark open platform.
    pub feishu_timeout_ms: u64,
    /// First wait after a Feishu rate-limit answer without a reset header (then x3).
    pub feishu_rate_limit_backoff_ms: u64,
    /// How often a gateway rereads the Feishu apps, so `long-connection` apps added or
    /// removed later connect or disconnect.
    pub feishu_apps_refresh_ms: u64,
    /// A streamed Feishu reply card is updated at most once per this many ms.
    pub feishu_stream_interval_ms: u64,
    /// How long a gateway uses its copy of the orgs' quotas before checking for changes
    /// (another gateway's `PUT /v1/orgs/{id}/quotas` applies within this long).
    pub quota_cache_ms: u64,
    /// Intake (gateway, cron) rechecks an org's configuration version at most this
    /// often; workers see a change on the next turn whatever this is.
    pub org_config_refresh_ms: u64,
    /// A turn started this many times without ending fails instead of running again.
    pub max_turn_attempts: i32,
    /// Fault points to stop at (comma-separated names), for fault-injection tests.
    pub fault_pause_at: String,
    /// Fault points to panic at once (comma-separated names), for tests of a task that
    /// panics mid-turn.
    pub fault_panic_at: String,
    /// Hits of armed fault points that pass before the process stops at one.
    pub fault_hits_to_pass: u64,
    /// `deployment.environment.name` of exported spans and Langfuse's environment.
    pub environment: String,
    /// Prompts and replies in span attributes: `off`, `redacted` or `full`.
    pub capture_content: CapturePolicy,
    /// Orgs (by id) whose policy differs from `capture_content`.
    pub capture_content_orgs: HashMap<String, CapturePolicy>,
    /// Regular expressions masked under `redacted`, besides the built-in secret shapes.
    pub capture_redact_patterns: Vec<String>,
    /// Write audit events with the actions they record (off only to measure the cost;
    /// Postgres only, the embedded store always writes them).
    pub audit_enabled: bool,
    /// How often the audit sealer chains new events.
    pub audit_seal_interval_ms: u64,
    /// Sealed audit events older than this many days are dropped behind a checkpoint.
    pub audit_retention_days: u64,
    /// Orgs (by id) whose audit retention, in days, differs.
    pub audit_retention_orgs: HashMap<String, u64>,
    /// Label turn metrics with the org id (off: cardinality grows with the orgs).
    pub metrics_org_labels: bool,
    /// How often each serving process records its heartbeat and backlog gauges.
    pub heartbeat_interval_ms: u64,
    /// Spans buffered per OTLP target before new ones are dropped.
    pub otel_max_queue_size: usize,
    /// The Langfuse preset (`LANGFUSE_HOST`, `LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY`).
    pub langfuse_host: Option<String>,
    pub langfuse_public_key: Option<String>,
    pub langfuse_secret_key: Option<Secret>,
    /// The Langfuse project of those keys, for direct trace links
    /// (`SABLE_LANGFUSE_PROJECT_ID`; optional).
    pub langfuse_project_id: Option<String>,
    /// A cron leader that stops renewing its lease loses it after this long.
    pub cron_lease_ttl_ms: u64,
    /// How often the cron leader looks for due tasks.
    pub cron_tick_interval_ms: u64,
    /// A cron occurrence found later than this was missed (the task's misfire policy
    /// decides: `skip` drops it, `run_once` fires the latest missed one once).
    pub cron_misfire_grace_ms: u64,
    /// Runs kept per cron task.
    pub cron_run_retention: i64,
    /// The MCP servers the sidecar connects to (`SABLE_MCP_FILE`).
    pub mcp_file: PathBuf,
    /// Where `sable mcp-sidecar` serves gRPC (`SABLE_MCP_SIDECAR_ADDR`).
    pub mcp_sidecar_addr: String,
    /// Where workers and gateways reach the sidecar (`SABLE_MCP_SIDECAR_URL`, e.g.
    /// `http://127.0.0.1:50051`); unset means no MCP tools (`sable dev` runs its own).
    pub mcp_sidecar_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/sable".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: "sable".into(),
            gateway_addr: "127.0.0.1:8080".into(),
            metrics_addr: "127.0.0.1:9464".into(),
            agents_dir: "agents".into(),
            skills_dir: "skills".into(),
            bindings_file: "config/bindings.toml".into(),
            default_agent: "default".into(),
            log_format: LogFormat::Text,
            providers_file: "config/providers.toml".into(),
            models_file: "config/models.toml".into(),
            model: None,
            openai_base_url: None,
            provider_connect_timeout_ms: None,
            provider_idle_timeout_ms: None,
            provider_timeout_ms: None,
            db_max_connections: 20,
            db_acquire_timeout_ms: 3_000,
            lease_ttl_ms: 30_000,
            sweep_interval_ms: 2_000,
            sweep_after_ms: 10_000,
            wait_timeout_ms: 120_000,
            wait_poll_interval_ms: 1_000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_max_connections: 10_000,
            worker_concurrency: 512,
            worker_id: None,
            shutdown_grace_ms: 20_000,
            approval_ttl_ms: 3_600_000,
            http_fetch_allow: Vec::new(),
            max_turn_attempts: 5,
            webhook_url: None,
            webhook_timeout_ms: 10_000,
            secrets_key: None,
            admin_key: None,
            feishu_timeout_ms: 10_000,
            feishu_rate_limit_backoff_ms: 500,
            feishu_apps_refresh_ms: 30_000,
            org_config_refresh_ms: 1_000,
            feishu_stream_interval_ms: 400,
            quota_cache_ms: 1_000,
            fault_pause_at: String::new(),
            fault_panic_at: String::new(),
            fault_hits_to_pass: 0,
            environment: "development".into(),
            capture_content: CapturePolicy::Off,
            capture_content_orgs: HashMap::new(),
            capture_redact_patterns: Vec::new(),
            audit_enabled: true,
            audit_seal_interval_ms: 1_000,
            audit_retention_days: 90,
            audit_retention_orgs: HashMap::new(),
            otel_max_queue_size: 2_048,
            heartbeat_interval_ms: 5_000,
            metrics_org_labels: false,
            langfuse_host: None,
            langfuse_public_key: None,
            langfuse_secret_key: None,
            langfuse_project_id: None,
            cron_lease_ttl_ms: 10_000,
            cron_tick_interval_ms: 500,
            cron_misfire_grace_ms: 30_000,
            cron_run_retention: 200,
            mcp_file: "config/mcp.toml".into(),
            mcp_sidecar_addr: "127.0.0.1:50051".into(),
            mcp_sidecar_url: None,
        }
    }
}

impl Settings {
    /// Loads the layers. An explicitly named config file must exist.
    pub fn load(explicit_path: Option<&Path>) -> anyhow::Result<Self> {
        let path = explicit_path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        if explicit_path.is_some() && !path.is_file() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        let settings: Self = Figment::new()
            .merge(Toml::file(path))
            .merge(Env::prefixed("SABLE_").ignore(&["config"]))
            .merge(Env::raw().only(&[
                "openai_base_url",
                "langfuse_host",
                "langfuse_public_key",
                "langfuse_secret_key",
            ]))
            .extract()
            .with_context(|| {
                format!(
                    "invalid settings (from {} and SABLE_* variables)",
                    path.display()
                )
            })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.lease_ttl_ms >= 300,
            "lease_ttl_ms must be at least 300"
        );
        anyhow::ensure!(
            self.worker_concurrency >= 1,
            "worker_concurrency must be at least 1"
        );
        anyhow::ensure!(
            self.max_turn_attempts >= 1,
            "max_turn_attempts must be at least 1"
        );
        anyhow::ensure!(
            self.sweep_interval_ms >= 10,
            "sweep_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.approval_ttl_ms >= 1_000,
            "approval_ttl_ms must be at least 1000"
        );
        anyhow::ensure!(
            self.wait_poll_interval_ms >= 10,
            "wait_poll_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.heartbeat_interval_ms >= 10,
            "heartbeat_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.http_header_timeout_ms >= 100 && self.http_body_timeout_ms >= 100,
            "http_header_timeout_ms and http_body_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            self.http_max_connections >= 1,
            "http_max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.cron_lease_ttl_ms >= 300,
            "cron_lease_ttl_ms must be at least 300"
        );
        anyhow::ensure!(
            self.cron_tick_interval_ms >= 10,
            "cron_tick_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.cron_run_retention >= 1,
            "cron_run_retention must be at least 1"
        );
        anyhow::ensure!(
            self.audit_seal_interval_ms >= 10,
            "audit_seal_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.audit_retention_days >= 1
                && self.audit_retention_orgs.values().all(|days| *days >= 1),
            "audit_retention_days (and each of audit_retention_orgs) must be at least 1"
        );
        self.audit_config()?;
        self.content_capture()?;
        Ok(())
    }

    /// The audit sealer's settings, with per-org retention keyed by parsed org ids.
    pub fn audit_config(&self) -> anyhow::Result<sable_gateway::AuditConfig> {
        let days = |days: u64| Duration::from_secs(days.saturating_mul(24 * 3600));
        let retention_per_org = self
            .audit_retention_orgs
            .iter()
            .map(|(org, keep)| {
                let org = org
                    .parse()
                    .with_context(|| format!("audit_retention_orgs: '{org}' is not an org id"))?;
                Ok((org, days(*keep)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(sable_gateway::AuditConfig {
            seal_interval: Self::millis(self.audit_seal_interval_ms),
            retention: days(self.audit_retention_days),
            retention_per_org,
            ..sable_gateway::AuditConfig::default()
        })
    }

    /// The content capture policy, with its per-org overrides and patterns.
    pub fn content_capture(&self) -> anyhow::Result<ContentCapture> {
        ContentCapture::new(
            self.capture_content,
            self.capture_content_orgs.clone(),
            &self.capture_redact_patterns,
        )
        .context("capture_redact_patterns: invalid regular expression")
    }

    pub fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }
}
