//! Outages of NATS and Postgres: accepted messages survive, and refusals are clean.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{StackOptions, TestStack, assert_error};

#[tokio::test]
async fn messages_accepted_while_nats_is_down_are_answered_after_it_returns() -> anyhow::Result<()>
{
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    stack.nats.stop();

    let stack_ref = &stack;
    let posts = futures::future::join_all((0..5).map(|index| async move {
        stack_ref
            .post_message(0, &json!({"text": format!("during outage {index}")}))
            .await
    }))
    .await;
    let mut turn_ids = Vec::new();
    for post in posts {
        let (status, body) = post?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        turn_ids.push(body["turn_id"].as_str().unwrap().to_owned());
    }
    stack.nats.restart().await?;

    for turn_id in &turn_ids {
        let turn = stack.wait_for_final_turn(turn_id).await?;
        assert_eq!(turn["status"], "done", "{turn}");
        assert!(
            turn["reply"]["text"]
                .as_str()
                .unwrap()
                .starts_with("echo: during outage")
        );
    }
    assert_eq!(stack.scalar("SELECT count(*) FROM deliveries").await?, 5);
    Ok(())
}

#[tokio::test]
async fn with_postgres_down_the_gateway_answers_503_and_writes_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        postgres_proxy: true,
        ..Default::default()
    })
    .await?;
    let (status, _) = stack
        .post_message(0, &json!({"text": "warm up", "wait": true}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let before = stack.database.row_counts().await?;
    let proxy = stack.postgres_proxy.as_ref().unwrap();

    proxy.cut();
    let posted = stack
        .post_message(0, &json!({"text": "while postgres is down", "wait": true}))
        .await?;
    let (ready_status, ready) = stack.get(0, "/readyz").await?;
    proxy.restore();

    assert_error(&posted, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(ready_status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["postgres"], "unreachable");
    assert_eq!(
        stack.database.row_counts().await?,
        before,
        "a refused request left rows behind"
    );
    // Once Postgres is back the gateway serves again without a restart.
    sable_testkit::eventually(
        "the gateway to recover",
        Duration::from_secs(30),
        || async {
            matches!(
                stack
                    .post_message(0, &json!({"text": "after", "wait": true}))
                    .await,
                Ok((StatusCode::OK, _))
            )
        },
    )
    .await?;
    Ok(())
}
