//! Many sessions through several gateways and workers: one turn and one reply per
//! message, replies in send order, never two turns of a session at once.

use std::time::Duration;

use serde_json::json;

use crate::support::{StackOptions, TestStack};

const SESSIONS: usize = 50;
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

    let sessions =
        futures::future::join_all((0..SESSIONS).map(|session| send_session(&stack, session))).await;
    let mut all_turns = Vec::new();
    for turns in sessions {
        all_turns.extend(turns?);
    }
    for turn_id in &all_turns {
        let turn = stack.wait_for_final_turn(turn_id).await?;
        assert_eq!(turn["status"], "done", "{turn}");
    }

    for session in 0..SESSIONS {
        assert_session_history_in_order(&stack, session).await?;
    }
    let total = i64::try_from(SESSIONS * MESSAGES_PER_SESSION)?;
    assert_eq!(stack.scalar("SELECT count(*) FROM turns").await?, total);
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
    assert_eq!(
        stack
            .scalar("SELECT count(DISTINCT turn_id) FROM messages WHERE role = 'assistant'")
            .await?,
        total
    );
    let overlapping = stack
        .scalar(
            "SELECT count(*) FROM turns a JOIN turns b ON a.session_id = b.session_id AND a.seq < b.seq \
             WHERE b.started_at < a.finished_at",
        )
        .await?;
    assert_eq!(
        overlapping, 0,
        "a later turn started before an earlier one finished"
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

/// Sends a session's messages one after another, alternating gateways.
async fn send_session(stack: &TestStack, session: usize) -> anyhow::Result<Vec<String>> {
    let mut turn_ids = Vec::new();
    for message in 0..MESSAGES_PER_SESSION {
        let body = json!({"text": format!("s{session} m{message}"), "conversation": {"id": format!("conv-{session}")}});
        let (status, answer) = stack.post_message(message % 2, &body).await?;
        anyhow::ensure!(status.as_u16() == 202, "{status} {answer}");
        turn_ids.push(answer["turn_id"].as_str().unwrap().to_owned());
    }
    Ok(turn_ids)
}

async fn assert_session_history_in_order(stack: &TestStack, session: usize) -> anyhow::Result<()> {
    let session_id: (uuid::Uuid,) =
        sqlx::query_as("SELECT id FROM sessions WHERE conversation_key = $1")
            .bind(format!("conv-{session}"))
            .fetch_one(stack.database.store.pool())
            .await?;
    let (_, history) = stack
        .get(0, &format!("/v1/sessions/{}/messages", session_id.0))
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
    assert_eq!(texts, expected, "session {session} out of order");
    Ok(())
}
