//! A gateway told to stop answers every waiting and streaming request (with a hint to
//! retry elsewhere) instead of cutting it, and exits within its grace limit.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{StackOptions, TestStack};

const GRACE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_gateway_holding_fifty_waiting_requests_answers_them_and_stops_within_its_grace()
-> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![
            ("SABLE_SHUTDOWN_GRACE_MS", GRACE.as_millis().to_string()),
            ("SABLE_WAIT_TIMEOUT_MS", "120000".into()),
        ],
        ..Default::default()
    })
    .await?;
    let mut waiting = Vec::new();
    for index in 0..50 {
        let client = stack.client();
        let body = json!({"text": format!("#delay=30000 slow {index}"), "wait": true});
        waiting.push(tokio::spawn(async move {
            let response = client
                .http
                .post(format!("{}/v1/messages", client.url))
                .bearer_auth(&client.key)
                .json(&body)
                .send()
                .await?;
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status();
            let body: Value = response.json().await?;
            anyhow::Ok((status, retry_after, body))
        }));
    }
    let client = stack.client();
    let streaming = tokio::spawn(async move {
        let response = client
            .http
            .post(format!("{}/v1/messages", client.url))
            .bearer_auth(&client.key)
            .header("accept", "text/event-stream")
            .json(&json!({"text": "#delay=30000 streamed"}))
            .send()
            .await?;
        anyhow::Ok(response.text().await?)
    });
    sable_testkit::wait_for(
        "51 turns to be accepted",
        Duration::from_secs(30),
        || async { (stack.scalar("SELECT count(*) FROM turns").await.ok()? == 51).then_some(()) },
    )
    .await?;

    let stopping = Instant::now();
    let exited_cleanly = stack.gateways[0].process.terminate(GRACE * 2).await?;
    let stopped_after = stopping.elapsed();

    assert!(exited_cleanly, "{}", stack.logs());
    assert!(stopped_after < GRACE, "stopping took {stopped_after:?}");
    for request in waiting {
        let (status, retry_after, body) = request.await??;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["retry_after_ms"], 1000, "{body}");
        assert!(body["turn_id"].is_string());
        assert_eq!(
            retry_after
                .and_then(|value| value.to_str().ok().map(str::to_owned))
                .as_deref(),
            Some("1")
        );
    }
    let events = streaming.await??;
    let final_event = events
        .split("\n\n")
        .find(|event| event.contains("event: final"))
        .unwrap_or_else(|| panic!("no final event in {events}"));
    assert!(final_event.contains("retry_after_ms"), "{final_event}");
    stack.gateways.clear();
    Ok(())
}
