//! Fault injection under load: every accepted message gets exactly one reply, whatever
//! dies. Each scenario prints a report line: accepted, replies, duplicates, losses.
//!
//! Replies are counted where a user would see them: every scenario's messages use the
//! `webhook` channel, and a fake receiver keeps the first request per `Idempotency-Key`
//! (as a receiver honouring the key does). A duplicate is a second distinct reply to one
//! turn; a loss is an accepted turn whose reply never arrived. In the worker-kill and NATS
//! scenarios, clients also wait on SSE streams and count the `final` events each stream
//! brings: a second `final` is a duplicate, none (or one that is not `done`) a loss.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use sable_testkit::FakeWebhook;

use crate::support::{Api, StackOptions, TURN_TIMEOUT, TestStack};

const SESSIONS: usize = 20;
const MESSAGES_PER_SESSION: usize = 10;
const KILLS: usize = 8;

/// The named points where `workers_killed_at_named_points_of_turns_…` SIGKILLs workers.
/// `mid_tool` joins them once turns call tools.
const KILL_POINTS: [&str; 4] = [
    "before_provider_call",
    "mid_stream",
    "mid_tool",
    "after_reply_persisted",
];
const KILLS_AT_POINTS: usize = 50;
/// Conversations that get a fresh message before each of those kills.
const SESSIONS_PER_KILL: usize = 5;

/// Gateways crashed between sending a webhook reply and recording it.
const DISPATCHER_CRASHES: usize = 3;

/// What a process stopped at a fault point prints (`sable-cli/src/faults.rs`).
const FAULT_MARKER: &str = "sable fault point reached:";

/// Posts one message to each conversation of `sessions`, concurrently, and returns the
/// accepted turn ids. A post refused with 503 (Postgres down) is counted in `refused`
/// and sent again with the same idempotency key until it is accepted.
async fn post_round(
    client: &impl Api,
    channel: &str,
    tag: &str,
    round: usize,
    sessions: Range<usize>,
    refused: &AtomicUsize,
) -> anyhow::Result<Vec<String>> {
    let posts = sessions.map(|session| {
        let session = session % SESSIONS;
        let body = json!({
            "text": format!("{tag} s{session} m{round}"),
            "conversation": {"id": format!("{tag}-{session}")},
            "idempotency_key": format!("{tag}-{session}-{round}"),
            "channel": channel,
        });
        sable_testkit::wait_for("a post to be accepted", TURN_TIMEOUT, move || {
            let body = body.clone();
            async move {
                match client.post(0, &body).await {
                    Ok((status, answer)) if status.is_success() => Some(Ok(answer["turn_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned())),
                    Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        None
                    }
                    Ok((status, answer)) => Some(Err(anyhow::anyhow!("{status} {answer}"))),
                    Err(error) => Some(Err(error)),
                }
            }
        })
    });
    futures::future::join_all(posts)
        .await
        .into_iter()
        .map(|posted| posted?)
        .collect()
}

/// `MESSAGES_PER_SESSION` rounds over every conversation, one round after another.
async fn post_load(
    client: &impl Api,
    tag: &str,
    refused: &AtomicUsize,
) -> anyhow::Result<Vec<String>> {
    let mut accepted = Vec::new();
    for round in 0..MESSAGES_PER_SESSION {
        accepted.extend(post_round(client, "webhook", tag, round, 0..SESSIONS, refused).await?);
    }
    Ok(accepted)
}

/// A receiver for the scenario's replies and the environment that sends them there.
async fn webhook_receiver(
    mut env: Vec<(&'static str, String)>,
) -> anyhow::Result<(FakeWebhook, Vec<(&'static str, String)>)> {
    let webhook = FakeWebhook::start().await?;
    env.push(("SABLE_WEBHOOK_URL", webhook.url.clone()));
    Ok((webhook, env))
}

/// Settings for scenarios that kill workers every few hundred milliseconds. Short leases:
/// each kill strands its sessions for a lease lifetime. Such a kill rate interrupts some
/// turns far more often than real crashes would (and a loaded machine renews leases
/// late), so the attempt limit, which fails a turn that keeps killing workers, is raised.
fn rapid_kills_env() -> Vec<(&'static str, String)> {
    vec![
        ("SABLE_MAX_TURN_ATTEMPTS", "50".into()),
        ("SABLE_LEASE_TTL_MS", "1500".into()),
        ("SABLE_SWEEP_AFTER_MS", "500".into()),
        ("SABLE_SWEEP_INTERVAL_MS", "100".into()),
    ]
}

/// What a scenario's user received, counted at the webhook receiver.
struct Received {
    duplicates: usize,
    losses: usize,
}

/// What one waiting client's SSE stream brought: its `final` events and the last one's
/// status.
#[derive(Debug, Default)]
struct Streamed {
    finals: usize,
    status: String,
}

/// Conversations whose messages are sent as SSE streams, and messages each.
const STREAMED_CONVERSATIONS: usize = 4;
const STREAMED_MESSAGES: usize = 5;

/// Sends messages one after another on `STREAMED_CONVERSATIONS` conversations, each as an
/// SSE stream read to its end, and records what every stream brought. A post refused
/// with 503 is sent again with its idempotency key (it made no turn).
async fn stream_conversations(client: &impl Api, tag: &str) -> anyhow::Result<Vec<Streamed>> {
    let conversations = (0..STREAMED_CONVERSATIONS).map(|conversation| async move {
        let mut streams = Vec::new();
        for message in 0..STREAMED_MESSAGES {
            let body = json!({
                "text": format!("{tag} streamed c{conversation} m{message}"),
                "conversation": {"id": format!("{tag}-streamed-{conversation}")},
                "idempotency_key": format!("{tag}-streamed-{conversation}-{message}"),
            });
            streams.push(stream_one(client, &body).await?);
        }
        anyhow::Ok(streams)
    });
    let mut all = Vec::new();
    for streams in futures::future::join_all(conversations).await {
        all.extend(streams?);
    }
    Ok(all)
}

async fn stream_one(client: &impl Api, body: &serde_json::Value) -> anyhow::Result<Streamed> {
    let text = sable_testkit::wait_for("a stream to be answered", TURN_TIMEOUT, || async {
        let response = client
            .client()
            .post(format!("{}/v1/messages", client.base_url(0)))
            .bearer_auth(client.api_key())
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::OK => {
                Some(response.text().await.map_err(anyhow::Error::from))
            }
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => None,
            Ok(response) => Some(Err(anyhow::anyhow!(
                "stream refused: {}",
                response.status()
            ))),
            Err(error) => Some(Err(error.into())),
        }
    })
    .await??;
    let finals: Vec<&str> = text
        .split("event: final\ndata: ")
        .skip(1)
        .map(|rest| rest.lines().next().unwrap_or_default())
        .collect();
    let status = finals
        .last()
        .and_then(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .and_then(|data| data["status"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Streamed {
        finals: finals.len(),
        status,
    })
}

/// Waits for every accepted turn to end and every reply to be dispatched, then counts
/// the distinct replies the receiver got per turn, and the `final` events of `streams`.
async fn report(
    stack: &TestStack,
    webhook: &FakeWebhook,
    scenario: &str,
    accepted: &[String],
    streams: &[Streamed],
) -> anyhow::Result<Received> {
    for turn_id in accepted {
        let turn = stack.final_turn(turn_id).await?;
        anyhow::ensure!(turn["status"] == "done", "turn ended badly: {turn}");
    }
    all_delivered(stack, accepted.len() + streams.len()).await?;
    let received = webhook.log();
    let mut per_turn: BTreeMap<String, usize> = BTreeMap::new();
    for body in received.by_key.values() {
        *per_turn
            .entry(body["turn_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let stream_duplicates: usize = streams
        .iter()
        .map(|stream| stream.finals.saturating_sub(1))
        .sum();
    let stream_losses = streams
        .iter()
        .filter(|stream| stream.finals == 0 || stream.status != "done")
        .count();
    let duplicates: usize =
        per_turn.values().map(|count| count - 1).sum::<usize>() + stream_duplicates;
    let losses = accepted
        .iter()
        .filter(|turn| !per_turn.contains_key(*turn))
        .count()
        + stream_losses;
    let replies: usize = per_turn.values().sum();
    let deliveries = stack.scalar("SELECT count(*) FROM deliveries").await?;
    // How often the most interrupted turn was started: shows the faults hit turns.
    let max_attempt = stack
        .scalar("SELECT COALESCE(max(attempt), 0)::bigint FROM turns")
        .await?;
    let audit = audit_mismatches(stack).await?;
    let line = format!(
        "fault report | {scenario} | accepted {} | replies {replies} | deliveries {deliveries} | webhook requests {} (resends absorbed {}) | streams {} (finals {}) | duplicates {duplicates} | losses {losses} | max attempt {max_attempt} | audit mismatches {}",
        accepted.len() + streams.len(),
        received.requests,
        received.resends_absorbed(),
        streams.len(),
        streams.iter().map(|stream| stream.finals).sum::<usize>(),
        audit.len(),
    );
    print_report(&line)?;
    anyhow::ensure!(received.without_key == 0, "every webhook carries its key");
    anyhow::ensure!(
        audit.is_empty(),
        "committed work without exactly one audit event: {audit:?}"
    );
    Ok(Received { duplicates, losses })
}

/// Committed work whose audit events are missing or repeated: each check counts the rows
/// (turns, attempts, provider calls, tool calls) without exactly one matching event, and
/// events that match no row. Names the checks that found some.
async fn audit_mismatches(stack: &TestStack) -> anyhow::Result<Vec<(String, i64)>> {
    const CHECKS: [(&str, &str); 8] = [
        (
            "accepted messages",
            "SELECT count(*) FROM turns t WHERE (SELECT count(*) FROM audit_events e WHERE e.turn_id = t.id \
               AND e.action = 'message.accepted' AND e.details->>'idempotency' IN ('new', 'none')) <> 1",
        ),
        (
            "started attempts",
            "SELECT count(*) FROM turns t WHERE t.attempt <> (SELECT count(*) FROM audit_events e \
               WHERE e.turn_id = t.id AND e.action = 'turn.started')",
        ),
        (
            "ended turns",
            "SELECT count(*) FROM turns t WHERE (SELECT count(*) FROM audit_events e WHERE e.turn_id = t.id \
               AND e.action IN ('turn.finished', 'turn.failed')) <> (CASE WHEN t.status IN ('done', 'failed') THEN 1 ELSE 0 END)",
        ),
        (
            "provider calls",
            "SELECT count(*) FROM provider_calls c WHERE (SELECT count(*) FROM audit_events e \
               WHERE e.turn_id = c.turn_id AND e.action = 'provider.call' AND e.subject_id = c.profile \
                 AND (e.details->>'attempt')::int = c.turn_attempt AND (e.details->>'retry_number')::int = c.retry_number \
                 AND e.details->>'started_at' = to_char(c.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) <> 1",
        ),
        (
            "provider call events without a call",
            "SELECT (SELECT count(*) FROM audit_events WHERE action = 'provider.call') - (SELECT count(*) FROM provider_calls)",
        ),
        (
            "started tool calls",
            "SELECT count(*) FROM tool_calls c WHERE (SELECT count(*) FROM audit_events e WHERE e.turn_id = c.turn_id \
               AND e.action = 'tool.started' AND (e.details->>'round')::int = c.round \
               AND (e.details->>'position')::int = c.position) <> 1",
        ),
        (
            "ended tool calls",
            "SELECT count(*) FROM tool_calls c WHERE (SELECT count(*) FROM audit_events e WHERE e.turn_id = c.turn_id \
               AND e.action IN ('tool.completed', 'tool.failed', 'tool.rejected') AND (e.details->>'round')::int = c.round \
               AND (e.details->>'position')::int = c.position) <> (CASE WHEN c.status IN ('ok', 'error', 'denied') THEN 1 ELSE 0 END)",
        ),
        (
            "tool events without a call",
            "SELECT (SELECT count(*) FROM audit_events WHERE action = 'tool.started') - (SELECT count(*) FROM tool_calls)",
        ),
    ];
    let mut mismatches = Vec::new();
    for (check, sql) in CHECKS {
        let count = stack.scalar(sql).await?;
        if count != 0 {
            mismatches.push((check.to_owned(), count));
        }
    }
    Ok(mismatches)
}

/// Waits until the dispatcher has marked all `count` deliveries delivered.
async fn all_delivered(stack: &TestStack, count: usize) -> anyhow::Result<()> {
    sable_testkit::eventually(
        "every delivery to be dispatched",
        Duration::from_secs(30),
        || async {
            stack
                .scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await
                .ok()
                == i64::try_from(count).ok()
        },
    )
    .await
}

/// Appends the line to `SABLE_FAULT_REPORT` (which `scripts/test.sh` prints after the
/// run), or to stderr.
pub(crate) fn print_report(line: &str) -> anyhow::Result<()> {
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
    let (webhook, env) = webhook_receiver(rapid_kills_env()).await?;
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 2,
        env,
        ..Default::default()
    })
    .await?;
    // Slow enough that kills land before, during and after provider calls.
    stack.provider.set_latency(Duration::from_millis(40));

    let client = stack.client();
    let streaming = stream_conversations(&client, "random");
    let refused = AtomicUsize::new(0);
    let mut accepted = Vec::new();
    let kills = async {
        for kill in 0..KILLS {
            // A fresh round before each kill, so the load never runs out before the kills do.
            // Counted before posting: a round can be answered before `post_round` returns.
            let served = stack.provider.request_count();
            accepted.extend(
                post_round(&client, "webhook", "random", kill, 0..SESSIONS, &refused).await?,
            );
            // Kill once the provider has been asked a few more times: the victim is mid-load,
            // at whatever point of a turn it happens to be.
            sable_testkit::eventually("the load to progress", TURN_TIMEOUT, || async {
                stack.provider.request_count() >= served + 5
            })
            .await?;
            let victim = kill % stack.workers.len();
            stack.workers[victim].kill().await;
            stack.workers.remove(victim);
            stack.spawn_worker().await?;
        }
        anyhow::Ok(())
    };
    let (streams, killed) = tokio::join!(streaming, kills);
    killed?;

    let received = report(
        &stack,
        &webhook,
        &format!("worker SIGKILL x{KILLS}"),
        &accepted,
        &streams?,
    )
    .await?;
    assert_eq!((received.duplicates, received.losses), (0, 0));
    Ok(())
}

#[tokio::test]
async fn workers_killed_at_named_points_of_turns_lose_and_repeat_nothing() -> anyhow::Result<()> {
    let (webhook, env) = webhook_receiver(rapid_kills_env()).await?;
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        env,
        ..Default::default()
    })
    .await?;
    stack.provider.set_latency(Duration::from_millis(10));
    let client = stack.client();

    let mut accepted = Vec::new();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    for kill in 0..KILLS_AT_POINTS {
        // Fresh work for every victim, so each one reaches its point.
        let first = kill * SESSIONS_PER_KILL;
        let sessions = first..first + SESSIONS_PER_KILL;
        let refused = AtomicUsize::new(0);
        // `#tool`: every turn makes one tool round (the default agent offers `time`).
        accepted.extend(
            post_round(&client, "webhook", "points #tool", kill, sessions, &refused).await?,
        );
        let point = KILL_POINTS[kill % KILL_POINTS.len()];
        let victim = stack
            .spawn_worker_with(&[
                ("SABLE_FAULT_PAUSE_AT", point.to_owned()),
                // Hits that pass first: the worker stops at a different turn each time
                // (fewer than the turns just posted, so it always gets that far).
                (
                    "SABLE_FAULT_HITS_TO_PASS",
                    rand::random_range(0..SESSIONS_PER_KILL - 1).to_string(),
                ),
                // A kill interrupts at most this many turns.
                ("SABLE_WORKER_CONCURRENCY", "2".into()),
            ])
            .await?;
        let reached = victim.wait_for_line(FAULT_MARKER, TURN_TIMEOUT).await?;
        assert_eq!(reached, point);
        victim.kill().await;
        stack.workers.pop();
        *kills.entry(point).or_default() += 1;
    }
    stack.spawn_worker().await?;
    stack.spawn_worker().await?;

    let at: Vec<String> = kills
        .iter()
        .map(|(point, count)| format!("{point} {count}"))
        .collect();
    let scenario = format!(
        "worker SIGKILL at named points x{KILLS_AT_POINTS} ({})",
        at.join(", ")
    );
    let received = report(&stack, &webhook, &scenario, &accepted, &[]).await?;
    assert_eq!((received.duplicates, received.losses), (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_gateway_restarted_under_load_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let (webhook, env) = webhook_receiver(Vec::new()).await?;
    let mut stack = TestStack::start(StackOptions {
        gateways: 2,
        workers: 1,
        env,
        ..Default::default()
    })
    .await?;
    stack.provider.set_latency(Duration::from_millis(20));

    let accepted = post_load(&stack.client(), "gateway", &AtomicUsize::new(0)).await?;
    // The second gateway's dispatcher shares the delivery queue; kill it mid-load and
    // start a new one.
    stack.gateways[1].process.kill().await;
    stack.gateways.remove(1);
    stack.spawn_gateway().await?;

    let received = report(&stack, &webhook, "gateway restart", &accepted, &[]).await?;
    assert_eq!((received.duplicates, received.losses), (0, 0));
    Ok(())
}

#[tokio::test]
async fn nats_restarted_under_load_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let (webhook, env) = webhook_receiver(Vec::new()).await?;
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 2,
        env,
        ..Default::default()
    })
    .await?;
    stack.provider.set_latency(Duration::from_millis(20));
    let client = stack.client();
    let TestStack {
        nats,
        provider,
        database,
        ..
    } = &mut stack;
    let turns = || async {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM turns")
            .fetch_one(database.store.pool())
            .await
            .map_or(0, |(count,)| count)
    };

    let refused = AtomicUsize::new(0);
    let load = post_load(&client, "nats", &refused);
    let streaming = stream_conversations(&client, "nats");
    let outage = async {
        sable_testkit::eventually("the load to start", TURN_TIMEOUT, || async {
            provider.request_count() >= 20
        })
        .await?;
        // The server's own (file) JetStream store keeps the streams across the restart.
        nats.stop();
        let before = turns().await;
        sable_testkit::eventually(
            "messages to be accepted while NATS is down",
            TURN_TIMEOUT,
            || async { turns().await >= before + 10 },
        )
        .await?;
        let accepted_while_down = turns().await - before;
        nats.restart().await?;
        anyhow::Ok(accepted_while_down)
    };
    let (accepted, accepted_while_down, streams) = tokio::join!(load, outage, streaming);
    let (accepted, streams) = (accepted?, streams?);
    let scenario = format!(
        "NATS restart under load ({} accepted while down)",
        accepted_while_down?
    );

    let received = report(&stack, &webhook, &scenario, &accepted, &streams).await?;
    assert_eq!((received.duplicates, received.losses), (0, 0));
    Ok(())
}

#[tokio::test]
async fn postgres_restarted_under_load_refuses_with_503_then_loses_and_repeats_nothing()
-> anyhow::Result<()> {
    let (webhook, env) = webhook_receiver(Vec::new()).await?;
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 2,
        private_postgres: true,
        env,
        ..Default::default()
    })
    .await?;
    stack.provider.set_latency(Duration::from_millis(20));
    let client = stack.client();
    let refused = AtomicUsize::new(0);
    let TestStack {
        postgres, provider, ..
    } = &mut stack;
    let postgres = postgres.as_mut().expect("a private cluster was asked for");

    let load = post_load(&client, "postgres", &refused);
    let outage = async {
        sable_testkit::eventually("the load to start", TURN_TIMEOUT, || async {
            provider.request_count() >= 20
        })
        .await?;
        postgres.stop();
        sable_testkit::eventually(
            "clients to be refused while Postgres is down",
            TURN_TIMEOUT,
            || async { refused.load(Ordering::SeqCst) >= 5 },
        )
        .await?;
        postgres.restart().await
    };
    let (accepted, restarted) = tokio::join!(load, outage);
    let accepted = accepted?;
    restarted?;

    let scenario = format!(
        "Postgres restart under load (503 x{})",
        refused.load(Ordering::SeqCst)
    );
    let received = report(&stack, &webhook, &scenario, &accepted, &[]).await?;
    assert_eq!((received.duplicates, received.losses), (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_dispatcher_crash_between_sending_and_recording_is_absorbed_by_the_idempotency_key()
-> anyhow::Result<()> {
    let (webhook, env) = webhook_receiver(Vec::new()).await?;
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        env,
        ..Default::default()
    })
    .await?;
    // Every turn is queued before any dispatcher runs, so the crashing gateways below
    // are the only ones sending.
    let mut accepted = Vec::new();
    for round in 0..3 {
        let sessions = 0..SESSIONS;
        let refused = AtomicUsize::new(0);
        accepted.extend(
            post_round(
                &stack.client(),
                "webhook",
                "hook",
                round,
                sessions,
                &refused,
            )
            .await?,
        );
    }
    stack.gateways[0].process.kill().await;
    stack.gateways.clear();
    stack.spawn_worker().await?;

    for crash in 0..DISPATCHER_CRASHES {
        let mut gateway = stack.spawn_role(
            &format!("crashing-gateway{crash}"),
            "gateway",
            &[
                ("SABLE_FAULT_PAUSE_AT", "delivery_sent_before_record".into()),
                (
                    "SABLE_FAULT_HITS_TO_PASS",
                    rand::random_range(0..5_u32).to_string(),
                ),
            ],
        )?;
        let reached = gateway.wait_for_line(FAULT_MARKER, TURN_TIMEOUT).await?;
        assert_eq!(reached, "delivery_sent_before_record");
        gateway.kill().await;
    }
    stack.spawn_gateway().await?;

    let scenario = format!("dispatcher crash between send and record x{DISPATCHER_CRASHES}");
    let seen = report(&stack, &webhook, &scenario, &accepted, &[]).await?;
    assert_eq!((seen.duplicates, seen.losses), (0, 0));
    let received = webhook.log();
    assert!(
        received.resends_absorbed() >= DISPATCHER_CRASHES,
        "each crash leaves a sent, unrecorded reply that must be sent again"
    );
    Ok(())
}
