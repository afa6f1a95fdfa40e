//! The cron role: several `sable cron` replicas against one Postgres fire each
//! occurrence of a task exactly once, whoever leads and whoever is killed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use sable_core::{CronTaskId, MisfirePolicy, OrgId, Schedule};
use sable_store::{Actor, CronTarget, CronTask};
use sable_testkit::{ChildProcess, FakeToolCall, Script, wait_for};
use serde_json::{Value, json};

use crate::support::{READY_TIMEOUT, StackOptions, TestStack, assert_error};

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
    let text = http
        .get(&replica.metrics_url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
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
    stack
        .database
        .store
        .create_cron_task(&task, &Actor::system())
        .await?;
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
            Ok((
                DateTime::parse_from_rfc3339(time)?.with_timezone(&Utc),
                count,
            ))
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

    wait_for(
        "the sixtieth second to fire",
        Duration::from_secs(60),
        || async {
            let turns = turns_by_occurrence(&stack, &task).await.ok()?;
            turns.contains_key(&last).then_some(())
        },
    )
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
    assert!(
        turns.values().all(|count| *count == 1),
        "a key made two turns"
    );
    let turn_total: i64 = turns.values().sum();
    let runs = recorded_runs(&stack, &task).await?;
    assert_eq!(runs, turn_total, "one run record per turn");
    Ok(())
}

async fn task_rows(stack: &TestStack) -> anyhow::Result<i64> {
    stack.scalar("SELECT count(*) FROM cron_tasks").await
}

/// Bodies of `POST /v1/cron/tasks` that must be refused, each with the part its error
/// message must name.
fn bad_task_bodies() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"name": "x", "schedule": "0 25 * * *", "prompt": "p"}),
            "hour",
        ),
        (
            json!({"name": "x", "schedule": "*/5 * * * * * * *", "prompt": "p"}),
            "fields",
        ),
        (
            json!({"name": "x", "schedule": "@fortnightly", "prompt": "p"}),
            "unknown macro",
        ),
        (
            json!({"name": "x", "schedule": "@every soon", "prompt": "p"}),
            "@every",
        ),
        (
            json!({"name": "x", "schedule": "@at 2020-01-01T00:00:00Z", "prompt": "p"}),
            "in the past",
        ),
        (
            json!({"name": "x", "schedule": "@daily", "timezone": "Mars/Olympus", "prompt": "p"}),
            "timezone",
        ),
        (
            json!({"name": "x", "schedule": "@daily", "prompt": " "}),
            "prompt",
        ),
        (
            json!({"name": "x", "schedule": "@daily", "prompt": "p", "misfire": "twice"}),
            "misfire",
        ),
        (
            json!({"name": "x", "schedule": "@daily", "prompt": "p", "target": {"session_id": "nope"}}),
            "target",
        ),
        (
            json!({"name": "x", "schedule": "@daily", "prompt": "p", "max_retries": 99}),
            "max_retries",
        ),
        (
            json!({"name": "x", "schedule": "@daily", "prompt": "p", "colour": "red"}),
            "colour",
        ),
    ]
}

#[tokio::test]
async fn bad_cron_input_gets_422_naming_the_faulty_part_and_creates_nothing() -> anyhow::Result<()>
{
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        ..StackOptions::default()
    })
    .await?;
    let key = stack.key.clone();
    let cases = bad_task_bodies();
    for (body, part) in cases {
        let answer = stack
            .send(
                &key,
                reqwest::Method::POST,
                "/v1/cron/tasks",
                Some(body.clone()),
            )
            .await?;
        assert_error(
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(part),
            "{body}: '{message}' does not point at {part}"
        );
    }
    let unknown_agent =
        json!({"name": "x", "schedule": "@daily", "prompt": "p", "agent": "nobody"});
    let answer = stack
        .send(
            &key,
            reqwest::Method::POST,
            "/v1/cron/tasks",
            Some(unknown_agent),
        )
        .await?;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "unknown_agent");
    let answer = stack
        .send(
            &key,
            reqwest::Method::POST,
            "/v1/cron/preview",
            Some(json!({"schedule": "61 * * * *"})),
        )
        .await?;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(task_rows(&stack).await?, 0, "nothing was created");

    // A valid task, then edits that are refused leave it as it was.
    let created = stack.send(&key, reqwest::Method::POST, "/v1/cron/tasks", Some(json!({
        "name": "standup", "schedule": "0 9 * * MON-FRI", "timezone": "Europe/Berlin", "prompt": "standup time"
    }))).await?;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let path = format!(
        "/v1/cron/tasks/{}",
        created.1["id"].as_str().context("an id")?
    );
    let refused = stack
        .send(
            &key,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"schedule": "0 9 * * FUNDAY"})),
        )
        .await?;
    assert_error(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (_, unchanged) = stack.send(&key, reqwest::Method::GET, &path, None).await?;
    assert_eq!(unchanged["schedule"], "0 9 * * MON-FRI");
    Ok(())
}

#[tokio::test]
async fn cron_tasks_are_created_listed_paused_run_and_deleted_and_invisible_to_another_org()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        ..StackOptions::default()
    })
    .await?;
    let key = stack.key.clone();
    let other_org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    let other_key = stack
        .sable(&["admin", "key", "create", "--org", &other_org])
        .await?;

    let (status, task) = stack
        .send(
            &key,
            reqwest::Method::POST,
            "/v1/cron/tasks",
            Some(json!({
                "name": "nightly", "schedule": "30 2 * * *", "timezone": "America/New_York",
                "prompt": "summarise the day", "misfire": "run_once", "max_retries": 2,
                "target": {"conversation": {"id": "ops-room", "user_id": "ada"}}
            })),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let fires = task["next_fires"].as_array().context("next_fires")?;
    assert_eq!(fires.len(), 5);
    assert!(
        fires.iter().all(|fire| fire
            .as_str()
            .is_some_and(|fire| fire.contains("T02:30:00-0") || fire.contains("T03:00:00-04:00"))),
        "local times with their offset: {fires:?}"
    );
    assert_eq!(
        task["target"],
        json!({"conversation": {"id": "ops-room", "user_id": "ada"}})
    );
    let id = task["id"].as_str().context("an id")?.to_owned();
    let path = format!("/v1/cron/tasks/{id}");

    let (_, listed) = stack
        .send(&key, reqwest::Method::GET, "/v1/cron/tasks", None)
        .await?;
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(1));
    let (status, paused) = stack
        .send(
            &key,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"enabled": false})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["enabled"], false);
    assert_eq!(paused["next_fires"], json!([]));

    let (status, run) = stack
        .send(&key, reqwest::Method::POST, &format!("{path}/run"), None)
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let (_, runs) = stack
        .send(
            &key,
            reqwest::Method::GET,
            &format!("{path}/runs?limit=5"),
            None,
        )
        .await?;
    let runs = runs["runs"].as_array().context("runs")?.clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["turn_id"], run["turn_id"]);
    assert_eq!(
        runs[0]["status"], "queued",
        "no worker runs it in this test"
    );
    assert!(
        runs[0]["scheduled_time"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z'))
    );

    let (_, preview) = stack.send(&key, reqwest::Method::POST, "/v1/cron/preview", Some(json!({
        "schedule": "30 2 * * *", "timezone": "America/New_York", "after": "2026-03-07T12:00:00Z", "count": 2
    }))).await?;
    assert_eq!(
        preview,
        json!({"fires": ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]})
    );

    another_org_finds_nothing(&stack, &other_key, &path).await?;
    let (_, still) = stack.send(&key, reqwest::Method::GET, &path, None).await?;
    assert_eq!(
        still["enabled"], false,
        "the other org's PATCH changed nothing"
    );

    let (status, _) = stack
        .send(&key, reqwest::Method::DELETE, &path, None)
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let gone = stack.send(&key, reqwest::Method::GET, &path, None).await?;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

/// Every route with another org's key answers 404 for the task at `path`, and that
/// org lists no tasks.
async fn another_org_finds_nothing(
    stack: &TestStack,
    other_key: &str,
    path: &str,
) -> anyhow::Result<()> {
    for (method, route, body) in [
        (reqwest::Method::GET, path.to_owned(), None),
        (
            reqwest::Method::PATCH,
            path.to_owned(),
            Some(json!({"enabled": true})),
        ),
        (reqwest::Method::POST, format!("{path}/run"), None),
        (reqwest::Method::GET, format!("{path}/runs"), None),
        (reqwest::Method::DELETE, path.to_owned(), None),
    ] {
        let answer = stack.send(other_key, method.clone(), &route, body).await?;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    let (_, theirs) = stack
        .send(other_key, reqwest::Method::GET, "/v1/cron/tasks", None)
        .await?;
    assert_eq!(theirs["tasks"], json!([]));
    Ok(())
}

/// One fired or skipped run of a task: its scheduled time, lateness and status.
async fn run_rows(
    stack: &TestStack,
    task: &CronTask,
) -> anyhow::Result<Vec<(DateTime<Utc>, TimeDelta, String)>> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT scheduled_at, fired_at, status FROM cron_runs WHERE task_id = $1 ORDER BY scheduled_at",
    )
    .bind(task.id.as_uuid())
    .fetch_all(stack.database.store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(scheduled, fired, status)| (scheduled, fired - scheduled, status))
        .collect())
}

#[tokio::test]
async fn thirty_seconds_without_a_leader_give_one_late_run_with_run_once_and_none_with_skip()
-> anyhow::Result<()> {
    let grace = TimeDelta::seconds(2);
    let stack = TestStack::start(StackOptions {
        env: cron_env(2_000),
        ..StackOptions::default()
    })
    .await?;
    let http = stack.http.clone();
    let skip = create_task(&stack, "*/10 * * * * *", MisfirePolicy::Skip).await?;
    let run_once = create_task(&stack, "*/10 * * * * *", MisfirePolicy::RunOnce).await?;
    let mut first = spawn_replica(&stack, "cron0").await?;
    wait_for(
        "a first occurrence of both tasks",
        Duration::from_secs(30),
        || async {
            let fired = run_rows(&stack, &skip).await.ok()?.len()
                + run_rows(&stack, &run_once).await.ok()?.len();
            (fired >= 2).then_some(())
        },
    )
    .await?;
    first.process.kill().await;
    let killed_at = Utc::now();

    // No replica runs for 30 s: at least two occurrences of each task are missed.
    wait_for("30 s without a leader", Duration::from_secs(40), || async {
        (Utc::now() >= killed_at + TimeDelta::seconds(30)).then_some(())
    })
    .await?;
    let second = spawn_replica(&stack, "cron1").await?;
    let restarted_at = Utc::now();
    the_leader(&http, std::slice::from_ref(&second)).await?;
    wait_for(
        "an on-time occurrence after the restart",
        Duration::from_secs(30),
        || async {
            let rows = run_rows(&stack, &skip).await.ok()?;
            rows.iter()
                .any(|(scheduled, late, status)| {
                    *scheduled > restarted_at && *late <= grace && status == "fired"
                })
                .then_some(())
        },
    )
    .await?;

    let gap =
        |scheduled: &DateTime<Utc>| *scheduled > killed_at && *scheduled < restarted_at - grace;
    let skip_rows = run_rows(&stack, &skip).await?;
    let late_fired: Vec<_> = skip_rows
        .iter()
        .filter(|(_, late, status)| *late > grace && status == "fired")
        .collect();
    assert!(late_fired.is_empty(), "skip fired late: {late_fired:?}");
    assert!(
        skip_rows
            .iter()
            .any(|(scheduled, _, status)| gap(scheduled) && status == "skipped"),
        "skip records the missed occurrences: {skip_rows:?}"
    );
    let skip_turns = turns_by_occurrence(&stack, &skip).await?;
    assert_eq!(
        skip_turns.keys().filter(|scheduled| gap(scheduled)).count(),
        0,
        "no turn for a missed occurrence"
    );

    let once_rows = run_rows(&stack, &run_once).await?;
    let late: Vec<_> = once_rows
        .iter()
        .filter(|(_, late, status)| *late > grace && status == "fired")
        .collect();
    assert_eq!(late.len(), 1, "exactly one late run: {once_rows:?}");
    let once_turns = turns_by_occurrence(&stack, &run_once).await?;
    let in_gap: Vec<_> = once_turns
        .keys()
        .filter(|scheduled| gap(scheduled))
        .collect();
    assert_eq!(
        in_gap.len(),
        1,
        "one turn for all the missed occurrences: {in_gap:?}"
    );
    assert_eq!(
        *in_gap[0], late[0].0,
        "the late run is the latest missed occurrence"
    );
    Ok(())
}

#[tokio::test]
async fn a_task_the_automation_tool_creates_from_a_chat_turn_answers_in_that_conversation()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: cron_env(10_000),
        ..StackOptions::default()
    })
    .await?;
    let _replica = spawn_replica(&stack, "cron0").await?;
    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![FakeToolCall::new(
            "call_automation",
            "automation",
            json!({"action": "create", "name": "build status", "schedule": "@every 2s",
                   "prompt": "report the build status"}),
        )],
    });
    let (status, answer) = stack
        .post_message(
            0,
            &json!({
                "text": "every two seconds send me the build status",
                "conversation": {"id": "build-chat", "user_id": "ada"},
                "wait": true,
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let session_id = answer["session_id"]
        .as_str()
        .context("a session")?
        .to_owned();
    let chat_turn = answer["turn_id"].clone();

    let (_, tasks) = stack
        .send(&stack.key, reqwest::Method::GET, "/v1/cron/tasks", None)
        .await?;
    let tasks = tasks["tasks"].as_array().context("tasks")?.clone();
    assert_eq!(tasks.len(), 1, "the tool created one task: {tasks:?}");
    assert_eq!(tasks[0]["target"], json!({"session_id": session_id}));

    // A run's turn is answered in the same conversation: its reply is in the session.
    let messages_path = format!("/v1/sessions/{session_id}/messages");
    let reply = wait_for(
        "a run's reply in the conversation",
        Duration::from_secs(60),
        || async {
            let (_, history) = stack.get(0, &messages_path).await.ok()?;
            history["messages"].as_array()?.iter().find_map(|message| {
                let text = message["text"].as_str()?;
                let from_a_run = message["turn_id"] != chat_turn;
                (from_a_run
                    && message["role"] == "assistant"
                    && text.contains("report the build status"))
                .then(|| text.to_owned())
            })
        },
    )
    .await?;
    assert!(reply.contains("report the build status"), "{reply}");
    let task_path = format!(
        "/v1/cron/tasks/{}/runs",
        tasks[0]["id"].as_str().context("an id")?
    );
    let (_, runs) = stack
        .send(&stack.key, reqwest::Method::GET, &task_path, None)
        .await?;
    assert!(
        runs["runs"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|run| run["status"] == "done")),
        "a run is recorded done: {runs}"
    );
    Ok(())
}

/// The README's `sable admin cron` commands, as written there.
#[tokio::test]
async fn the_admin_cron_commands_add_list_run_pause_resume_and_remove_a_task() -> anyhow::Result<()>
{
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..StackOptions::default()
    })
    .await?;
    let org = stack.org_id.clone();
    let task = stack
        .sable(&[
            "admin",
            "cron",
            "add",
            "--org",
            &org,
            "--name",
            "standup",
            "--schedule",
            "0 9 * * MON-FRI",
            "--timezone",
            "Europe/Berlin",
            "--prompt",
            "post the stand-up reminder",
        ])
        .await?;
    assert!(task.parse::<CronTaskId>().is_ok(), "add printed {task:?}");
    let listed = stack
        .sable(&["admin", "cron", "list", "--org", &org])
        .await?;
    assert!(
        listed.starts_with(&task) && listed.contains("enabled\t0 9 * * MON-FRI\tEurope/Berlin"),
        "{listed}"
    );

    let turn_id = stack
        .sable(&["admin", "cron", "run", "--org", &org, &task])
        .await?;
    let turn = stack.wait_for_final_turn(&turn_id).await?;
    assert_eq!(turn["status"], "done", "{turn}");

    stack
        .sable(&["admin", "cron", "pause", "--org", &org, &task])
        .await?;
    let paused = stack
        .sable(&["admin", "cron", "list", "--org", &org])
        .await?;
    assert!(paused.contains("\tpaused\t"), "{paused}");
    stack
        .sable(&["admin", "cron", "resume", "--org", &org, &task])
        .await?;
    let resumed = stack
        .sable(&["admin", "cron", "list", "--org", &org])
        .await?;
    assert!(resumed.contains("\tenabled\t"), "{resumed}");
    stack
        .sable(&["admin", "cron", "remove", "--org", &org, &task])
        .await?;
    assert_eq!(
        stack
            .sable(&["admin", "cron", "list", "--org", &org])
            .await?,
        ""
    );

    let refused = stack
        .sable(&[
            "admin",
            "cron",
            "add",
            "--org",
            &org,
            "--name",
            "x",
            "--schedule",
            "0 25 * * *",
            "--prompt",
            "p",
        ])
        .await;
    let message = format!("{:#}", refused.expect_err("a bad schedule is refused"));
    assert!(message.contains("hour"), "{message}");
    Ok(())
}
