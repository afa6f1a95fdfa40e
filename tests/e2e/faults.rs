//! Fault injection under load: every accepted message gets exactly one reply, whatever
//! dies. Each scenario prints a report line: accepted, replies, duplicates, losses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::{Api, StackOptions, TestStack};

const SESSIONS: usize = 20;
const MESSAGES_PER_SESSION: usize = 10;
const KILLS: usize = 8;

/// Posts every conversation's messages (without waiting for replies) and returns the
/// accepted turn ids.
async fn post_load(stack: &TestStack) -> anyhow::Result<Vec<String>> {
    let sessions = (0..SESSIONS).map(|session| async move {
        let mut accepted = Vec::new();
        for message in 0..MESSAGES_PER_SESSION {
            let body = json!({"text": format!("f{session} m{message}"), "conversation": {"id": format!("fault-{session}")}});
            let (status, answer) = stack.post(0, &body).await?;
            anyhow::ensure!(status.is_success(), "{status} {answer}");
            accepted.push(answer["turn_id"].as_str().unwrap_or_default().to_owned());
        }
        anyhow::Ok(accepted)
    });
    let mut accepted = Vec::new();
    for session in futures::future::join_all(sessions).await {
        accepted.extend(session?);
    }
    Ok(accepted)
}

/// Waits for every accepted turn to end, then counts replies per turn in the store.
async fn report(
    stack: &TestStack,
    scenario: &str,
    accepted: &[String],
) -> anyhow::Result<(usize, usize)> {
    for turn_id in accepted {
        let turn = stack.final_turn(turn_id).await?;
        anyhow::ensure!(turn["status"] == "done", "turn ended badly: {turn}");
    }
    let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT t.id, (SELECT count(*) FROM messages m WHERE m.turn_id = t.id AND m.position > 0) FROM turns t",
    )
    .fetch_all(stack.database.store.pool())
    .await?;
    let replies: BTreeMap<String, i64> = rows
        .into_iter()
        .map(|(id, count)| (id.to_string(), count))
        .collect();
    let losses = accepted
        .iter()
        .filter(|turn| replies.get(*turn).copied().unwrap_or(0) == 0)
        .count();
    let duplicates: usize = replies
        .values()
        .map(|count| usize::try_from((count - 1).max(0)).unwrap_or(0))
        .sum();
    let total_replies: i64 = replies.values().sum();
    let deliveries = stack.scalar("SELECT count(*) FROM deliveries").await?;
    let line = format!(
        "fault report | {scenario} | accepted {} | replies {total_replies} | deliveries {deliveries} | duplicates {duplicates} | losses {losses}",
        accepted.len()
    );
    print_report(&line)?;
    anyhow::ensure!(
        deliveries == i64::try_from(accepted.len())?,
        "one delivery per accepted message"
    );
    Ok((duplicates, losses))
}

/// Appends the line to `SABLE_FAULT_REPORT` (which `scripts/test.sh` prints after the
/// run), or to stderr.
fn print_report(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::env::var_os("SABLE_FAULT_REPORT") {
        Some(path) => writeln!(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
            "{line}"
        )?,
        None => eprintln!("{line}"),
    }
    Ok(())
}

#[tokio::test]
async fn workers_killed_at_random_points_of_turns_lose_and_repeat_nothing() -> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 2,
        ..Default::default()
    })
    .await?;
    // Slow enough that kills land before, during and after provider calls.
    stack.provider.set_latency(Duration::from_millis(40));

    let accepted = post_load(&stack).await?;
    let mut kills = 0;
    for kill in 0..KILLS {
        // Kill once the provider has served a few more requests: the victim is mid-load,
        // at whatever point of a turn it happens to be.
        let served = stack.provider.request_count();
        let progressed =
            sable_testkit::eventually("the load to progress", Duration::from_secs(30), || async {
                stack.provider.request_count() >= served + 5
            })
            .await;
        if progressed.is_err() {
            break;
        }
        let victim = kill % stack.workers.len();
        stack.workers[victim].kill().await;
        stack.workers.remove(victim);
        stack.spawn_worker().await?;
        kills += 1;
    }

    let (duplicates, losses) =
        report(&stack, &format!("worker SIGKILL x{kills}"), &accepted).await?;
    assert_eq!((duplicates, losses), (0, 0));
    assert!(
        kills >= KILLS / 2,
        "only {kills} kills landed before the load ran out"
    );
    Ok(())
}

#[tokio::test]
async fn a_gateway_restarted_under_load_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions {
        gateways: 2,
        workers: 1,
        ..Default::default()
    })
    .await?;
    stack.provider.set_latency(Duration::from_millis(20));

    let accepted = post_load(&stack).await?;
    // The second gateway's dispatcher shares the delivery queue; kill it mid-load and
    // start a new one.
    stack.gateways[1].process.kill().await;
    stack.gateways.remove(1);
    stack.spawn_gateway().await?;

    let (duplicates, losses) = report(&stack, "gateway restart", &accepted).await?;
    assert_eq!((duplicates, losses), (0, 0));
    sable_testkit::eventually(
        "every delivery to be dispatched",
        Duration::from_secs(30),
        || async {
            stack
                .scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await
                .ok()
                == i64::try_from(accepted.len()).ok()
        },
    )
    .await?;
    Ok(())
}
