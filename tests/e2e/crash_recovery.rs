//! A worker killed mid-turn: the turn completes on another worker after the lease
//! expires, with exactly one reply.

use std::time::Duration;

use sable_testkit::{Script, eventually};
use serde_json::json;

use crate::support::{StackOptions, TestStack};

#[tokio::test]
async fn a_turn_interrupted_by_sigkill_completes_on_another_worker_with_one_reply()
-> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    // The first provider call streams a little and then hangs: the worker is mid-turn.
    stack.provider.push(Script::StallAfter("partial ".into()));

    let (_, accepted) = stack
        .post_message(0, &json!({"text": "survive a crash"}))
        .await?;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    eventually(
        "the first worker to be mid-stream",
        Duration::from_secs(30),
        || async { stack.provider.request_count() == 1 },
    )
    .await?;
    stack.workers[0].kill().await;
    stack.spawn_worker().await?;

    let turn = stack.wait_for_final_turn(&turn_id).await?;

    assert_eq!(turn["status"], "done", "{turn}");
    assert_eq!(turn["reply"]["text"], "echo: survive a crash");
    assert_eq!(
        turn["attempt"], 2,
        "the turn should have been resumed once: {turn}"
    );
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM messages WHERE role <> 'user'")
            .await?,
        1
    );
    assert_eq!(stack.scalar("SELECT count(*) FROM deliveries").await?, 1);
    assert_eq!(stack.provider.request_count(), 2);
    Ok(())
}
