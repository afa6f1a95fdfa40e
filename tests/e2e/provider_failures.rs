//! Provider failures end the turn as failed with an error code the client sees, and the
//! session goes on working.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{StackOptions, TestStack};

#[tokio::test]
async fn a_provider_500_fails_the_turn_visibly_and_the_session_goes_on() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;

    let (status, failed) = stack
        .post_message(
            0,
            &json!({"text": "break #fail=500", "conversation": {"id": "c"}, "wait": true}),
        )
        .await?;
    let (_, next) = stack
        .post_message(
            0,
            &json!({"text": "are you back?", "conversation": {"id": "c"}, "wait": true}),
        )
        .await?;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "provider_server_error");
    assert!(
        failed["reply"]["text"]
            .as_str()
            .unwrap()
            .contains("could not answer"),
        "the user is told: {failed}"
    );
    assert_eq!(next["status"], "done", "{next}");
    assert_eq!(next["reply"]["text"], "echo: are you back?");
    let (_, turn) = stack
        .get(
            0,
            &format!("/v1/turns/{}", failed["turn_id"].as_str().unwrap()),
        )
        .await?;
    assert_eq!(turn["error"]["code"], "provider_server_error");
    Ok(())
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out_and_frees_the_session() -> anyhow::Result<()> {
    let env = vec![
        ("SABLE_PROVIDER_TIMEOUT_MS", "1500".to_owned()),
        ("SABLE_PROVIDER_IDLE_TIMEOUT_MS", "1000".to_owned()),
    ];
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env,
        ..Default::default()
    })
    .await?;

    let (_, timed_out) = stack
        .post_message(
            0,
            &json!({"text": "#hang", "conversation": {"id": "c"}, "wait": true}),
        )
        .await?;
    let (_, next) = stack
        .post_message(
            0,
            &json!({"text": "still there?", "conversation": {"id": "c"}, "wait": true}),
        )
        .await?;

    assert_eq!(timed_out["status"], "failed", "{timed_out}");
    assert_eq!(timed_out["error"]["code"], "provider_timeout");
    assert_eq!(next["reply"]["text"], "echo: still there?", "{next}");
    Ok(())
}
