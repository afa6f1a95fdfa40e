//! Per-org quotas: the limits an org runs under, the shared requests-per-minute counter,
//! the usage the limits are measured against, and the count checks (cron tasks, MCP
//! servers) that the store enforces itself.

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Utc};
use sable_core::OrgId;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{pg_write_events, record};
use crate::{Actor, PgStore, StoreError};

/// One kind of limit an org can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// Messages accepted per fixed UTC minute, on every intake path.
    RequestsPerMinute,
    /// The org's turns queued, running or waiting for approval, checked at intake.
    ConcurrentTurns,
    /// Tokens the org's provider calls consumed since the current UTC day began.
    TokensPerDay,
    /// Tokens the org's provider calls consumed since the current UTC month began.
    TokensPerMonth,
    /// The org's cron tasks, checked when one is created.
    CronTasks,
    /// The org's own MCP servers (not the platform's shared ones), checked when one is added.
    McpServers,
}

impl Quota {
    pub const ALL: [Self; 6] = [
        Self::RequestsPerMinute,
        Self::ConcurrentTurns,
        Self::TokensPerDay,
        Self::TokensPerMonth,
        Self::CronTasks,
        Self::McpServers,
    ];

    /// The quota's name in the API, the CLI (with dashes) and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestsPerMinute => "requests_per_minute",
            Self::ConcurrentTurns => "concurrent_turns",
            Self::TokensPerDay => "tokens_per_day",
            Self::TokensPerMonth => "tokens_per_month",
            Self::CronTasks => "cron_tasks",
            Self::McpServers => "mcp_servers",
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An org's limits; `None` is unlimited. An org that was never given quotas has every
/// limit `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OrgQuotas {
    pub requests_per_minute: Option<i64>,
    pub concurrent_turns: Option<i64>,
    pub tokens_per_day: Option<i64>,
    pub tokens_per_month: Option<i64>,
    pub cron_tasks: Option<i64>,
    pub mcp_servers: Option<i64>,
}

impl OrgQuotas {
    pub fn limit(&self, quota: Quota) -> Option<i64> {
        match quota {
            Quota::RequestsPerMinute => self.requests_per_minute,
            Quota::ConcurrentTurns => self.concurrent_turns,
            Quota::TokensPerDay => self.tokens_per_day,
            Quota::TokensPerMonth => self.tokens_per_month,
            Quota::CronTasks => self.cron_tasks,
            Quota::McpServers => self.mcp_servers,
        }
    }

    fn slot(&mut self, quota: Quota) -> &mut Option<i64> {
        match quota {
            Quota::RequestsPerMinute => &mut self.requests_per_minute,
            Quota::ConcurrentTurns => &mut self.concurrent_turns,
            Quota::TokensPerDay => &mut self.tokens_per_day,
            Quota::TokensPerMonth => &mut self.tokens_per_month,
            Quota::CronTasks => &mut self.cron_tasks,
            Quota::McpServers => &mut self.mcp_servers,
        }
    }

    /// True when no limit applies to accepting a message (the intake's checks are skipped).
    pub fn intake_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.concurrent_turns.is_none()
            && self.tokens_per_day.is_none()
            && self.tokens_per_month.is_none()
    }

    /// These quotas with `patch` applied.
    pub fn patched(mut self, patch: &QuotaPatch) -> Result<Self, StoreError> {
        for (quota, limit) in &patch.changes {
            if limit.is_some_and(|limit| limit < 0) {
                return Err(StoreError::Rejected("a quota's limit must be 0 or more"));
            }
            *self.slot(*quota) = *limit;
        }
        Ok(self)
    }
}

/// Changes to an org's quotas: each named quota gets the limit (`None`: unlimited); the
/// others stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaPatch {
    pub changes: Vec<(Quota, Option<i64>)>,
}

impl QuotaPatch {
    /// Every quota set to `quotas`' limit (a replacement, as `PUT` makes).
    pub fn replace_with(quotas: &OrgQuotas) -> Self {
        Self {
            changes: Quota::ALL
                .iter()
                .map(|quota| (*quota, quotas.limit(*quota)))
                .collect(),
        }
    }
}

/// Every org that has a quota row, and the version of the table they were read at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaTable {
    pub version: QuotaVersion,
    pub orgs: Vec<(OrgId, OrgQuotas)>,
}

/// Changes whenever any org's quotas change: the rows' count and their latest update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaVersion {
    pub rows: i64,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A limit that was reached: which, how high it is, and when trying again makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub quota: Quota,
    pub limit: i64,
    /// Seconds until the quota can have room again (the window's end; for counts, a
    /// polite re-check interval).
    pub retry_after_secs: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.quota {
            Quota::RequestsPerMinute => "requests per minute",
            Quota::ConcurrentTurns => "concurrent turns",
            Quota::TokensPerDay => "tokens per day",
            Quota::TokensPerMonth => "tokens per month",
            Quota::CronTasks => "cron tasks",
            Quota::McpServers => "MCP servers",
        };
        write!(
            f,
            "the org's quota {} ({what}: {}) is reached; retry after {} s",
            self.quota, self.limit, self.retry_after_secs
        )
    }
}

/// How long a count quota's refusal asks the caller to wait: counts free only when
/// something is deleted, so this is a re-check interval, not a promise.
pub const COUNT_QUOTA_RETRY_SECS: u64 = 60;

/// What taking one request from the org's requests-per-minute quota found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestWindow {
    /// False when the window was already full (nothing was counted).
    pub admitted: bool,
    /// Requests counted in the window (after this one, when admitted).
    pub requests: i64,
    pub window_start: DateTime<Utc>,
    /// The database's clock when it counted, which every gateway shares.
    pub now: DateTime<Utc>,
}

impl RequestWindow {
    /// When the window frees: the next UTC minute.
    pub fn window_end(&self) -> DateTime<Utc> {
        self.window_start + TimeDelta::minutes(1)
    }
}

/// An org's counters, as the database's clock reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct OrgUsage {
    pub now: DateTime<Utc>,
    pub minute_start: DateTime<Utc>,
    pub requests_this_minute: i64,
    /// Turns queued, running or waiting for approval.
    pub live_turns: i64,
    pub tokens_today: i64,
    pub tokens_this_month: i64,
    pub cron_tasks: i64,
    /// The org's own MCP servers.
    pub mcp_servers: i64,
}

/// The start of the UTC day and month of `now`.
pub fn day_and_month_start(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = Utc
        .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .unwrap_or(now);
    let month = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (day, month)
}

/// The start of the next UTC day and month after `now` (when token quotas reset).
pub fn next_day_and_month(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let (day, month) = day_and_month_start(now);
    let next_month = if month.month() == 12 {
        Utc.with_ymd_and_hms(month.year() + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(month.year(), month.month() + 1, 1, 0, 0, 0)
    };
    (
        day + TimeDelta::days(1),
        next_month.single().unwrap_or(month),
    )
}

/// Whole seconds from `now` until `then`, at least 1.
pub fn seconds_until(now: DateTime<Utc>, then: DateTime<Utc>) -> u64 {
    let millis = u64::try_from((then - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1_000).max(1)
}

/// `quota_room`'s verdict for an org at `limit` holding `current` things.
pub(crate) fn room(quota: Quota, limit: Option<i64>, current: i64) -> Result<(), StoreError> {
    match limit {
        Some(limit) if current >= limit => Err(StoreError::QuotaExceeded(QuotaExceeded {
            quota,
            limit,
            retry_after_secs: COUNT_QUOTA_RETRY_SECS,
        })),
        _ => Ok(()),
    }
}

/// `org.quotas_updated`, with the limits before and after.
pub(crate) fn quotas_event(
    org_id: OrgId,
    actor: &Actor,
    before: &OrgQuotas,
    after: &OrgQuotas,
) -> crate::AuditEvent {
    record::change(
        org_id,
        actor,
        "org.quotas_updated",
        "org",
        org_id.to_string(),
        serde_json::json!({ "before": before, "after": after }),
    )
}

pub(crate) const QUOTA_COLUMNS: &str = "requests_per_minute, concurrent_turns, tokens_per_day, \
     tokens_per_month, cron_tasks, mcp_servers";

#[derive(sqlx::FromRow)]
struct QuotaRow {
    org_id: Uuid,
    #[sqlx(flatten)]
    quotas: OrgQuotas,
}

impl PgStore {
    /// The org's limits (every one unlimited when it was never given any).
    pub async fn org_quotas(&self, org_id: OrgId) -> Result<OrgQuotas, StoreError> {
        let row: Option<OrgQuotas> = sqlx::query_as(&format!(
            "SELECT {QUOTA_COLUMNS} FROM org_quotas WHERE org_id = $1"
        ))
        .bind(org_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.unwrap_or_default())
    }

    pub async fn quota_version(&self) -> Result<QuotaVersion, StoreError> {
        let (rows, updated_at): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), max(updated_at) FROM org_quotas")
                .fetch_one(&self.pool)
                .await?;
        Ok(QuotaVersion { rows, updated_at })
    }

    /// Every org's quota row, with the table's version read in the same snapshot.
    pub async fn quota_table(&self) -> Result<QuotaTable, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let (rows, updated_at): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), max(updated_at) FROM org_quotas")
                .fetch_one(&mut *tx)
                .await?;
        let orgs: Vec<QuotaRow> =
            sqlx::query_as(&format!("SELECT org_id, {QUOTA_COLUMNS} FROM org_quotas"))
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(QuotaTable {
            version: QuotaVersion { rows, updated_at },
            orgs: orgs
                .into_iter()
                .map(|row| (row.org_id.into(), row.quotas))
                .collect(),
        })
    }

    /// Applies `patch` to the org's quotas, audited (`org.quotas_updated`) in the same
    /// transaction; returns the quotas as they now are.
    pub async fn set_org_quotas(
        &self,
        org_id: OrgId,
        patch: &QuotaPatch,
        actor: &Actor,
    ) -> Result<OrgQuotas, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
            .bind(org_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("org"));
        }
        let before: OrgQuotas = sqlx::query_as(&format!(
            "SELECT {QUOTA_COLUMNS} FROM org_quotas WHERE org_id = $1 FOR UPDATE"
        ))
        .bind(org_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or_default();
        let after = before.patched(patch)?;
        sqlx::query(&format!(
            "INSERT INTO org_quotas (org_id, {QUOTA_COLUMNS}, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp()) \
             ON CONFLICT (org_id) DO UPDATE SET requests_per_minute = EXCLUDED.requests_per_minute, \
                 concurrent_turns = EXCLUDED.concurrent_turns, tokens_per_day = EXCLUDED.tokens_per_day, \
                 tokens_per_month = EXCLUDED.tokens_per_month, cron_tasks = EXCLUDED.cron_tasks, \
                 mcp_servers = EXCLUDED.mcp_servers, updated_at = EXCLUDED.updated_at"
        ))
        .bind(org_id.as_uuid())
        .bind(after.requests_per_minute)
        .bind(after.concurrent_turns)
        .bind(after.tokens_per_day)
        .bind(after.tokens_per_month)
        .bind(after.cron_tasks)
        .bind(after.mcp_servers)
        .execute(&mut *tx)
        .await?;
        let event = quotas_event(org_id, actor, &before, &after);
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Counts one request in the org's current UTC minute unless `limit` requests were
    /// counted in it already: one statement, whose row lock orders the org's concurrent
    /// requests across every gateway.
    pub async fn take_request(
        &self,
        org_id: OrgId,
        limit: i64,
    ) -> Result<RequestWindow, StoreError> {
        let (counted, requests, window_start, now): (
            Option<i64>,
            Option<i64>,
            DateTime<Utc>,
            DateTime<Utc>,
        ) = sqlx::query_as(
            "WITH clock AS (SELECT date_trunc('minute', now(), 'UTC') AS start, now() AS now), \
             counted AS ( \
                 INSERT INTO org_request_windows AS window_row (org_id, window_start, requests) \
                 SELECT $1, clock.start, 1 FROM clock WHERE $2 > 0 \
                 ON CONFLICT (org_id) DO UPDATE SET window_start = EXCLUDED.window_start, \
                     requests = CASE WHEN window_row.window_start = EXCLUDED.window_start \
                                     THEN window_row.requests + 1 ELSE 1 END \
                 WHERE window_row.window_start <> EXCLUDED.window_start OR window_row.requests < $2 \
                 RETURNING requests \
             ) \
             SELECT (SELECT requests FROM counted), \
                    (SELECT requests FROM org_request_windows, clock \
                     WHERE org_id = $1 AND window_start = clock.start), \
                    clock.start, clock.now FROM clock",
        )
        .bind(org_id.as_uuid())
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        Ok(RequestWindow {
            admitted: counted.is_some(),
            requests: counted.or(requests).unwrap_or(0),
            window_start,
            now,
        })
    }

    /// The org's turns queued, running or waiting for approval.
    pub async fn live_turns(&self, org_id: OrgId) -> Result<i64, StoreError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM turns WHERE org_id = $1 \
             AND status IN ('queued', 'running', 'waiting_approval')",
        )
        .bind(org_id.as_uuid())
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// Every counter a quota is measured against, in one statement.
    pub async fn org_usage(&self, org_id: OrgId) -> Result<OrgUsage, StoreError> {
        let usage = sqlx::query_as(
            "WITH clock AS (SELECT now() AS now, date_trunc('minute', now(), 'UTC') AS minute_start, \
                 date_trunc('day', now(), 'UTC') AS day_start, date_trunc('month', now(), 'UTC') AS month_start) \
             SELECT clock.now, clock.minute_start, \
                 coalesce((SELECT requests FROM org_request_windows \
                     WHERE org_id = $1 AND window_start = clock.minute_start), 0) AS requests_this_minute, \
                 (SELECT count(*) FROM turns WHERE org_id = $1 \
                     AND status IN ('queued', 'running', 'waiting_approval')) AS live_turns, \
                 coalesce((SELECT sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) FROM provider_calls \
                     WHERE org_id = $1 AND started_at >= clock.day_start), 0)::bigint AS tokens_today, \
                 coalesce((SELECT sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) FROM provider_calls \
                     WHERE org_id = $1 AND started_at >= clock.month_start), 0)::bigint AS tokens_this_month, \
                 (SELECT count(*) FROM cron_tasks WHERE org_id = $1) AS cron_tasks, \
                 (SELECT count(*) FROM org_config_items \
                     WHERE org_id = $1 AND kind = 'mcp_server') AS mcp_servers \
             FROM clock",
        )
        .bind(org_id.as_uuid())
        .fetch_one(&self.pool)
        .await?;
        Ok(usage)
    }

    /// Whether the org may add one more of what `quota` counts, holding `current` now:
    /// `Err(StoreError::QuotaExceeded)` when that would pass its limit. The check for
    /// count quotas whose things live outside the store's own tables.
    pub async fn quota_room(
        &self,
        org_id: OrgId,
        quota: Quota,
        current: i64,
    ) -> Result<(), StoreError> {
        room(quota, self.org_quotas(org_id).await?.limit(quota), current)
    }

    /// Within a cron task's creation: refuses when the org's `cron_tasks` quota is full.
    /// Locks the org's quota row, so concurrent creations cannot both take the last slot.
    pub(crate) async fn check_cron_room(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        org_id: OrgId,
    ) -> Result<(), StoreError> {
        let limit: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT cron_tasks FROM org_quotas WHERE org_id = $1 FOR UPDATE")
                .bind(org_id.as_uuid())
                .fetch_optional(&mut **tx)
                .await?;
        let Some((Some(limit),)) = limit else {
            return Ok(());
        };
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM cron_tasks WHERE org_id = $1")
            .bind(org_id.as_uuid())
            .fetch_one(&mut **tx)
            .await?;
        room(Quota::CronTasks, Some(limit), count)
    }

    /// Within a configuration write that already raised the org's version (and so holds
    /// the org's row lock, which orders the org's writes): refuses a new MCP server named
    /// `name` when the org's `mcp_servers` quota is full. Replacing one never counts.
    pub(crate) async fn check_mcp_server_room(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        org_id: OrgId,
        name: &str,
    ) -> Result<(), StoreError> {
        let row: Option<(Option<i64>, i64, bool)> = sqlx::query_as(
            "SELECT quota.mcp_servers, \
                 (SELECT count(*) FROM org_config_items \
                     WHERE org_id = $1 AND kind = 'mcp_server'), \
                 EXISTS (SELECT 1 FROM org_config_items \
                     WHERE org_id = $1 AND kind = 'mcp_server' AND name = $2) \
             FROM org_quotas quota WHERE quota.org_id = $1",
        )
        .bind(org_id.as_uuid())
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
        match row {
            Some((Some(limit), count, false)) => room(Quota::McpServers, Some(limit), count),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_quotas_reset_at_the_next_utc_day_and_month() {
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 30).unwrap();
        let (day, month) = next_day_and_month(now);
        assert_eq!(day, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(month, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(seconds_until(now, day), 30);
        let (day_start, month_start) = day_and_month_start(now);
        assert_eq!(
            day_start,
            Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap()
        );
        assert_eq!(
            month_start,
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn a_patch_changes_only_the_quotas_it_names_and_refuses_negative_limits() {
        let quotas = OrgQuotas {
            cron_tasks: Some(3),
            ..OrgQuotas::default()
        };
        let patch = QuotaPatch {
            changes: vec![(Quota::RequestsPerMinute, Some(10))],
        };
        let patched = quotas.patched(&patch).unwrap();
        assert_eq!(patched.requests_per_minute, Some(10));
        assert_eq!(patched.cron_tasks, Some(3));
        let negative = QuotaPatch {
            changes: vec![(Quota::CronTasks, Some(-1))],
        };
        assert!(quotas.patched(&negative).is_err());
        assert!(OrgQuotas::default().intake_unlimited());
        assert!(!patched.intake_unlimited());
    }
}
