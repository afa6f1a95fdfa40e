//! The cron role: several `sable cron` replicas against one Postgres fire each
//! occurrence of a task exactly once, whoever leads and whoever is killed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use sable_core::{CronTaskId, MisfirePolicy, OrgId, Schedule};
use sable_store::{CronTarget, CronTask};
use sable_testkit::{ChildProcess, wait_for};

use crate::support::{READY_TIMEOUT, StackOptions, TestStack};

/// Short timings so a failover takes about two seconds: the lease expires after 1.5 s
/// and replicas ask every 100 ms. The grace (10 s) is longer than a failover, so no
/// occurrence counts as missed.
fn cron_env(misfire_grace_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("SABLE_CRON_LEASE_TTL_MS", "1500".into()),
        ("SABLE_CRON_TICK_INTERVAL_MS", "100".into()),
        ("SABLE_CRON_MISFIRE_GRACE_MS", misfire_grace_ms.to_string()),
    ]
}

/// One running replica and where it serves its metrics.
struct Replica {
    process: ChildProcess,
    metrics_url: String,
}

async fn spawn_replica(stack: &TestStack, name: &str) -> anyhow::Result<Replica> {
    let mut process = stack.spawn_role(name, "cron", &[])?;
    let metrics_url = process
        .wait_for_line("sable cron metrics on", READY_TIMEOUT)
        .await?;
    Ok(Replica {
        process,
        metrics_url,
    })
}

/// The replica's `sable_cron_leader` gauge (None while it does not answer).
async fn leader_gauge(http: &reqwest::Client, replica: &Replica) -> Option<f64> {
    let text = http.get(&replica.metrics_url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("sable_cron_leader "))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until exactly one of `replicas` reports itself leader, and returns its index.
async fn the_leader(http: &reqwest::Client, replicas: &[Replica]) -> anyhow::Result<usize> {
    wait_for("exactly one cron leader", READY_TIMEOUT, || async {
        let mut leaders = Vec::new();
        for (index, replica) in replicas.iter().enumerate() {
            if leader_gauge(http, replica).await == Some(1.0) {
                leaders.push(index);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

/// Stores a task the way the API does (schedule checked, first occurrence computed).
async fn create_task(
    stack: &TestStack,
    schedule: &str,
    misfire: MisfirePolicy,
) -> anyhow::Result<CronTask> {
    let now = Utc::now();
    let parsed = Schedule::parse(schedule, "UTC")?;
    let task = CronTask {
        id: CronTaskId::new(),
        org_id: stack.org_id.parse::<OrgId>()?,
        name: "heartbeat".into(),
        schedule: schedule.into(),
        timezone: "UTC".into(),
        prompt: "tick".into(),
        agent: None,
        target: CronTarget::None,
        enabled: true,
        misfire,
        timeout_ms: None,
        max_retries: 2,
        creator: None,
        anchor_at: now,
        next_fire_at: Some(parsed.first_fire_after(now, now)?),
        created_at: now,
        updated_at: now,
    };
    stack.database.store.create_cron_task(&task).await?;
    Ok(task)
}

/// Turns per scheduled time, read from their idempotency keys.
async fn turns_by_occurrence(
    stack: &TestStack,
    task: &CronTask,
) -> anyhow::Result<BTreeMap<DateTime<Utc>, i64>> {
    let prefix = format!("cron:{}:", task.id);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT idempotency_key, count(*) FROM turns WHERE starts_with(idempotency_key, $1) \
         GROUP BY idempotency_key",
    )
    .bind(&prefix)
    .fetch_all(stack.database.store.pool())
    .await?;
    rows.into_iter()
        .map(|(key, count)| {
            let time = key.strip_prefix(&prefix).context("a cron key")?;
            Ok((DateTime::parse_from_rfc3339(time)?.with_timezone(&Utc), count))
        })
        .collect()
}

async fn recorded_runs(stack: &TestStack, task: &CronTask) -> anyhow::Result<i64> {
    stack
        .scalar(&format!(
            "SELECT count(*) FROM cron_runs WHERE task_id = '{}' AND status = 'fired'",
            task.id
        ))
        .await
}

#[tokio::test]
async fn three_replicas_fire_every_second_exactly_once_while_the_leader_is_killed_twice()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        env: cron_env(10_000),
        ..StackOptions::default()
    })
    .await?;
    let http = stack.http.clone();
    let mut replicas = Vec::new();
    for index in 0..3 {
        replicas.push(spawn_replica(&stack, &format!("cron{index}")).await?);
    }
    the_leader(&http, &replicas).await?;
    let task = create_task(&stack, "* * * * * *", MisfirePolicy::Skip).await?;
    let first = task.next_fire_at.context("a first occurrence")?;
    let last = first + TimeDelta::seconds(59);

    // Kill the leader after about 15 and 35 occurrences; a fresh replica replaces each.
    for (round, fired_before_kill) in [(0, 15), (1, 35)] {
        wait_for("occurrences to fire", Duration::from_secs(60), || async {
            (recorded_runs(&stack, &task).await.ok()? >= fired_before_kill).then_some(())
        })
        .await?;
        let leader = the_leader(&http, &replicas).await?;
        replicas[leader].process.kill().await;
        replicas.remove(leader);
        let new_leader = the_leader(&http, &replicas).await?;
        assert!(new_leader < replicas.len());
        replicas.push(spawn_replica(&stack, &format!("cron-replacement{round}")).await?);
    }

    wait_for("the sixtieth second to fire", Duration::from_secs(60), || async {
        let turns = turns_by_occurrence(&stack, &task).await.ok()?;
        turns.contains_key(&last).then_some(())
    })
    .await?;
    for replica in &mut replicas {
        replica.process.kill().await;
    }

    let turns = turns_by_occurrence(&stack, &task).await?;
    let mut missing = Vec::new();
    let mut second = first;
    while second <= last {
        match turns.get(&second) {
            Some(1) => {}
            Some(count) => anyhow::bail!("{second} made {count} turns"),
            None => missing.push(second),
        }
        second += TimeDelta::seconds(1);
    }
    assert!(
        missing.is_empty(),
        "occurrences without a turn (a failover is shorter than the misfire grace): {missing:?}"
    );
    assert!(turns.values().all(|count| *count == 1), "a key made two turns");
    let turn_total: i64 = turns.values().sum();
    let runs = recorded_runs(&stack, &task).await?;
    assert_eq!(runs, turn_total, "one run record per turn");
    Ok(())
}
