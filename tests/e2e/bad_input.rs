//! Bad input gets a clear 4xx `{"error":{"code","message"}}` and changes nothing; other
//! orgs' data is invisible (404, never 403).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{READY_TIMEOUT, StackOptions, TestStack, assert_error};

async fn send_raw(
    stack: &TestStack,
    body: Vec<u8>,
    key: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = stack
        .http
        .post(stack.url(0, "/v1/messages"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn malformed_bodies_and_bad_keys_get_clear_errors_and_change_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let before = stack.database.fingerprint().await?;
    let key = Some(stack.key.as_str());
    let hello = || b"{\"text\": \"hi\"}".to_vec();

    assert_error(
        &send_raw(&stack, b"{\"text\": ".to_vec(), key).await?,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        &send_raw(&stack, b"{\"wait\": true}".to_vec(), key).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &send_raw(&stack, b"{\"text\": \"   \"}".to_vec(), key).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &send_raw(&stack, b"{\"text\": \"a\\u0000b\"}".to_vec(), key).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let oversized = serde_json::to_vec(&json!({"text": "x".repeat(300 * 1024)}))?;
    assert_error(
        &send_raw(&stack, oversized, key).await?,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let unknown_session = json!({"text": "hi", "session_id": uuid::Uuid::new_v4()});
    assert_error(
        &stack.post_message(0, &unknown_session).await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let unknown_agent = json!({"text": "hi", "agent": "nobody"});
    assert_error(
        &stack.post_message(0, &unknown_agent).await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_agent",
    );
    assert_error(
        &send_raw(&stack, hello(), None).await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let forged = format!("sable_{}_{}", "0".repeat(12), "0".repeat(48));
    assert_error(
        &send_raw(&stack, hello(), Some(&forged)).await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &send_raw(&stack, hello(), Some("garbage")).await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &stack.get(0, "/v1/turns/not-a-uuid").await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // An unknown channel, and the webhook channel on a gateway with no webhook URL.
    for channel in ["feishu", "webhook"] {
        assert_error(
            &stack
                .post_message(0, &json!({"text": "hi", "channel": channel}))
                .await?,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }

    assert_eq!(
        stack.database.fingerprint().await?,
        before,
        "a refused request changed the database"
    );
    // What it does leave is the audit of the two keys that failed (a missing header is
    // not an attempt).
    assert_failed_authentications_audited(&stack, 2).await
}

/// Waits for `expected` failed authentications on record (written off the request's
/// path, so polled for), and no more.
async fn assert_failed_authentications_audited(
    stack: &TestStack,
    expected: i64,
) -> anyhow::Result<()> {
    let failed_authentications = || async {
        let (count,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM audit_events WHERE action = 'auth.failed'")
                .fetch_one(stack.database.store.pool())
                .await?;
        anyhow::Ok(count)
    };
    sable_testkit::wait_for(
        "the failed authentications audited",
        READY_TIMEOUT,
        || async {
            failed_authentications()
                .await
                .ok()
                .filter(|count| *count >= expected)
        },
    )
    .await?;
    assert_eq!(failed_authentications().await?, expected);
    Ok(())
}

#[tokio::test]
async fn another_orgs_sessions_and_turns_are_not_found() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let other_org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    let other_key = stack
        .sable(&["admin", "key", "create", "--org", &other_org])
        .await?;
    let (_, other_turn) = stack
        .post_message_with_key(
            0,
            &other_key,
            &json!({"text": "org B secret", "wait": true}),
        )
        .await?;
    let other_session = other_turn["session_id"].as_str().unwrap().to_owned();
    let other_turn_id = other_turn["turn_id"].as_str().unwrap().to_owned();
    let before = stack.database.row_counts().await?;

    let foreign_session = json!({"text": "hi", "session_id": other_session});
    assert_error(
        &stack.post_message(0, &foreign_session).await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &stack.get(0, &format!("/v1/turns/{other_turn_id}")).await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &stack
            .get(0, &format!("/v1/sessions/{other_session}/messages"))
            .await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // The same conversation id in two orgs is two sessions.
    let (_, mine) = stack
        .post_message(
            0,
            &json!({"text": "mine", "conversation": {"id": "shared"}, "wait": true}),
        )
        .await?;
    let (_, theirs) = stack
        .post_message_with_key(
            0,
            &other_key,
            &json!({"text": "theirs", "conversation": {"id": "shared"}, "wait": true}),
        )
        .await?;

    assert_ne!(mine["session_id"], theirs["session_id"]);
    assert_eq!(
        stack
            .database
            .row_counts()
            .await?
            .iter()
            .find(|(table, _)| table == "sessions")
            .unwrap()
            .1,
        before
            .iter()
            .find(|(table, _)| table == "sessions")
            .unwrap()
            .1
            + 2
    );
    Ok(())
}
