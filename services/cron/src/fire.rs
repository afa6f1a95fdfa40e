//! One leader tick: find the due tasks, work out each one's occurrences (on time or
//! missed), enqueue and record them, then move the task's next occurrence on.

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use sable_core::{MisfirePolicy, Schedule};
use sable_runtime::{Inbound, IntakeError, TurnIntake};
use sable_store::{CronRunStatus, CronTask, NewCronRun, Store};

use crate::CronConfig;
use crate::leader::{retry_pause, still_leading};

/// Occurrences of one task looked at in one tick; a task further behind skips ahead.
const MAX_OCCURRENCES_PER_TICK: usize = 10_000;

/// The occurrences of a due task, sorted by what to do with them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Occurrences {
    /// Due within the misfire grace: each fires.
    pub on_time: Vec<DateTime<Utc>>,
    /// Later than the grace: the misfire policy decides.
    pub missed: Vec<DateTime<Utc>>,
    /// The task's next occurrence after these (`None`: the schedule has no more).
    pub next: Option<DateTime<Utc>>,
}

/// Handles every due task, in order of lateness, while the lease is surely ours.
pub(crate) async fn fire_due(
    config: &CronConfig,
    store: &Store,
    intake: &TurnIntake,
    valid_until: Instant,
) {
    let now = Utc::now();
    let due = match store.due_cron_tasks(now, config.batch_size).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "cannot read the due cron tasks");
            return;
        }
    };
    for task in due {
        if !still_leading(valid_until) {
            return;
        }
        fire_task(config, store, intake, &task, now, valid_until).await;
    }
}

/// Sorts the occurrences of `task` from its stored next one up to `now`.
pub(crate) fn occurrences(
    schedule: &Schedule,
    task: &CronTask,
    now: DateTime<Utc>,
    grace: TimeDelta,
) -> Occurrences {
    let mut sorted = Occurrences {
        on_time: Vec::new(),
        missed: Vec::new(),
        next: task.next_fire_at,
    };
    let mut looked_at = 0;
    while let Some(scheduled) = sorted.next.filter(|scheduled| *scheduled <= now) {
        if now - scheduled > grace {
            sorted.missed.push(scheduled);
        } else {
            sorted.on_time.push(scheduled);
        }
        looked_at += 1;
        sorted.next = if looked_at < MAX_OCCURRENCES_PER_TICK {
            schedule.next_after(scheduled, task.anchor_at)
        } else {
            schedule.next_after(now, task.anchor_at)
        };
    }
    sorted
}

async fn fire_task(
    config: &CronConfig,
    store: &Store,
    intake: &TurnIntake,
    task: &CronTask,
    now: DateTime<Utc>,
    valid_until: Instant,
) {
    let Some(expected) = task.next_fire_at else {
        return;
    };
    let schedule = match Schedule::parse(&task.schedule, &task.timezone) {
        Ok(schedule) => schedule,
        Err(error) => {
            // Checked when stored; only a hand-edited row can get here. Stop it firing.
            tracing::error!(task_id = %task.id, %error, "a stored schedule no longer parses");
            let _ = store.advance_cron_task(task.id, expected, None).await;
            return;
        }
    };
    let grace = TimeDelta::from_std(config.misfire_grace).unwrap_or(TimeDelta::MAX);
    let occurrences = occurrences(&schedule, task, now, grace);
    let due = occurrences.on_time.len() + occurrences.missed.len();
    metrics::counter!("sable_cron_due_total").increment(due as u64);
    if let Some(latest_missed) = occurrences.missed.last().copied() {
        metrics::counter!("sable_cron_missed_total").increment(occurrences.missed.len() as u64);
        let missed = occurrences.missed.len();
        match task.misfire {
            MisfirePolicy::RunOnce => {
                if !fire_occurrence(config, store, intake, task, latest_missed).await {
                    return;
                }
            }
            MisfirePolicy::Skip => {
                record(config, store, task, latest_missed, None, CronRunStatus::Skipped, Some(format!(
                    "{missed} occurrence(s) up to this one were missed while no leader ran (misfire: skip)"
                ))).await;
            }
        }
    }
    for scheduled in occurrences.on_time {
        if !still_leading(valid_until)
            || !fire_occurrence(config, store, intake, task, scheduled).await
        {
            // Not advanced: the next leader tick (here or elsewhere) picks it up again,
            // and the idempotency key keeps what already fired from firing twice.
            return;
        }
    }
    match store
        .advance_cron_task(task.id, expected, occurrences.next)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(task_id = %task.id, "the task moved meanwhile (edit or another leader)")
        }
        Err(error) => tracing::warn!(task_id = %task.id, %error, "cannot advance the cron task"),
    }
}

/// Enqueues one occurrence and records its run. False when the store was unreachable
/// (nothing recorded; the occurrence is tried again next tick).
async fn fire_occurrence(
    config: &CronConfig,
    store: &Store,
    intake: &TurnIntake,
    task: &CronTask,
    scheduled: DateTime<Utc>,
) -> bool {
    let mut attempt = 0;
    let outcome = loop {
        match enqueue(intake, task, scheduled).await {
            Err(IntakeError::Store(error)) if error.is_unavailable() => {
                if attempt >= task.max_retries.max(0) as u32 {
                    tracing::warn!(task_id = %task.id, %error, "cannot enqueue the cron occurrence; retrying next tick");
                    return false;
                }
                tokio::time::sleep(retry_pause(attempt)).await;
                attempt += 1;
            }
            other => break other,
        }
    };
    match outcome {
        Ok(turn_id) => {
            let lag = (Utc::now() - scheduled).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("sable_cron_lag_seconds").set(lag);
            metrics::counter!("sable_cron_fired_total").increment(1);
            record(
                config,
                store,
                task,
                scheduled,
                Some(turn_id),
                CronRunStatus::Fired,
                None,
            )
            .await
        }
        Err(error) => {
            metrics::counter!("sable_cron_failed_total").increment(1);
            tracing::warn!(task_id = %task.id, %error, "a cron occurrence could not be enqueued");
            record(
                config,
                store,
                task,
                scheduled,
                None,
                CronRunStatus::Failed,
                Some(error.to_string()),
            )
            .await
        }
    }
}

/// The task's prompt as a turn of its target, keyed by the occurrence.
async fn enqueue(
    intake: &TurnIntake,
    task: &CronTask,
    scheduled: DateTime<Utc>,
) -> Result<sable_core::TurnId, IntakeError> {
    let inbound = Inbound::cron_occurrence(task, scheduled)?;
    let accepted = intake
        .enqueue(inbound, vec!["channel:cron".to_owned()])
        .await?;
    Ok(accepted.turn_id)
}

/// Records the occurrence; true unless the store was unreachable.
async fn record(
    config: &CronConfig,
    store: &Store,
    task: &CronTask,
    scheduled: DateTime<Utc>,
    turn_id: Option<sable_core::TurnId>,
    status: CronRunStatus,
    error: Option<String>,
) -> bool {
    let run = NewCronRun {
        org_id: task.org_id,
        task_id: task.id,
        scheduled_at: scheduled,
        fired_at: Utc::now(),
        turn_id,
        status,
        error,
    };
    match store.record_cron_run(&run, config.run_retention).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(task_id = %task.id, %error, "cannot record the cron run");
            !error.is_unavailable()
        }
    }
}
