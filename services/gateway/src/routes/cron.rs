//! `/v1/cron/...`: the org's scheduled tasks (create, list, read, edit, delete, run now),
//! their run history, and a preview of any schedule's next fire times.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Timelike, Utc};
use sable_core::{
    ConversationKey, CronTaskId, InputError, MisfirePolicy, OrgId, Schedule, SessionId,
};
use sable_runtime::Inbound;
use sable_store::{CronRunRecord, CronRunStatus, CronTarget, CronTask, CronTaskSpec, NewCronRun};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::{ApiError, AppState};

/// Fire times shown with a task.
const NEXT_FIRES: usize = 5;
/// The most fire times a preview lists.
const MAX_PREVIEW: usize = 100;
/// The most runs one history page lists.
const MAX_RUNS: i64 = 200;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/cron/tasks", post(create_task).get(list_tasks))
        .route(
            "/v1/cron/tasks/{id}",
            get(show_task).patch(edit_task).delete(delete_task),
        )
        .route("/v1/cron/tasks/{id}/run", post(run_task_now))
        .route("/v1/cron/tasks/{id}/runs", get(task_runs))
        .route("/v1/cron/preview", post(preview))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTaskBody {
    name: String,
    schedule: String,
    timezone: Option<String>,
    prompt: String,
    agent: Option<String>,
    target: Option<Value>,
    misfire: Option<String>,
    enabled: Option<bool>,
    timeout_ms: Option<i64>,
    max_retries: Option<i32>,
}

/// Every field optional; `null` clears `agent`, `target` and `timeout_ms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditTaskBody {
    name: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    prompt: Option<String>,
    #[serde(default, deserialize_with = "present")]
    agent: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    target: Option<Option<Value>>,
    misfire: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    timeout_ms: Option<Option<i64>>,
    max_retries: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    schedule: String,
    timezone: Option<String>,
    after: Option<String>,
    count: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<i64>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

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
    check_agent(&state, &task)?;
    state.store.create_cron_task(&task, &caller.actor).await?;
    Ok((StatusCode::CREATED, Json(task_json(&task, &schedule))).into_response())
}

async fn list_tasks(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let tasks = state.store.cron_tasks(caller.org_id).await?;
    let tasks: Vec<Value> = tasks.iter().map(stored_task_json).collect();
    Ok(Json(json!({ "tasks": tasks })))
}

async fn show_task(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = state
        .store
        .cron_task(caller.org_id, parse_task_id(&task_id)?)
        .await?;
    Ok(Json(stored_task_json(&task)))
}

async fn edit_task(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
    ApiJson(body): ApiJson<EditTaskBody>,
) -> Result<Json<Value>, ApiError> {
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
    check_agent(&state, &task)?;
    state.store.update_cron_task(&task, &caller.actor).await?;
    let task = state.store.cron_task(caller.org_id, task.id).await?;
    Ok(Json(task_json(&task, &schedule)))
}

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
    let body = json!({
        "turn_id": accepted.turn_id,
        "session_id": accepted.session_id,
        "scheduled_time": rfc3339(scheduled),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn task_runs(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(task_id): Path<String>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
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
    let runs: Vec<Value> = runs.iter().map(|run| run_json(&task, run, now)).collect();
    Ok(Json(json!({ "runs": runs })))
}

async fn preview(
    _caller: Authenticated,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "fires": fires })))
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

fn check_agent(state: &AppState, task: &CronTask) -> Result<(), ApiError> {
    match &task.agent {
        Some(agent) if !state.config.agents.contains(agent) => {
            Err(ApiError::UnknownAgent(agent.clone()))
        }
        _ => Ok(()),
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn stored_task_json(task: &CronTask) -> Value {
    match task.parsed_schedule() {
        Ok(schedule) => task_json(task, &schedule),
        Err(_) => {
            json!({"id": task.id, "name": task.name, "schedule": task.schedule, "next_fires": []})
        }
    }
}

fn task_json(task: &CronTask, schedule: &Schedule) -> Value {
    let next_fires: Vec<String> = task
        .next_fires(schedule, NEXT_FIRES)
        .into_iter()
        .map(|fire| schedule.local_rfc3339(fire))
        .collect();
    json!({
        "id": task.id,
        "name": task.name,
        "schedule": task.schedule,
        "timezone": task.timezone,
        "prompt": task.prompt,
        "agent": task.agent,
        "target": task.target.to_json(),
        "misfire": task.misfire,
        "enabled": task.enabled,
        "timeout_ms": task.timeout_ms,
        "max_retries": task.max_retries,
        "created_at": rfc3339(task.created_at),
        "updated_at": rfc3339(task.updated_at),
        "next_fires": next_fires,
    })
}

/// A run as the API shows it: a fired run takes its turn's status (or `timed_out` once
/// the task's timeout passed without the turn ending) and lasts until its turn ended.
fn run_json(task: &CronTask, run: &CronRunRecord, now: DateTime<Utc>) -> Value {
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
    let mut body = json!({
        "scheduled_time": rfc3339(run.scheduled_at),
        "fired_time": rfc3339(run.fired_at),
        "turn_id": run.turn_id,
        "status": status,
        "duration_ms": run.finished_at.map(|finished| (finished - run.fired_at).num_milliseconds().max(0)),
    });
    if let Some(error) = run.error.as_ref().or(run.turn_error.as_ref()) {
        body["error"] = json!(error);
    }
    body
}

/// Whole seconds: the scheduled time of a manual run, as in its idempotency key.
fn whole_seconds(time: DateTime<Utc>) -> DateTime<Utc> {
    time.with_nanosecond(0).unwrap_or(time)
}
