//! `sable admin org quota`: sets an org's quotas (each flag optional; the others stay as
//! they are) and prints them as JSON.

use anyhow::Context;
use sable_core::OrgId;
use sable_store::{Actor, Quota, QuotaPatch, Store};

/// The flags of `sable admin org quota`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each LIMIT is a whole number of 0 or more (0 refuses everything the \
    quota counts), or `none` for unlimited. Flags left out keep their limit; with none, the \
    org's quotas are printed unchanged. Over a limit the API answers 429 `quota_exceeded` \
    with `Retry-After` and the quota's name. Every gateway applies a change within \
    `quota_cache_ms` (1 s by default)."
)]
pub(crate) struct QuotaArgs {
    /// The org's id, as printed by `sable admin org create`.
    #[arg(long = "org")]
    org_id: String,
    /// Messages accepted per UTC minute (every door: API, OpenAI-compatible, MCP, Feishu).
    #[arg(long = "requests-per-minute", value_name = "LIMIT", value_parser = parse_limit)]
    requests_per_minute: Option<Limit>,
    /// Turns queued, running or waiting for approval at once.
    #[arg(long = "concurrent-turns", value_name = "LIMIT", value_parser = parse_limit)]
    concurrent_turns: Option<Limit>,
    /// Tokens (input + output) the org's provider calls may consume per UTC day.
    #[arg(long = "tokens-per-day", value_name = "LIMIT", value_parser = parse_limit)]
    tokens_per_day: Option<Limit>,
    /// Tokens per UTC month.
    #[arg(long = "tokens-per-month", value_name = "LIMIT", value_parser = parse_limit)]
    tokens_per_month: Option<Limit>,
    /// Cron tasks the org may have.
    #[arg(long = "cron-tasks", value_name = "LIMIT", value_parser = parse_limit)]
    cron_tasks: Option<Limit>,
    /// MCP servers of the org's own it may have.
    #[arg(long = "mcp-servers", value_name = "LIMIT", value_parser = parse_limit)]
    mcp_servers: Option<Limit>,
}

/// A limit as given on the command line: `None` for `none` (unlimited).
#[derive(Debug, Clone, Copy)]
struct Limit(Option<i64>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match text.parse::<i64>() {
        Ok(limit) if limit >= 0 => Ok(Limit(Some(limit))),
        _ => Err(format!(
            "'{text}' is not a limit: give a whole number of 0 or more, or `none` for unlimited"
        )),
    }
}

impl QuotaArgs {
    fn patch(&self) -> QuotaPatch {
        let given = [
            (Quota::RequestsPerMinute, self.requests_per_minute),
            (Quota::ConcurrentTurns, self.concurrent_turns),
            (Quota::TokensPerDay, self.tokens_per_day),
            (Quota::TokensPerMonth, self.tokens_per_month),
            (Quota::CronTasks, self.cron_tasks),
            (Quota::McpServers, self.mcp_servers),
        ];
        QuotaPatch {
            changes: given
                .into_iter()
                .filter_map(|(quota, limit)| limit.map(|Limit(limit)| (quota, limit)))
                .collect(),
        }
    }
}

/// Applies the flags (audited as `org.quotas_updated` by the admin CLI) and prints the
/// org's quotas as they now are, with the org's id.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(store: &Store, args: QuotaArgs) -> anyhow::Result<()> {
    let org_id: OrgId = args.org_id.parse().context("--org is not an org id")?;
    let patch = args.patch();
    let quotas = if patch.changes.is_empty() {
        anyhow::ensure!(
            store.org_exists(org_id).await?,
            "no org has the id {org_id}"
        );
        store.org_quotas(org_id).await?
    } else {
        store
            .set_org_quotas(org_id, &patch, &Actor::admin_cli())
            .await
            .with_context(|| format!("could not set the quotas of org {org_id}"))?
    };
    let mut json = serde_json::to_value(quotas)?;
    json["org_id"] = serde_json::Value::String(org_id.to_string());
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
