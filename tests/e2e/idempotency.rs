//! Each inbound message makes one turn: an idempotency key repeated, even concurrently,
//! returns the original turn.

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::{StackOptions, TestStack};

#[tokio::test]
async fn one_idempotency_key_sent_five_times_makes_one_turn() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 2,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let body = json!({"text": "pay invoice 42", "idempotency_key": "invoice-42"});

    let concurrent =
        futures::future::join_all((0..5).map(|attempt| stack.post_message(attempt % 2, &body)))
            .await;
    let mut turn_ids = BTreeSet::new();
    for result in concurrent {
        let (status, answer) = result?;
        assert!(status.is_success(), "{status} {answer}");
        turn_ids.insert(answer["turn_id"].as_str().unwrap().to_owned());
    }
    let (_, later) = stack.post_message(0, &body).await?;
    turn_ids.insert(later["turn_id"].as_str().unwrap().to_owned());

    assert_eq!(turn_ids.len(), 1, "repeats made new turns: {turn_ids:?}");
    let turn = stack.wait_for_final_turn(turn_ids.first().unwrap()).await?;
    assert_eq!(turn["reply"]["text"], "echo: pay invoice 42");
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
