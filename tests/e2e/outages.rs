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
    let before = stack.database.fingerprint().await?;
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
        stack.database.fingerprint().await?,
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

#[tokio::test]
async fn a_gateway_on_a_database_never_created_answers_503_and_says_to_run_migrate()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions::default()).await?;
    let missing = stack
        .database
        .url
        .rsplit_once('/')
        .map(|(server, _)| format!("{server}/never_created_{}", uuid::Uuid::new_v4().simple()))
        .expect("a database URL");
    let mut gateway = stack.spawn_role("gateway", "gateway", &[("SABLE_DATABASE_URL", missing)])?;
    let url = gateway
        .wait_for_line("sable gateway listening on", crate::support::READY_TIMEOUT)
        .await?;

    let response = stack
        .http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(&stack.key)
        .json(&json!({"text": "hello"}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;

    assert_error(
        &(status, body),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let log = sable_testkit::wait_for(
        "the log to name the fix",
        Duration::from_secs(10),
        || async {
            let log = std::fs::read_to_string(&gateway.log_path).ok()?;
            log.contains("run `sable migrate`").then_some(log)
        },
    )
    .await?;
    assert!(log.contains("does not exist"), "{log}");
    Ok(())
}
