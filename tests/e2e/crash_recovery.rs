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

/// A turn whose task panics (a bug, not a crash): the worker lets the session go and runs
/// the turn again itself, instead of leaving a drain that no longer runs to swallow the
/// session's wake-ups while the sweeper wakes it every second.
#[tokio::test]
async fn a_turn_whose_task_panics_runs_again_on_the_same_worker_with_one_reply()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![("SABLE_FAULT_PANIC_AT", "before_provider_call".into())],
        ..Default::default()
    })
    .await?;

    let (_, accepted) = stack
        .post_message(0, &json!({"text": "survive a panic"}))
        .await?;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let turn = stack.wait_for_final_turn(&turn_id).await?;

    assert_eq!(turn["status"], "done", "{turn}");
    assert_eq!(turn["reply"]["text"], "echo: survive a panic");
    assert_eq!(turn["attempt"], 2, "one attempt panicked: {turn}");
    let log = std::fs::read_to_string(&stack.workers[0].log_path)?;
    assert!(
        log.contains("session drain panicked"),
        "the panic is logged: {}",
        stack.logs()
    );
    assert_eq!(
        stack.provider.request_count(),
        1,
        "the attempt that panicked never asked the model"
    );
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM messages WHERE role <> 'user'")
            .await?,
        1
    );
    assert_eq!(stack.scalar("SELECT count(*) FROM deliveries").await?, 1);
    Ok(())
}
