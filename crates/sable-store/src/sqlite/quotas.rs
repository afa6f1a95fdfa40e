//! Per-org quotas in SQLite: the same rules as Postgres, with "now" computed here and the
//! counter's read-then-write serialised by the write lock.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sable_core::OrgId;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::{begin_write, stored_time};
use crate::quotas::{QUOTA_COLUMNS, day_and_month_start, quotas_event, room};
use crate::{
    Actor, OrgQuotas, OrgUsage, Quota, QuotaPatch, QuotaTable, QuotaVersion, RequestWindow,
    StoreError,
};

#[derive(sqlx::FromRow)]
struct QuotaRow {
    org_id: Hyphenated,
    #[sqlx(flatten)]
    quotas: OrgQuotas,
}

fn minute_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now)
}

pub(crate) async fn org_quotas(pool: &SqlitePool, org_id: OrgId) -> Result<OrgQuotas, StoreError> {
    let row: Option<OrgQuotas> = sqlx::query_as(&format!(
        "SELECT {QUOTA_COLUMNS} FROM org_quotas WHERE org_id = $1"
    ))
    .bind(org_id.as_uuid().hyphenated())
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or_default())
}

async fn version_on(connection: &mut SqliteConnection) -> Result<QuotaVersion, StoreError> {
    let (rows, updated_at): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), max(updated_at) FROM org_quotas")
            .fetch_one(connection)
            .await?;
    Ok(QuotaVersion { rows, updated_at })
}

pub(crate) async fn quota_version(pool: &SqlitePool) -> Result<QuotaVersion, StoreError> {
    let mut connection = pool.acquire().await?;
    version_on(&mut connection).await
}

pub(crate) async fn quota_table(pool: &SqlitePool) -> Result<QuotaTable, StoreError> {
    let mut tx = pool.begin().await?;
    let version = version_on(&mut tx).await?;
    let rows: Vec<QuotaRow> =
        sqlx::query_as(&format!("SELECT org_id, {QUOTA_COLUMNS} FROM org_quotas"))
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(QuotaTable {
        version,
        orgs: rows
            .into_iter()
            .map(|row| (row.org_id.into_uuid().into(), row.quotas))
            .collect(),
    })
}

pub(crate) async fn set_org_quotas(
    pool: &SqlitePool,
    org_id: OrgId,
    patch: &QuotaPatch,
    actor: &Actor,
) -> Result<OrgQuotas, StoreError> {
    let org = org_id.as_uuid().hyphenated();
    let mut tx = begin_write(pool).await?;
    let exists: Option<(Hyphenated,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound("org"));
    }
    let before: OrgQuotas = sqlx::query_as(&format!(
        "SELECT {QUOTA_COLUMNS} FROM org_quotas WHERE org_id = $1"
    ))
    .bind(org)
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or_default();
    let after = before.patched(patch)?;
    let now = stored_time(Utc::now());
    sqlx::query(&format!(
        "INSERT INTO org_quotas (org_id, {QUOTA_COLUMNS}, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (org_id) DO UPDATE SET requests_per_minute = excluded.requests_per_minute, \
             concurrent_turns = excluded.concurrent_turns, tokens_per_day = excluded.tokens_per_day, \
             tokens_per_month = excluded.tokens_per_month, cron_tasks = excluded.cron_tasks, \
             mcp_servers = excluded.mcp_servers, updated_at = excluded.updated_at"
    ))
    .bind(org)
    .bind(after.requests_per_minute)
    .bind(after.concurrent_turns)
    .bind(after.tokens_per_day)
    .bind(after.tokens_per_month)
    .bind(after.cron_tasks)
    .bind(after.mcp_servers)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    insert_events(
        &mut tx,
        &[quotas_event(org_id, actor, &before, &after)],
        &now,
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub(crate) async fn take_request(
    pool: &SqlitePool,
    org_id: OrgId,
    limit: i64,
) -> Result<RequestWindow, StoreError> {
    let org = org_id.as_uuid().hyphenated();
    let mut tx = begin_write(pool).await?;
    let now = Utc::now();
    let window_start = minute_start(now);
    let current: Option<(DateTime<Utc>, i64)> =
        sqlx::query_as("SELECT window_start, requests FROM org_request_windows WHERE org_id = $1")
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
    let counted = match current {
        Some((start, requests)) if start == window_start => requests,
        _ => 0,
    };
    if counted >= limit {
        return Ok(RequestWindow {
            admitted: false,
            requests: counted,
            window_start,
            now,
        });
    }
    sqlx::query(
        "INSERT INTO org_request_windows (org_id, window_start, requests) VALUES ($1, $2, $3) \
         ON CONFLICT (org_id) DO UPDATE SET window_start = excluded.window_start, \
             requests = excluded.requests",
    )
    .bind(org)
    .bind(stored_time(window_start))
    .bind(counted + 1)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(RequestWindow {
        admitted: true,
        requests: counted + 1,
        window_start,
        now,
    })
}

pub(crate) async fn live_turns(pool: &SqlitePool, org_id: OrgId) -> Result<i64, StoreError> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM turns WHERE org_id = $1 \
         AND status IN ('queued', 'running', 'waiting_approval')",
    )
    .bind(org_id.as_uuid().hyphenated())
    .fetch_one(pool)
    .await?;
    Ok(count)
}

pub(crate) async fn org_usage(pool: &SqlitePool, org_id: OrgId) -> Result<OrgUsage, StoreError> {
    let now = Utc::now();
    let minute = minute_start(now);
    let (day, month) = day_and_month_start(now);
    let (
        requests_this_minute,
        live_turns,
        tokens_today,
        tokens_this_month,
        cron_tasks,
        mcp_servers,
    ): (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce((SELECT requests FROM org_request_windows \
                 WHERE org_id = $1 AND window_start = $2), 0), \
             (SELECT count(*) FROM turns WHERE org_id = $1 \
                 AND status IN ('queued', 'running', 'waiting_approval')), \
             coalesce((SELECT sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) \
                 FROM provider_calls WHERE org_id = $1 AND started_at >= $3), 0), \
             coalesce((SELECT sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) \
                 FROM provider_calls WHERE org_id = $1 AND started_at >= $4), 0), \
             (SELECT count(*) FROM cron_tasks WHERE org_id = $1), \
             (SELECT count(*) FROM org_config_items WHERE org_id = $1 AND kind = 'mcp_server')",
    )
    .bind(org_id.as_uuid().hyphenated())
    .bind(stored_time(minute))
    .bind(stored_time(day))
    .bind(stored_time(month))
    .fetch_one(pool)
    .await?;
    Ok(OrgUsage {
        now,
        minute_start: minute,
        requests_this_minute,
        live_turns,
        tokens_today,
        tokens_this_month,
        cron_tasks,
        mcp_servers,
    })
}

pub(crate) async fn quota_room(
    pool: &SqlitePool,
    org_id: OrgId,
    quota: Quota,
    current: i64,
) -> Result<(), StoreError> {
    room(quota, org_quotas(pool, org_id).await?.limit(quota), current)
}

/// Within a cron task's creation (holding the write lock): refuses when the org's
/// `cron_tasks` quota is full.
pub(super) async fn check_cron_room(
    connection: &mut SqliteConnection,
    org_id: OrgId,
) -> Result<(), StoreError> {
    let org = org_id.as_uuid().hyphenated();
    let limit: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT cron_tasks FROM org_quotas WHERE org_id = $1")
            .bind(org)
            .fetch_optional(&mut *connection)
            .await?;
    let Some((Some(limit),)) = limit else {
        return Ok(());
    };
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM cron_tasks WHERE org_id = $1")
        .bind(org)
        .fetch_one(&mut *connection)
        .await?;
    room(Quota::CronTasks, Some(limit), count)
}

/// Within a configuration write (holding the write lock): refuses a new MCP server named
/// `name` when the org's `mcp_servers` quota is full. Replacing one never counts.
pub(super) async fn check_mcp_server_room(
    connection: &mut SqliteConnection,
    org_id: OrgId,
    name: &str,
) -> Result<(), StoreError> {
    let row: Option<(Option<i64>, i64, bool)> = sqlx::query_as(
        "SELECT quota.mcp_servers, \
             (SELECT count(*) FROM org_config_items WHERE org_id = $1 AND kind = 'mcp_server'), \
             EXISTS (SELECT 1 FROM org_config_items \
                 WHERE org_id = $1 AND kind = 'mcp_server' AND name = $2) \
         FROM org_quotas quota WHERE quota.org_id = $1",
    )
    .bind(org_id.as_uuid().hyphenated())
    .bind(name)
    .fetch_optional(&mut *connection)
    .await?;
    match row {
        Some((Some(limit), count, false)) => room(Quota::McpServers, Some(limit), count),
        _ => Ok(()),
    }
}
