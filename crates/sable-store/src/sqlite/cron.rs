//! Cron tasks, their run history and named leases, on SQLite.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sable_core::{CronTaskId, OrgId};
use sqlx::SqlitePool;
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::{begin_write, later_by, stored_now, stored_time};
use crate::audit::record;
use crate::cron::{PRUNE_RUNS, RUNS_QUERY, RunParts, TASK_COLUMNS, TaskParts, task_event};
use crate::{Actor, CronRunRecord, CronTask, NewCronRun, StoreError};

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: Hyphenated,
    org_id: Hyphenated,
    name: String,
    schedule: String,
    timezone: String,
    prompt: String,
    agent_id: Option<String>,
    target: String,
    enabled: bool,
    misfire: String,
    timeout_ms: Option<i64>,
    max_retries: i32,
    creator: Option<String>,
    anchor_at: DateTime<Utc>,
    next_fire_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TaskRow {
    fn into_task(self) -> Result<CronTask, StoreError> {
        TaskParts {
            id: self.id.into_uuid(),
            org_id: self.org_id.into_uuid(),
            name: self.name,
            schedule: self.schedule,
            timezone: self.timezone,
            prompt: self.prompt,
            agent_id: self.agent_id,
            target: self.target,
            enabled: self.enabled,
            misfire: self.misfire,
            timeout_ms: self.timeout_ms,
            max_retries: self.max_retries,
            creator: self.creator,
            anchor_at: self.anchor_at,
            next_fire_at: self.next_fire_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
        .into_task()
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    scheduled_at: DateTime<Utc>,
    fired_at: DateTime<Utc>,
    turn_id: Option<Hyphenated>,
    status: String,
    error: Option<String>,
    turn_status: Option<String>,
    turn_error: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

pub(crate) async fn create_cron_task(
    pool: &SqlitePool,
    task: &CronTask,
    actor: &Actor,
) -> Result<(), StoreError> {
    let mut tx = begin_write(pool).await?;
    super::quotas::check_cron_room(&mut tx, task.org_id).await?;
    sqlx::query(&format!(
        "INSERT INTO cron_tasks ({TASK_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    ))
    .bind(task.id.as_uuid().hyphenated())
    .bind(task.org_id.as_uuid().hyphenated())
    .bind(&task.name)
    .bind(&task.schedule)
    .bind(&task.timezone)
    .bind(&task.prompt)
    .bind(&task.agent)
    .bind(task.target.to_json().to_string())
    .bind(task.enabled)
    .bind(task.misfire.as_str())
    .bind(task.timeout_ms)
    .bind(task.max_retries)
    .bind(&task.creator)
    .bind(stored_time(task.anchor_at))
    .bind(task.next_fire_at.map(stored_time))
    .bind(stored_time(task.created_at))
    .bind(stored_time(task.updated_at))
    .execute(&mut *tx)
    .await?;
    let event = task_event(task, actor, "cron_task.created");
    insert_events(&mut tx, &[event], &stored_now()).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn cron_tasks(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<Vec<CronTask>, StoreError> {
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM cron_tasks WHERE org_id = $1 ORDER BY created_at, id"
    ))
    .bind(org_id.as_uuid().hyphenated())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TaskRow::into_task).collect()
}

pub(crate) async fn cron_task(
    pool: &SqlitePool,
    org_id: OrgId,
    task_id: CronTaskId,
) -> Result<CronTask, StoreError> {
    let row: Option<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM cron_tasks WHERE org_id = $1 AND id = $2"
    ))
    .bind(org_id.as_uuid().hyphenated())
    .bind(task_id.as_uuid().hyphenated())
    .fetch_optional(pool)
    .await?;
    row.ok_or(StoreError::NotFound("cron task"))?.into_task()
}

pub(crate) async fn update_cron_task(
    pool: &SqlitePool,
    task: &CronTask,
    actor: &Actor,
) -> Result<(), StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let updated = sqlx::query(
        "UPDATE cron_tasks SET name = $3, schedule = $4, timezone = $5, prompt = $6, agent_id = $7, \
         target = $8, enabled = $9, misfire = $10, timeout_ms = $11, max_retries = $12, \
         anchor_at = $13, next_fire_at = $14, updated_at = $15 \
         WHERE org_id = $1 AND id = $2",
    )
    .bind(task.org_id.as_uuid().hyphenated())
    .bind(task.id.as_uuid().hyphenated())
    .bind(&task.name)
    .bind(&task.schedule)
    .bind(&task.timezone)
    .bind(&task.prompt)
    .bind(&task.agent)
    .bind(task.target.to_json().to_string())
    .bind(task.enabled)
    .bind(task.misfire.as_str())
    .bind(task.timeout_ms)
    .bind(task.max_retries)
    .bind(stored_time(task.anchor_at))
    .bind(task.next_fire_at.map(stored_time))
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(StoreError::NotFound("cron task"));
    }
    let event = task_event(task, actor, "cron_task.updated");
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn delete_cron_task(
    pool: &SqlitePool,
    org_id: OrgId,
    task_id: CronTaskId,
    actor: &Actor,
) -> Result<(), StoreError> {
    let mut tx = begin_write(pool).await?;
    let deleted = sqlx::query("DELETE FROM cron_tasks WHERE org_id = $1 AND id = $2")
        .bind(org_id.as_uuid().hyphenated())
        .bind(task_id.as_uuid().hyphenated())
        .execute(&mut *tx)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("cron task"));
    }
    let event = record::change(
        org_id,
        actor,
        "cron_task.deleted",
        "cron_task",
        task_id.to_string(),
        serde_json::json!({}),
    );
    insert_events(&mut tx, &[event], &stored_now()).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn due_cron_tasks(
    pool: &SqlitePool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CronTask>, StoreError> {
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM cron_tasks WHERE enabled AND next_fire_at <= $1 \
         ORDER BY next_fire_at LIMIT $2"
    ))
    .bind(stored_time(now))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TaskRow::into_task).collect()
}

pub(crate) async fn advance_cron_task(
    pool: &SqlitePool,
    task_id: CronTaskId,
    expected: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Result<bool, StoreError> {
    let updated =
        sqlx::query("UPDATE cron_tasks SET next_fire_at = $3 WHERE id = $1 AND next_fire_at = $2")
            .bind(task_id.as_uuid().hyphenated())
            .bind(stored_time(expected))
            .bind(next.map(stored_time))
            .execute(pool)
            .await?;
    Ok(updated.rows_affected() == 1)
}

pub(crate) async fn record_cron_run(
    pool: &SqlitePool,
    run: &NewCronRun,
    keep: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO cron_runs (id, org_id, task_id, scheduled_at, fired_at, turn_id, status, error) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM cron_tasks WHERE id = $3) \
         ON CONFLICT (task_id, scheduled_at) DO NOTHING",
    )
    .bind(Uuid::now_v7().hyphenated())
    .bind(run.org_id.as_uuid().hyphenated())
    .bind(run.task_id.as_uuid().hyphenated())
    .bind(stored_time(run.scheduled_at))
    .bind(stored_time(run.fired_at))
    .bind(run.turn_id.map(|turn| turn.as_uuid().hyphenated()))
    .bind(run.status.as_str())
    .bind(&run.error)
    .execute(pool)
    .await?;
    sqlx::query(PRUNE_RUNS)
        .bind(run.task_id.as_uuid().hyphenated())
        .bind(keep)
        .execute(pool)
        .await?;
    Ok(inserted.rows_affected() == 1)
}

pub(crate) async fn cron_runs(
    pool: &SqlitePool,
    org_id: OrgId,
    task_id: CronTaskId,
    limit: i64,
) -> Result<Vec<CronRunRecord>, StoreError> {
    cron_task(pool, org_id, task_id).await?;
    let rows: Vec<RunRow> = sqlx::query_as(RUNS_QUERY)
        .bind(org_id.as_uuid().hyphenated())
        .bind(task_id.as_uuid().hyphenated())
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|row| {
            RunParts {
                scheduled_at: row.scheduled_at,
                fired_at: row.fired_at,
                turn_id: row.turn_id.map(Hyphenated::into_uuid),
                status: row.status,
                error: row.error,
                turn_status: row.turn_status,
                turn_error: row.turn_error,
                finished_at: row.finished_at,
            }
            .into_record()
        })
        .collect()
}

pub(crate) async fn acquire_lease(
    pool: &SqlitePool,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let held: Option<(String,)> = sqlx::query_as(
        "INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
         WHERE leases.owner = excluded.owner OR leases.expires_at <= $4 \
         RETURNING owner",
    )
    .bind(name)
    .bind(owner)
    .bind(stored_time(later_by(now, ttl)))
    .bind(stored_time(now))
    .fetch_optional(pool)
    .await?;
    Ok(held.is_some())
}

pub(crate) async fn release_lease(
    pool: &SqlitePool,
    name: &str,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
        .bind(name)
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(())
}
