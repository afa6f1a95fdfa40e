//! The README's quick start, step by step: migrate, create an org and a key, start a
//! worker and a gateway, and get a reply.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{StackOptions, TestStack};

#[tokio::test]
async fn a_new_user_gets_a_reply_by_following_the_quick_start() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    assert!(
        stack.org_id.parse::<uuid::Uuid>().is_ok(),
        "org create printed {:?}",
        stack.org_id
    );
    assert!(
        stack.key.starts_with("sable_") && !stack.key.contains(char::is_whitespace),
        "key create printed {:?}",
        stack.key
    );

    let (status, body) = stack
        .post_message(0, &json!({"text": "hello there", "wait": true}))
        .await?;

    assert_eq!(status, StatusCode::OK, "{body}\n{}", stack.logs());
    assert_eq!(body["status"], "done");
    assert_eq!(body["reply"]["text"], "echo: hello there");
    assert!(body["turn_id"].is_string() && body["session_id"].is_string());
    Ok(())
}

#[tokio::test]
async fn a_conversation_continues_in_one_session_with_its_history() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let conversation = json!({"id": "chat-1", "user_id": "u-1"});

    let (_, first) = stack
        .post_message(
            0,
            &json!({"text": "one", "conversation": conversation, "wait": true}),
        )
        .await?;
    let (_, second) = stack
        .post_message(
            0,
            &json!({"text": "two", "conversation": conversation, "wait": true}),
        )
        .await?;

    assert_eq!(first["session_id"], second["session_id"]);
    let session_id = second["session_id"].as_str().unwrap();
    let (status, history) = stack
        .get(0, &format!("/v1/sessions/{session_id}/messages"))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "echo: one", "two", "echo: two"]);
    // The second call carried the first exchange to the model.
    let last_request = stack.provider.requests().pop().unwrap();
    let sent: Vec<&str> = last_request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["one", "echo: one", "two"]);
    Ok(())
}

#[tokio::test]
async fn a_turn_streams_its_reply_as_server_sent_events() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;

    let response = stack
        .http
        .post(stack.url(0, "/v1/messages"))
        .bearer_auth(&stack.key)
        .header("accept", "text/event-stream")
        .json(&json!({"text": "stream me please"}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk?));
        if body.contains("event: final") && body.ends_with("\n\n") {
            break;
        }
    }

    assert!(body.starts_with("event: accepted"), "{body}");
    assert!(
        body.matches("event: delta").count() >= 2,
        "expected several deltas: {body}"
    );
    let final_data = body.split("event: final\ndata: ").nth(1).unwrap().trim();
    let final_body: serde_json::Value = serde_json::from_str(final_data)?;
    assert_eq!(final_body["reply"]["text"], "echo: stream me please");
    Ok(())
}

#[tokio::test]
async fn a_worker_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let (status, _) = stack
        .post_message(0, &json!({"text": "before shutdown", "wait": true}))
        .await?;
    assert_eq!(status, StatusCode::OK);

    let exited_cleanly = stack.workers[0]
        .terminate(std::time::Duration::from_secs(10))
        .await?;
    let gateway_exited_cleanly = stack.gateways[0]
        .process
        .terminate(std::time::Duration::from_secs(10))
        .await?;

    assert!(
        exited_cleanly,
        "worker did not exit 0: {}",
        stack.workers[0].log_tail()
    );
    assert!(gateway_exited_cleanly, "gateway did not exit 0");
    Ok(())
}
