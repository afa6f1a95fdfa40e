//! Each inbound message makes one turn: an idempotency key repeated, even concurrently,
//! returns the original turn. The same body runs on the distributed stack and on
//! `sable dev`.

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::{Api, DevStack, StackOptions, TestStack};

#[tokio::test]
async fn one_idempotency_key_sent_five_times_makes_one_turn() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 2,
        workers: 1,
        ..Default::default()
    })
    .await?;

    one_key_makes_one_turn(&stack).await?;

    assert_eq!(stack.scalar("SELECT count(*) FROM turns").await?, 1);
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM messages WHERE role = 'user'")
            .await?,
        1
    );
    assert_eq!(stack.scalar("SELECT count(*) FROM sessions").await?, 1);
    assert_eq!(stack.provider.request_count(), 1);
    Ok(())
}

#[tokio::test]
async fn on_sable_dev_one_idempotency_key_makes_one_turn_too() -> anyhow::Result<()> {
    let stack = DevStack::start().await?;

    one_key_makes_one_turn(&stack).await?;

    assert_eq!(stack.provider.request_count(), 1);
    Ok(())
}

async fn one_key_makes_one_turn(api: &impl Api) -> anyhow::Result<()> {
    let body = json!({"text": "pay invoice 42", "idempotency_key": "invoice-42"});
    let concurrent = futures::future::join_all(
        (0..5).map(|attempt| api.post(attempt % api.gateway_count(), &body)),
    )
    .await;
    let mut turn_ids = BTreeSet::new();
    let mut session_ids = BTreeSet::new();
    for result in concurrent {
        let (status, answer) = result?;
        assert!(status.is_success(), "{status} {answer}");
        turn_ids.insert(answer["turn_id"].as_str().unwrap().to_owned());
        session_ids.insert(answer["session_id"].as_str().unwrap().to_owned());
    }
    let (_, later) = api.post(0, &body).await?;
    turn_ids.insert(later["turn_id"].as_str().unwrap().to_owned());

    assert_eq!(turn_ids.len(), 1, "repeats made new turns: {turn_ids:?}");
    assert_eq!(session_ids.len(), 1);
    let turn = api.final_turn(turn_ids.first().unwrap()).await?;
    assert_eq!(turn["reply"]["text"], "echo: pay invoice 42");
    let (_, history) = api
        .fetch(
            0,
            &format!("/v1/sessions/{}/messages", session_ids.first().unwrap()),
        )
        .await?;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        2,
        "one message, one reply"
    );
    Ok(())
}
