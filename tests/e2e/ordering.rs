//! Many sessions through several gateways and workers: one turn and one reply per
//! message, replies in send order, never two turns of a session at once. The same body
//! runs on the distributed stack and on `sable dev`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::support::{Api, DevStack, StackOptions, TestStack};

const MESSAGES_PER_SESSION: usize = 10;

#[tokio::test]
async fn fifty_sessions_of_ten_messages_get_one_ordered_reply_each() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 2,
        workers: 3,
        ..Default::default()
    })
    .await?;
    // A little provider latency so overlapping turns of a session would show.
    stack.provider.set_latency(Duration::from_millis(5));

    sessions_get_one_ordered_reply_per_message(&stack, 50).await?;

    let total = i64::try_from(50 * MESSAGES_PER_SESSION)?;
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM messages WHERE role = 'assistant'")
            .await?,
        total
    );
    assert_eq!(
        stack.scalar("SELECT count(*) FROM deliveries").await?,
        total
    );
    sable_testkit::eventually(
        "every delivery to be dispatched",
        Duration::from_secs(30),
        || async {
            stack
                .scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                .await
                .ok()
                == Some(total)
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn on_sable_dev_sessions_get_one_ordered_reply_per_message_too() -> anyhow::Result<()> {
    let stack = DevStack::start().await?;
    stack.provider.set_latency(Duration::from_millis(5));

    sessions_get_one_ordered_reply_per_message(&stack, 20).await
}

/// Sends `sessions` conversations concurrently, each message after the previous one was
/// accepted, then checks every session's history and turn timings.
async fn sessions_get_one_ordered_reply_per_message(
    api: &impl Api,
    sessions: usize,
) -> anyhow::Result<()> {
    let sent =
        futures::future::join_all((0..sessions).map(|session| send_session(api, session))).await;
    for (session, turns) in sent.into_iter().enumerate() {
        let turns = turns?;
        let mut finished = Vec::new();
        for turn_id in &turns {
            let turn = api.final_turn(turn_id).await?;
            assert_eq!(turn["status"], "done", "{turn}");
            finished.push(turn);
        }
        assert_turns_never_overlap(&finished)?;
        let session_id = finished[0]["session_id"].as_str().unwrap();
        assert_history_in_send_order(api, session, session_id).await?;
    }
    Ok(())
}

/// Sends a session's messages one after another, alternating gateways.
async fn send_session(api: &impl Api, session: usize) -> anyhow::Result<Vec<String>> {
    let mut turn_ids = Vec::new();
    for message in 0..MESSAGES_PER_SESSION {
        let body = json!({"text": format!("s{session} m{message}"), "conversation": {"id": format!("conv-{session}")}});
        let (status, answer) = api.post(message % api.gateway_count(), &body).await?;
        anyhow::ensure!(status.as_u16() == 202, "{status} {answer}");
        turn_ids.push(answer["turn_id"].as_str().unwrap().to_owned());
    }
    Ok(turn_ids)
}

fn assert_turns_never_overlap(turns: &[Value]) -> anyhow::Result<()> {
    let time = |turn: &Value, field: &str| -> anyhow::Result<DateTime<Utc>> {
        Ok(turn[field].as_str().unwrap_or_default().parse()?)
    };
    for pair in turns.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(
            earlier["seq"].as_i64() < later["seq"].as_i64(),
            "turns out of sequence"
        );
        assert!(
            time(later, "started_at")? >= time(earlier, "finished_at")?,
            "turn {} started before {} finished",
            later["seq"],
            earlier["seq"]
        );
    }
    Ok(())
}

async fn assert_history_in_send_order(
    api: &impl Api,
    session: usize,
    session_id: &str,
) -> anyhow::Result<()> {
    let (_, history) = api
        .fetch(0, &format!("/v1/sessions/{session_id}/messages"))
        .await?;
    let texts: Vec<String> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..MESSAGES_PER_SESSION)
        .flat_map(|message| {
            [
                format!("s{session} m{message}"),
                format!("echo: s{session} m{message}"),
            ]
        })
        .collect();
    assert_eq!(
        texts, expected,
        "session {session}: one reply per message, in send order"
    );
    Ok(())
}
