//! `sable admin cron list|add|pause|resume|run|remove`: an org's scheduled tasks, straight
//! against the store (the same checks as the HTTP API).

use anyhow::Context;
use chrono::{Timelike, Utc};
use clap::{Args, Subcommand};
use sable_core::{ConversationKey, CronTaskId, MisfirePolicy, OrgId, SessionId};
use sable_runtime::Inbound;
use sable_store::{Actor, CronRunStatus, CronTarget, CronTask, CronTaskSpec, NewCronRun, Store};

use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// List the org's tasks: id, enabled, schedule, zone, next fire, name.
    List(OrgArg),
    /// Create a task and print its id.
    Add(Box<AddArgs>),
    /// Stop a task firing (its history is kept).
    Pause(TaskArg),
    /// Let a paused task fire again, from its next occurrence.
    Resume(TaskArg),
    /// Fire a task once, now, and print the turn id.
    Run(TaskArg),
    /// Delete a task and its history.
    Remove(TaskArg),
}

#[derive(Debug, Args)]
pub struct OrgArg {
    #[arg(long = "org")]
    org_id: String,
}

#[derive(Debug, Args)]
pub struct TaskArg {
    #[arg(long = "org")]
    org_id: String,
    /// The task's id, as printed by `add` or `list`.
    task_id: String,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long = "org")]
    org_id: String,
    #[arg(long)]
    name: String,
    /// 5-field cron, 6 with seconds first, @daily…, @every 90s or @at <RFC 3339>.
    #[arg(long)]
    schedule: String,
    /// IANA time zone of the schedule (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// The message each run sends to the agent.
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    agent: Option<String>,
    /// Send the runs into this session.
    #[arg(long, conflicts_with = "conversation")]
    session: Option<String>,
    /// Send the runs into this API conversation (created on the first run).
    #[arg(long)]
    conversation: Option<String>,
    /// The conversation's user.
    #[arg(long, requires = "conversation")]
    user: Option<String>,
    /// skip (default) or run_once.
    #[arg(long, default_value = "skip")]
    misfire: String,
}

#[allow(clippy::print_stdout)]
pub async fn run(settings: Settings, command: CronCommand) -> anyhow::Result<()> {
    let store = crate::connect_store(&settings)?;
    match command {
        CronCommand::List(OrgArg { org_id }) => {
            for task in store.cron_tasks(org_id.parse()?).await? {
                let next = task
                    .next_fire_at
                    .filter(|_| task.enabled)
                    .map_or_else(|| "-".to_owned(), |next| next.to_rfc3339());
                let state = if task.enabled { "enabled" } else { "paused" };
                println!(
                    "{}\t{state}\t{}\t{}\t{next}\t{}",
                    task.id, task.schedule, task.timezone, task.name
                );
            }
        }
        CronCommand::Add(args) => println!("{}", add(&settings, &store, *args).await?),
        CronCommand::Pause(task) => set_enabled(&store, task, false).await?,
        CronCommand::Resume(task) => set_enabled(&store, task, true).await?,
        CronCommand::Run(task) => println!("{}", run_now(&settings, &store, task).await?),
        CronCommand::Remove(TaskArg { org_id, task_id }) => {
            store
                .delete_cron_task(org_id.parse()?, task_id.parse()?, &Actor::admin_cli())
                .await
                .context("no such task in that org")?;
        }
    }
    Ok(())
}

async fn add(settings: &Settings, store: &Store, args: AddArgs) -> anyhow::Result<CronTaskId> {
    let org_id: OrgId = args.org_id.parse()?;
    let target = match (args.session, args.conversation) {
        (Some(session), _) => CronTarget::Session(session.parse::<SessionId>()?),
        (None, Some(conversation)) => CronTarget::Conversation {
            key: ConversationKey::parse(conversation)?,
            user_id: args.user,
        },
        (None, None) => CronTarget::None,
    };
    if let CronTarget::Session(session_id) = target {
        store
            .session_info(org_id, session_id)
            .await
            .context("--session names no session of that org")?;
    }
    if let Some(agent) = &args.agent {
        let agents = crate::load_agents(settings)?;
        anyhow::ensure!(agents.contains(agent), "unknown agent '{agent}'");
    }
    let spec = CronTaskSpec {
        name: args.name,
        schedule: args.schedule,
        timezone: args.timezone,
        prompt: args.prompt,
        agent: args.agent,
        target,
        misfire: MisfirePolicy::parse(&args.misfire)?,
        enabled: true,
        timeout_ms: None,
        max_retries: 0,
        creator: None,
    };
    let (task, _) = CronTask::from_spec(org_id, spec, Utc::now())?;
    store.create_cron_task(&task, &Actor::admin_cli()).await?;
    Ok(task.id)
}

async fn set_enabled(store: &Store, task: TaskArg, enabled: bool) -> anyhow::Result<()> {
    let before = store
        .cron_task(task.org_id.parse()?, task.task_id.parse()?)
        .await
        .context("no such task in that org")?;
    let mut edited = before.clone();
    edited.enabled = enabled;
    edited.apply_edit(&before, Utc::now())?;
    store.update_cron_task(&edited, &Actor::admin_cli()).await?;
    Ok(())
}

/// Enqueues the occurrence of this second through the same intake as the cron service.
async fn run_now(settings: &Settings, store: &Store, task: TaskArg) -> anyhow::Result<String> {
    let task = store
        .cron_task(task.org_id.parse()?, task.task_id.parse()?)
        .await
        .context("no such task in that org")?;
    let bus = crate::connect_bus(settings, "sable-admin").await?;
    let agents = crate::load_agents(settings)?;
    let intake = crate::turn_intake(
        settings,
        &agents,
        store,
        &bus,
        crate::models::ModelSource::Configured,
    )?;
    let now = Utc::now();
    let scheduled = now.with_nanosecond(0).unwrap_or(now);
    let accepted = intake
        .enqueue(
            Inbound::cron_occurrence(&task, scheduled)?,
            vec!["channel:cron".to_owned()],
        )
        .await?;
    store
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
            settings.cron_run_retention,
        )
        .await?;
    Ok(accepted.turn_id.to_string())
}
