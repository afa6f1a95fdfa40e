//! Cron tasks, their run history and named leases (the cron leader's), on Postgres.
//! The types here are shared with the SQLite backend.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sable_core::{
    AgentId, ConversationKey, CronTaskId, InputError, MessageText, MisfirePolicy, OrgId, Schedule,
    SessionId, TurnId, TurnStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::{pg_write_events, record};
use crate::records::parse_stored;
use crate::{Actor, PgStore, StoreError};

/// Where a task's runs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronTarget {
    /// No conversation: each run starts a new session; the run record keeps its turn.
    None,
    /// An existing session (its channel delivers the replies).
    Session(SessionId),
    /// The session of this API conversation, created on its first run.
    Conversation {
        key: ConversationKey,
        user_id: Option<String>,
    },
}

impl CronTarget {
    /// The API's and the stored form: `{}`, `{"session_id"}` or
    /// `{"conversation":{"id","user_id"?}}`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::None => json!({}),
            Self::Session(session_id) => json!({"session_id": session_id}),
            Self::Conversation { key, user_id } => {
                let mut conversation = json!({"id": key.as_str()});
                if let Some(user_id) = user_id {
                    conversation["user_id"] = json!(user_id);
                }
                json!({ "conversation": conversation })
            }
        }
    }

    fn from_stored(text: &str) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Database(sqlx::Error::Decode("cron target".into()));
        let value: Value = serde_json::from_str(text).map_err(|_| corrupt())?;
        if let Some(session_id) = value.get("session_id").and_then(Value::as_str) {
            return Ok(Self::Session(session_id.parse().map_err(|_| corrupt())?));
        }
        if let Some(conversation) = value.get("conversation") {
            let key = conversation["id"].as_str().ok_or_else(corrupt)?;
            return Ok(Self::Conversation {
                key: ConversationKey::parse(key.to_owned()).map_err(|_| corrupt())?,
                user_id: conversation["user_id"].as_str().map(str::to_owned),
            });
        }
        Ok(Self::None)
    }
}

/// A scheduled task as stored. The schedule is kept as written; callers parse it with
/// `sable_core::Schedule` (it was valid when stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronTask {
    pub id: CronTaskId,
    pub org_id: OrgId,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub prompt: String,
    pub agent: Option<String>,
    pub target: CronTarget,
    pub enabled: bool,
    pub misfire: MisfirePolicy,
    pub timeout_ms: Option<i64>,
    pub max_retries: i32,
    /// Who made it through the automation tool (`user:<id>` or `session:<id>`).
    pub creator: Option<String>,
    /// Where `@every` counts from.
    pub anchor_at: DateTime<Utc>,
    /// The next occurrence not yet handled; `None` when none is left.
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What became of one occurrence when the leader handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronRunStatus {
    /// Its turn was queued; the turn's status says how it went.
    Fired,
    /// Missed while no leader ran, and dropped by the misfire policy.
    Skipped,
    /// The turn could not be queued.
    Failed,
}

impl CronRunStatus {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "fired" => Ok(Self::Fired),
            "skipped" => Ok(Self::Skipped),
            "failed" => Ok(Self::Failed),
            _ => Err(StoreError::Database(sqlx::Error::Decode(
                format!("unknown cron run status '{text}'").into(),
            ))),
        }
    }
}

/// One occurrence to record.
#[derive(Debug, Clone)]
pub struct NewCronRun {
    pub org_id: OrgId,
    pub task_id: CronTaskId,
    pub scheduled_at: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub turn_id: Option<TurnId>,
    pub status: CronRunStatus,
    pub error: Option<String>,
}

/// One entry of a task's run history, with its turn's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRunRecord {
    pub scheduled_at: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub turn_id: Option<TurnId>,
    pub status: CronRunStatus,
    pub error: Option<String>,
    /// The turn's status, when the run fired one.
    pub turn_status: Option<TurnStatus>,
    pub turn_error: Option<String>,
    /// When the turn ended, if it has.
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: Uuid,
    org_id: Uuid,
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

/// The columns of a task, in `TaskRow`'s order.
pub(crate) const TASK_COLUMNS: &str = "id, org_id, name, schedule, timezone, prompt, agent_id, target, enabled, misfire, \
     timeout_ms, max_retries, creator, anchor_at, next_fire_at, created_at, updated_at";

/// A stored task's parts, whichever backend read them.
pub(crate) struct TaskParts {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub prompt: String,
    pub agent_id: Option<String>,
    pub target: String,
    pub enabled: bool,
    pub misfire: String,
    pub timeout_ms: Option<i64>,
    pub max_retries: i32,
    pub creator: Option<String>,
    pub anchor_at: DateTime<Utc>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TaskParts {
    pub(crate) fn into_task(self) -> Result<CronTask, StoreError> {
        Ok(CronTask {
            id: self.id.into(),
            org_id: self.org_id.into(),
            name: self.name,
            schedule: self.schedule,
            timezone: self.timezone,
            prompt: self.prompt,
            agent: self.agent_id,
            target: CronTarget::from_stored(&self.target)?,
            enabled: self.enabled,
            misfire: MisfirePolicy::parse(&self.misfire).map_err(|error| {
                StoreError::Database(sqlx::Error::Decode(error.to_string().into()))
            })?,
            timeout_ms: self.timeout_ms,
            max_retries: self.max_retries,
            creator: self.creator,
            anchor_at: self.anchor_at,
            next_fire_at: self.next_fire_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl From<TaskRow> for TaskParts {
    fn from(row: TaskRow) -> Self {
        Self {
            id: row.id,
            org_id: row.org_id,
            name: row.name,
            schedule: row.schedule,
            timezone: row.timezone,
            prompt: row.prompt,
            agent_id: row.agent_id,
            target: row.target,
            enabled: row.enabled,
            misfire: row.misfire,
            timeout_ms: row.timeout_ms,
            max_retries: row.max_retries,
            creator: row.creator,
            anchor_at: row.anchor_at,
            next_fire_at: row.next_fire_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A stored run's parts, whichever backend read them.
pub(crate) struct RunParts {
    pub scheduled_at: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub turn_id: Option<Uuid>,
    pub status: String,
    pub error: Option<String>,
    pub turn_status: Option<String>,
    pub turn_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunParts {
    pub(crate) fn into_record(self) -> Result<CronRunRecord, StoreError> {
        Ok(CronRunRecord {
            scheduled_at: self.scheduled_at,
            fired_at: self.fired_at,
            turn_id: self.turn_id.map(TurnId::from),
            status: CronRunStatus::parse(&self.status)?,
            error: self.error,
            turn_status: self.turn_status.as_deref().map(parse_stored).transpose()?,
            turn_error: self.turn_error,
            finished_at: self.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RunRow {
    scheduled_at: DateTime<Utc>,
    fired_at: DateTime<Utc>,
    turn_id: Option<Uuid>,
    status: String,
    error: Option<String>,
    turn_status: Option<String>,
    turn_error: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

/// The run history query (both backends): newest first, with each run's turn.
pub(crate) const RUNS_QUERY: &str = "SELECT r.scheduled_at, r.fired_at, r.turn_id, r.status, r.error, \
     t.status AS turn_status, t.error_message AS turn_error, t.finished_at \
     FROM cron_runs r LEFT JOIN turns t ON t.id = r.turn_id \
     WHERE r.org_id = $1 AND r.task_id = $2 ORDER BY r.scheduled_at DESC LIMIT $3";

/// Keeps a task's newest `keep` runs (both backends).
pub(crate) const PRUNE_RUNS: &str = "DELETE FROM cron_runs WHERE task_id = $1 AND id NOT IN \
     (SELECT id FROM cron_runs WHERE task_id = $1 ORDER BY scheduled_at DESC LIMIT $2)";

impl PgStore {
    pub async fn create_cron_task(&self, task: &CronTask, actor: &Actor) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        PgStore::check_cron_room(&mut tx, task.org_id).await?;
        sqlx::query(&format!(
            "INSERT INTO cron_tasks ({TASK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(task.id.as_uuid())
        .bind(task.org_id.as_uuid())
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
        .bind(task.anchor_at)
        .bind(task.next_fire_at)
        .bind(task.created_at)
        .bind(task.updated_at)
        .execute(&mut *tx)
        .await?;
        let event = task_event(task, actor, "cron_task.created");
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn cron_tasks(&self, org_id: OrgId) -> Result<Vec<CronTask>, StoreError> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM cron_tasks WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org_id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| TaskParts::from(row).into_task())
            .collect()
    }

    pub async fn cron_task(
        &self,
        org_id: OrgId,
        task_id: CronTaskId,
    ) -> Result<CronTask, StoreError> {
        let row: Option<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM cron_tasks WHERE org_id = $1 AND id = $2"
        ))
        .bind(org_id.as_uuid())
        .bind(task_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        TaskParts::from(row.ok_or(StoreError::NotFound("cron task"))?).into_task()
    }

    /// Overwrites every editable field of the org's task; `NotFound` when it is not theirs.
    pub async fn update_cron_task(&self, task: &CronTask, actor: &Actor) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE cron_tasks SET name = $3, schedule = $4, timezone = $5, prompt = $6, agent_id = $7, \
             target = $8, enabled = $9, misfire = $10, timeout_ms = $11, max_retries = $12, \
             anchor_at = $13, next_fire_at = $14, updated_at = now() \
             WHERE org_id = $1 AND id = $2",
        )
        .bind(task.org_id.as_uuid())
        .bind(task.id.as_uuid())
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
        .bind(task.anchor_at)
        .bind(task.next_fire_at)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound("cron task"));
        }
        let event = task_event(task, actor, "cron_task.updated");
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the org's task and its runs; `NotFound` when it is not theirs.
    pub async fn delete_cron_task(
        &self,
        org_id: OrgId,
        task_id: CronTaskId,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM cron_tasks WHERE org_id = $1 AND id = $2")
            .bind(org_id.as_uuid())
            .bind(task_id.as_uuid())
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
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Enabled tasks of every org whose next occurrence is at or before `now`, earliest first.
    pub async fn due_cron_tasks(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CronTask>, StoreError> {
        let rows: Vec<TaskRow> = sqlx::query_as(&format!(
            "SELECT {TASK_COLUMNS} FROM cron_tasks WHERE enabled AND next_fire_at <= $1 \
             ORDER BY next_fire_at LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| TaskParts::from(row).into_task())
            .collect()
    }

    /// Moves the task's next occurrence from `expected` to `next`; false when someone
    /// else moved it first (another leader, or an edit).
    pub async fn advance_cron_task(
        &self,
        task_id: CronTaskId,
        expected: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE cron_tasks SET next_fire_at = $3 WHERE id = $1 AND next_fire_at = $2",
        )
        .bind(task_id.as_uuid())
        .bind(expected)
        .bind(next)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records an occurrence once (a repeat for the same scheduled time is ignored and
    /// answers false), keeping the task's newest `keep` runs.
    pub async fn record_cron_run(&self, run: &NewCronRun, keep: i64) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO cron_runs (id, org_id, task_id, scheduled_at, fired_at, turn_id, status, error) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM cron_tasks WHERE id = $3) \
             ON CONFLICT (task_id, scheduled_at) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(run.org_id.as_uuid())
        .bind(run.task_id.as_uuid())
        .bind(run.scheduled_at)
        .bind(run.fired_at)
        .bind(run.turn_id.map(|turn| turn.as_uuid()))
        .bind(run.status.as_str())
        .bind(&run.error)
        .execute(&self.pool)
        .await?;
        sqlx::query(PRUNE_RUNS)
            .bind(run.task_id.as_uuid())
            .bind(keep)
            .execute(&self.pool)
            .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// The org's task's newest runs first; `NotFound` when the task is not theirs.
    pub async fn cron_runs(
        &self,
        org_id: OrgId,
        task_id: CronTaskId,
        limit: i64,
    ) -> Result<Vec<CronRunRecord>, StoreError> {
        self.cron_task(org_id, task_id).await?;
        let rows: Vec<RunRow> = sqlx::query_as(RUNS_QUERY)
            .bind(org_id.as_uuid())
            .bind(task_id.as_uuid())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                RunParts {
                    scheduled_at: row.scheduled_at,
                    fired_at: row.fired_at,
                    turn_id: row.turn_id,
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

    /// Takes the named lease if it is free, expired or already `owner`'s, for `ttl`
    /// from the database's clock. True while `owner` holds it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let held: Option<(String,)> = sqlx::query_as(
            "INSERT INTO leases (name, owner, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3::double precision / 1000)) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
             WHERE leases.owner = excluded.owner OR leases.expires_at <= now() \
             RETURNING owner",
        )
        .bind(name)
        .bind(owner)
        .bind(millis)
        .fetch_optional(&self.pool)
        .await?;
        Ok(held.is_some())
    }

    /// Gives the lease up if `owner` holds it, so another replica takes over at once.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A task as a client describes it; [`CronTask::from_spec`] checks every field and
/// computes the first occurrence.
#[derive(Debug, Clone)]
pub struct CronTaskSpec {
    pub name: String,
    pub schedule: String,
    /// IANA zone; UTC when absent.
    pub timezone: Option<String>,
    pub prompt: String,
    pub agent: Option<String>,
    pub target: CronTarget,
    pub misfire: MisfirePolicy,
    pub enabled: bool,
    pub timeout_ms: Option<i64>,
    pub max_retries: i32,
    pub creator: Option<String>,
}

/// The longest a run may be given before it counts as timed out: one day.
pub const MAX_CRON_TIMEOUT_MS: i64 = 86_400_000;
/// The most enqueue retries a task may ask for.
pub const MAX_CRON_RETRIES: i32 = 10;

impl CronTask {
    /// A new task of `org_id` from a client's description, or the first field that is
    /// wrong (an unknown zone, a bad expression, an `@at` in the past…).
    pub fn from_spec(
        org_id: OrgId,
        spec: CronTaskSpec,
        now: DateTime<Utc>,
    ) -> Result<(Self, Schedule), InputError> {
        let mut task = Self {
            id: CronTaskId::new(),
            org_id,
            name: spec.name,
            schedule: spec.schedule,
            timezone: spec.timezone.unwrap_or_else(|| "UTC".into()),
            prompt: spec.prompt,
            agent: spec.agent,
            target: spec.target,
            enabled: spec.enabled,
            misfire: spec.misfire,
            timeout_ms: spec.timeout_ms,
            max_retries: spec.max_retries,
            creator: spec.creator,
            anchor_at: now,
            next_fire_at: None,
            created_at: now,
            updated_at: now,
        };
        let schedule = task.check()?;
        task.schedule = schedule.expression().to_owned();
        task.next_fire_at = Some(schedule.first_fire_after(now, now)?);
        Ok((task, schedule))
    }

    /// Checks every field after an edit and, when the schedule, zone or enabled flag
    /// changed, starts the occurrences again from `now` (a resumed task does not fire
    /// what came due while it was paused).
    pub fn apply_edit(
        &mut self,
        before: &CronTask,
        now: DateTime<Utc>,
    ) -> Result<Schedule, InputError> {
        let schedule = self.check()?;
        self.schedule = schedule.expression().to_owned();
        let rescheduled = self.schedule != before.schedule || self.timezone != before.timezone;
        if rescheduled {
            self.anchor_at = now;
            self.next_fire_at = Some(schedule.first_fire_after(now, now)?);
        } else if self.enabled && !before.enabled {
            self.next_fire_at = schedule.next_after(now, self.anchor_at);
        }
        Ok(schedule)
    }

    /// The stored schedule, parsed.
    pub fn parsed_schedule(&self) -> Result<Schedule, InputError> {
        Schedule::parse(&self.schedule, &self.timezone)
    }

    /// Up to `count` coming fire times (none while paused).
    pub fn next_fires(&self, schedule: &Schedule, count: usize) -> Vec<DateTime<Utc>> {
        match self.next_fire_at.filter(|_| self.enabled) {
            Some(next) if count > 0 => std::iter::once(next)
                .chain(schedule.upcoming(next, self.anchor_at, count - 1))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn check(&self) -> Result<Schedule, InputError> {
        let printable = |text: &str| !text.chars().any(char::is_control);
        if self.name.trim().is_empty() || self.name.len() > 200 || !printable(&self.name) {
            return Err(InputError::new("name", "must be 1 to 200 printable bytes"));
        }
        MessageText::parse(self.prompt.clone())
            .map_err(|error| InputError::new("prompt", error.reason))?;
        if let Some(agent) = &self.agent {
            AgentId::parse(agent.clone())?;
        }
        if let Some(timeout) = self.timeout_ms
            && !(1_000..=MAX_CRON_TIMEOUT_MS).contains(&timeout)
        {
            return Err(InputError::new(
                "timeout_ms",
                format!("must be 1000 to {MAX_CRON_TIMEOUT_MS}"),
            ));
        }
        if !(0..=MAX_CRON_RETRIES).contains(&self.max_retries) {
            return Err(InputError::new(
                "max_retries",
                format!("must be 0 to {MAX_CRON_RETRIES}"),
            ));
        }
        Schedule::parse(&self.schedule, &self.timezone)
    }
}

/// `cron_task.created` or `cron_task.updated`: its schedule and state, not its prompt.
pub(crate) fn task_event(
    task: &CronTask,
    actor: &Actor,
    action: &'static str,
) -> crate::AuditEvent {
    let details = serde_json::json!({
        "name": task.name,
        "schedule": task.schedule,
        "timezone": task.timezone,
        "agent": task.agent,
        "enabled": task.enabled,
    });
    record::change(
        task.org_id,
        actor,
        action,
        "cron_task",
        task.id.to_string(),
        details,
    )
}
