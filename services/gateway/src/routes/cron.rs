//! `/v1/cron/...`: the org's scheduled tasks (create, list, read, edit, delete, run now),
//! their run history, and a preview of any schedule's next fire times.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Timelike, Utc};
use sable_core::{
    ConversationKey, CronTaskId, InputError, MisfirePolicy, OrgId, Schedule, SessionId,
};
use sable_runtime::Inbound;
use sable_store::{CronRunRecord, CronRunStatus, CronTarget, CronTask, CronTaskSpec, NewCronRun};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// Fire times shown with a task.
const NEXT_FIRES: usize = 5;
/// The most fire times a preview lists.
const MAX_PREVIEW: usize = 100;
/// The most runs one history page lists.
const MAX_RUNS: i64 = 200;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(show_task, edit_task, delete_task))
        .routes(routes!(run_task_now))
        .routes(routes!(task_runs))
        .routes(routes!(preview))
}

/// A scheduled task: a prompt sent to an agent at each fire time of its schedule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTaskBody {
    name: String,
    /// A cron expression (5 fields, or 6 with seconds first), an `@yearly`..`@hourly`
    /// macro, or `@every <duration>`.
    schedule: String,
    /// An IANA time zone (`UTC` by default).
    timezone: Option<String>,
    prompt: String,
    agent: Option<String>,
    /// Where runs go: none (`{}` or `null`, a new session each run),
    /// `{"session_id"}` or `{"conversation":{"id","user_id"?}}`.
    target: Option<Value>,
    /// `skip` (default) or `run_once`: what a missed fire time becomes.
    #[schema(pattern = "^(skip|run_once)$")]
    misfire: Option<String>,
    enabled: Option<bool>,
    timeout_ms: Option<i64>,
    max_retries: Option<i32>,
}

/// Every field optional; `null` clears `agent`, `target` and `timeout_ms`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditTaskBody {
    name: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    prompt: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    agent: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    target: Option<Option<Value>>,
    misfire: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    timeout_ms: Option<Option<i64>>,
    max_retries: Option<i32>,
}

/// A schedule whose next fire times to show.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewBody {
    schedule: String,
    timezone: Option<String>,
    /// An RFC 3339 time; now by default.
    after: Option<String>,
    /// 1 to 100 (5 by default).
    #[schema(minimum = 1, maximum = 100)]
    count: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Runs to list, 1 to 200 (20 by default).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskList {
    tasks: Vec<TaskView>,
}

/// A task as the API shows it, with its next fire times (local RFC 3339).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskView {
    #[schema(value_type = uuid::Uuid)]
    id: CronTaskId,
    name: String,
    schedule: String,
    timezone: String,
    prompt: String,
    agent: Option<String>,
    /// `{}`, `{"session_id"}` or `{"conversation":{"id","user_id"?}}`.
    target: Value,
    /// `skip` or `run_once`.
    #[schema(value_type = String)]
    misfire: MisfirePolicy,
    enabled: bool,
    timeout_ms: Option<i64>,
    max_retries: i32,
    created_at: String,
    updated_at: String,
    next_fires: Vec<String>,
}

/// A manual run, queued.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunQueued {
    #[schema(value_type = uuid::Uuid)]
    turn_id: sable_core::TurnId,
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    scheduled_time: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunList {
    runs: Vec<RunView>,
}

/// One occurrence of a task.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunView {
    scheduled_time: String,
    fired_time: String,
    #[schema(value_type = Option<uuid::Uuid>)]
    turn_id: Option<sable_core::TurnId>,
    /// `skipped`, `failed`, `timed_out`, or the turn's status.
    status: String,
    duration_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Fires {
    /// Local RFC 3339 times.
    fires: Vec<String>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Makes a task.
#[utoipa::path(
    post,
    path = "/v1/cron/tasks",
    tag = "cron",
    security(("api_key" = [])),
    request_body = CreateTaskBody,
    responses(
        (status = 201, description = "The task", body = TaskView),
        (status = 429, description = "The org's `cron_tasks` quota is reached", body = crate::error::ErrorBody),
    ),
)]
async fn create_task(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateTaskBody>,
) -> Result<Response, ApiError> {
    let target = parse_target(&state, caller.org_id, body.target).await?;
    let spec = CronTaskSpec {
        name: body.name,
        schedule: body.schedule,
        timezone: body.timezone,
        prompt: body.prompt,
        agent: body.agent,
        target,
        misfire: body
            .misfire
            .as_deref()
            .map(MisfirePolicy::parse)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default(),
        enabled: body.enabled.unwrap_or(true),
        timeout_ms: body.timeout_ms,
        max_retries: body.max_retries.unwrap_or(0),
        creator: None,
    };
    let (task, schedule) = CronTask::from_spec(caller.org_id, spec, Utc::now()).map_err(invalid)?;
    check_agent(&state, &task).await?;
    state.store.create_cron_task(&task, &caller.actor).await?;
    Ok((StatusCode::CREATED, Json(task_view(&task, Some(&schedule)))).into_response())
}

/// The org's tasks.
#[utoipa::path(
    get,
    path = "/v1/cron/tasks",
    tag = "cron",
    security(("api_key" = [])),
    responses((status = 200, description = "The tasks", body = TaskList)),
)]
async fn list_tasks(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<TaskList>, ApiError> {
    let tasks = state.store.cron_tasks(caller.org_id).await?;
    let tasks = tasks.iter().map(stored_task_view).collect();
    Ok(Json(TaskList { tasks }))
}

/// One task.
#[utoipa::path(
    get,
    path = "/v1/cron/tasks/{id}",
    tag = "cron",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 404, description = "No task of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn show_task(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let task = state
        .store
        .cron_task(caller.org_id, parse_task_id(&task_id)?)
        .await?;
    Ok(Json(stored_task_view(&task)))
}

/// Changes some of a task's fields.
#[utoipa::path(
    patch,
    path = "/v1/cron/tasks/{id}",
    tag = "cron",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The task's id")),
    request_body = EditTaskBody,
    responses(
        (status = 200, description = "The task as changed", body = TaskView),
        (status = 404, description = "No task of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn edit_task(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
    ApiJson(body): ApiJson<EditTaskBody>,
) -> Result<Json<TaskView>, ApiError> {
    let before = state
        .store
        .cron_task(caller.org_id, parse_task_id(&task_id)?)
        .await?;
    let mut task = before.clone();
    if let Some(target) = body.target {
        task.target = parse_target(&state, caller.org_id, target).await?;
    }
    task.name = body.name.unwrap_or(task.name);
    task.schedule = body.schedule.unwrap_or(task.schedule);
    task.timezone = body.timezone.unwrap_or(task.timezone);
    task.prompt = body.prompt.unwrap_or(task.prompt);
    task.agent = body.agent.unwrap_or(task.agent);
    task.enabled = body.enabled.unwrap_or(task.enabled);
    task.timeout_ms = body.timeout_ms.unwrap_or(task.timeout_ms);
    task.max_retries = body.max_retries.unwrap_or(task.max_retries);
    if let Some(misfire) = body.misfire {
        task.misfire = MisfirePolicy::parse(&misfire).map_err(invalid)?;
    }
    let schedule = task.apply_edit(&before, Utc::now()).map_err(invalid)?;
    check_agent(&state, &task).await?;
    state.store.update_cron_task(&task, &caller.actor).await?;
    let task = state.store.cron_task(caller.org_id, task.id).await?;
    Ok(Json(task_view(&task, Some(&schedule))))
}

/// Deletes a task and its run history.
#[utoipa::path(
    delete,
    path = "/v1/cron/tasks/{id}",
    tag = "cron",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No task of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn delete_task(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_cron_task(caller.org_id, parse_task_id(&task_id)?, &caller.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fires the task once, now (whether enabled or not), as the occurrence of this second.
#[utoipa::path(
    post,
    path = "/v1/cron/tasks/{id}/run",
    tag = "cron",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 202, description = "The run's turn is queued", body = RunQueued),
        (status = 404, description = "No task of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn run_task_now(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let task = state
        .store
        .cron_task(caller.org_id, parse_task_id(&task_id)?)
        .await?;
    let now = Utc::now();
    let scheduled = whole_seconds(now);
    let inbound = Inbound::cron_occurrence(&task, scheduled).map_err(invalid)?;
    let accepted = state
        .intake
        .enqueue(inbound, vec!["channel:cron".to_owned()])
        .await?;
    state
        .store
        .record_cron_run(
            &NewCronRun {
                org_id: task.org_id,
                task_id: task.id,
                scheduled_at: scheduled,
                fired_at: now,
                turn_id: Some(accepted.turn_id),
                status: CronRunStatus::Fired,
                error: None,
            },
            MAX_RUNS,
        )
        .await?;
    let body = RunQueued {
        turn_id: accepted.turn_id,
        session_id: accepted.session_id,
        scheduled_time: rfc3339(scheduled),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// A task's runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/cron/tasks/{id}/runs",
    tag = "cron",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The task's id"), RunsQuery),
    responses(
        (status = 200, description = "The runs", body = RunList),
        (status = 404, description = "No task of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn task_runs(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let task_id = parse_task_id(&task_id)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_RUNS).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit: must be 1 to {MAX_RUNS}"
        )));
    }
    let task = state.store.cron_task(caller.org_id, task_id).await?;
    let runs = state.store.cron_runs(caller.org_id, task_id, limit).await?;
    let now = Utc::now();
    let runs = runs.iter().map(|run| run_view(&task, run, now)).collect();
    Ok(Json(RunList { runs }))
}

/// The next fire times of any schedule.
#[utoipa::path(
    post,
    path = "/v1/cron/preview",
    tag = "cron",
    security(("api_key" = [])),
    request_body = PreviewBody,
    responses((status = 200, description = "The fire times", body = Fires)),
)]
async fn preview(
    _caller: Authenticated,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<Fires>, ApiError> {
    let schedule = Schedule::parse(&body.schedule, body.timezone.as_deref().unwrap_or("UTC"))
        .map_err(invalid)?;
    let after = match body.after {
        Some(after) => DateTime::parse_from_rfc3339(&after)
            .map_err(|error| {
                ApiError::Validation(format!("after: '{after}' is not an RFC 3339 time: {error}"))
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let count = body.count.unwrap_or(NEXT_FIRES);
    if !(1..=MAX_PREVIEW).contains(&count) {
        return Err(ApiError::Validation(format!(
            "count: must be 1 to {MAX_PREVIEW}"
        )));
    }
    schedule.first_fire_after(after, after).map_err(invalid)?;
    let fires: Vec<String> = schedule
        .upcoming(after, after, count)
        .into_iter()
        .map(|fire| schedule.local_rfc3339(fire))
        .collect();
    Ok(Json(Fires { fires }))
}

fn invalid(error: InputError) -> ApiError {
    ApiError::Validation(error.to_string())
}

/// A malformed id cannot name one of the caller's tasks: 404, like another org's.
fn parse_task_id(text: &str) -> Result<CronTaskId, ApiError> {
    text.parse().map_err(|_| ApiError::NotFound("cron task"))
}

/// `null` / `{}` (none), `{"session_id"}` (one of the caller's sessions) or
/// `{"conversation":{"id","user_id"?}}`.
async fn parse_target(
    state: &AppState,
    org_id: OrgId,
    target: Option<Value>,
) -> Result<CronTarget, ApiError> {
    let bad = |reason: &str| ApiError::Validation(format!("target: {reason}"));
    let Some(target) = target.filter(|target| !target.is_null()) else {
        return Ok(CronTarget::None);
    };
    let Some(object) = target.as_object() else {
        return Err(bad("must be an object"));
    };
    match (object.get("session_id"), object.get("conversation")) {
        (None, None) if object.is_empty() => Ok(CronTarget::None),
        (Some(session_id), None) if object.len() == 1 => {
            let session_id: SessionId = session_id
                .as_str()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| bad("session_id is not a session id"))?;
            match state.store.session_info(org_id, session_id).await {
                Ok(_) => Ok(CronTarget::Session(session_id)),
                Err(sable_store::StoreError::NotFound(_)) => {
                    Err(bad("session_id names no session of this org"))
                }
                Err(error) => Err(error.into()),
            }
        }
        (None, Some(conversation)) if object.len() == 1 => {
            let id = conversation["id"]
                .as_str()
                .ok_or_else(|| bad("conversation.id is required"))?;
            let key = ConversationKey::parse(id.to_owned()).map_err(invalid)?;
            let user_id = match &conversation["user_id"] {
                Value::Null => None,
                Value::String(user) if !user.is_empty() && user.len() <= 200 => Some(user.clone()),
                _ => return Err(bad("conversation.user_id must be 1 to 200 bytes")),
            };
            Ok(CronTarget::Conversation { key, user_id })
        }
        _ => Err(bad(
            "give one of {\"session_id\"} or {\"conversation\":{\"id\",\"user_id\"?}} (or none)",
        )),
    }
}

async fn check_agent(state: &AppState, task: &CronTask) -> Result<(), ApiError> {
    match &task.agent {
        Some(agent)
            if !state
                .orgs()
                .current(task.org_id)
                .await?
                .agents
                .contains(agent) =>
        {
            Err(ApiError::UnknownAgent(agent.clone()))
        }
        _ => Ok(()),
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A stored task; one whose schedule no longer parses shows no fire times.
fn stored_task_view(task: &CronTask) -> TaskView {
    task_view(task, task.parsed_schedule().ok().as_ref())
}

fn task_view(task: &CronTask, schedule: Option<&Schedule>) -> TaskView {
    let next_fires = schedule
        .map(|schedule| {
            task.next_fires(schedule, NEXT_FIRES)
                .into_iter()
                .map(|fire| schedule.local_rfc3339(fire))
                .collect()
        })
        .unwrap_or_default();
    TaskView {
        id: task.id,
        name: task.name.clone(),
        schedule: task.schedule.clone(),
        timezone: task.timezone.clone(),
        prompt: task.prompt.clone(),
        agent: task.agent.clone(),
        target: task.target.to_json(),
        misfire: task.misfire,
        enabled: task.enabled,
        timeout_ms: task.timeout_ms,
        max_retries: task.max_retries,
        created_at: rfc3339(task.created_at),
        updated_at: rfc3339(task.updated_at),
        next_fires,
    }
}

/// A run as the API shows it: a fired run takes its turn's status (or `timed_out` once
/// the task's timeout passed without the turn ending) and lasts until its turn ended.
fn run_view(task: &CronTask, run: &CronRunRecord, now: DateTime<Utc>) -> RunView {
    let status = match (run.status, run.turn_status) {
        (CronRunStatus::Fired, Some(turn_status)) => {
            let overdue = task
                .timeout_ms
                .is_some_and(|timeout| (now - run.fired_at).num_milliseconds() > timeout);
            if !turn_status.is_final() && overdue {
                "timed_out".to_owned()
            } else {
                turn_status.as_str().to_owned()
            }
        }
        (status, _) => status.as_str().to_owned(),
    };
    RunView {
        scheduled_time: rfc3339(run.scheduled_at),
        fired_time: rfc3339(run.fired_at),
        turn_id: run.turn_id,
        status,
        duration_ms: run
            .finished_at
            .map(|finished| (finished - run.fired_at).num_milliseconds().max(0)),
        error: run.error.clone().or_else(|| run.turn_error.clone()),
    }
}

/// Whole seconds: the scheduled time of a manual run, as in its idempotency key.
fn whole_seconds(time: DateTime<Utc>) -> DateTime<Utc> {
    time.with_nanosecond(0).unwrap_or(time)
}
