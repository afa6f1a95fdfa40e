//! `automation`: scheduled tasks the user asks for in conversation ("every weekday at
//! 9:00 send me the build status"). A task created here targets the current session, so
//! each run's reply arrives in this conversation; the caller sees and changes only the
//! tasks they created.

use std::time::Duration;

use chrono::Utc;
use sable_core::{CronTaskId, MisfirePolicy};
use sable_store::{CronTarget, CronTask, CronTaskSpec, StoreError};
use serde_json::{Value, json};

use super::{builtin, store_failed, text_argument};
use crate::{Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk};

/// Fire times shown after a task is created or listed.
const NEXT_FIRES: usize = 3;

pub struct Automation {
    descriptor: ToolDescriptor,
}

impl Automation {
    pub fn new() -> Self {
        Self {
            descriptor: builtin(
                "automation",
                "Scheduled tasks whose runs answer in this conversation. action=create (name, schedule, prompt, optional timezone) makes one: schedule is 5-field cron ('0 9 * * MON-FRI'), 6 fields with seconds first, @daily/@hourly/@weekly/@monthly/@yearly, '@every 90s' or '@at <RFC 3339 time>'; timezone is IANA (default UTC); prompt is the message sent to you at each run. action=list shows this user's tasks; pause, resume and delete take task_id.",
                json!({
                    "type": "object",
                    "properties": {
                        "action": {"enum": ["create", "list", "pause", "resume", "delete"]},
                        "name": {"type": "string", "maxLength": 200},
                        "schedule": {"type": "string", "maxLength": 200},
                        "timezone": {"type": "string", "maxLength": 64},
                        "prompt": {"type": "string", "maxLength": 8000},
                        "task_id": {"type": "string"}
                    },
                    "required": ["action"],
                    "additionalProperties": false
                }),
                ToolRisk::Medium,
                false,
                Duration::from_secs(5),
            ),
        }
    }
}

impl Default for Automation {
    fn default() -> Self {
        Self::new()
    }
}

/// Whose tasks these are: the conversation's user, else this session.
fn creator(context: &ToolContext) -> String {
    match &context.user_id {
        Some(user) => format!("user:{user}"),
        None => format!("session:{}", context.session_id),
    }
}

fn describe(task: &CronTask) -> Value {
    let next_fires: Vec<String> = task
        .parsed_schedule()
        .map(|schedule| {
            task.next_fires(&schedule, NEXT_FIRES)
                .into_iter()
                .map(|fire| schedule.local_rfc3339(fire))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "task_id": task.id,
        "name": task.name,
        "schedule": task.schedule,
        "timezone": task.timezone,
        "prompt": task.prompt,
        "enabled": task.enabled,
        "next_fires": next_fires,
    })
}

#[async_trait::async_trait]
impl Tool for Automation {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        match text_argument(&arguments, "action")? {
            "create" => create(context, &arguments).await,
            "list" => {
                let tasks = context
                    .store
                    .cron_tasks(context.org_id)
                    .await
                    .map_err(|error| store_failed(&error))?;
                let mine = creator(context);
                let tasks: Vec<Value> = tasks
                    .iter()
                    .filter(|task| task.creator.as_deref() == Some(mine.as_str()))
                    .map(describe)
                    .collect();
                Ok(Value::Array(tasks).to_string())
            }
            action => change(context, &arguments, action).await,
        }
    }
}

async fn create(context: &ToolContext, arguments: &Value) -> Result<String, ToolError> {
    let spec = CronTaskSpec {
        name: text_argument(arguments, "name")?.to_owned(),
        schedule: text_argument(arguments, "schedule")?.to_owned(),
        timezone: arguments["timezone"].as_str().map(str::to_owned),
        prompt: text_argument(arguments, "prompt")?.to_owned(),
        agent: Some(context.agent_id.clone()),
        target: CronTarget::Session(context.session_id),
        misfire: MisfirePolicy::Skip,
        enabled: true,
        timeout_ms: None,
        max_retries: 2,
        creator: Some(creator(context)),
    };
    let (task, _) = CronTask::from_spec(context.org_id, spec, Utc::now())
        .map_err(|error| ToolError::InvalidArguments(error.to_string()))?;
    context
        .store
        .create_cron_task(&task, &context.actor())
        .await
        .map_err(|error| match error {
            // The model is told which limit it met, so it can tell the user.
            StoreError::QuotaExceeded(refused) => ToolError::Refused(refused.to_string()),
            other => store_failed(&other),
        })?;
    Ok(describe(&task).to_string())
}

/// Pauses, resumes or deletes one of the caller's own tasks.
async fn change(
    context: &ToolContext,
    arguments: &Value,
    action: &str,
) -> Result<String, ToolError> {
    let task_id: CronTaskId = text_argument(arguments, "task_id")?
        .parse()
        .map_err(|_| ToolError::InvalidArguments("task_id is not a task id".into()))?;
    let not_yours = || ToolError::Refused("no such task of this user".into());
    let before = match context.store.cron_task(context.org_id, task_id).await {
        Ok(task) if task.creator.as_deref() == Some(creator(context).as_str()) => task,
        Ok(_) | Err(StoreError::NotFound(_)) => return Err(not_yours()),
        Err(error) => return Err(store_failed(&error)),
    };
    if action == "delete" {
        context
            .store
            .delete_cron_task(context.org_id, task_id, &context.actor())
            .await
            .map_err(|error| store_failed(&error))?;
        return Ok(format!("Task {task_id} deleted."));
    }
    let mut task = before.clone();
    task.enabled = action == "resume";
    task.apply_edit(&before, Utc::now())
        .map_err(|error| ToolError::InvalidArguments(error.to_string()))?;
    context
        .store
        .update_cron_task(&task, &context.actor())
        .await
        .map_err(|error| store_failed(&error))?;
    Ok(describe(&task).to_string())
}
