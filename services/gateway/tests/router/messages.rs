//! `POST /v1/messages` (`routes/messages.rs`, through `body.rs` and `auth.rs`).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sable_bus::WorkQueue;
use serde_json::json;

use crate::support::{
    Backend, Call, Refusal, TestApp, assert_error, changes, refusal, text, unauthorized,
    wrong_method,
};

on_both_backends!(bad_messages_are_refused_with_their_code_and_write_nothing);

async fn bad_messages_are_refused_with_their_code_and_write_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let mut refusals = unauthorized(
        &app,
        &Method::POST,
        "/v1/messages",
        Some(&json!({"text": "hi"})),
    );
    refusals.extend(unreadable_bodies(&app));
    refusals.extend(invalid_messages(&app, &foreign.session_id));
    refusals.extend([
        refusal(
            "an agent the catalog lacks",
            post(&app).json(json!({"text": "hi", "agent": "nobody"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_agent",
        ),
        refusal(
            "a session nobody has",
            post(&app).json(json!({"text": "hi", "session_id": uuid::Uuid::now_v7()})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "another org's session",
            post(&app).json(json!({"text": "hi", "session_id": foreign.session_id})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        wrong_method(&app, Method::GET, "/v1/messages"),
        wrong_method(&app, Method::PUT, "/v1/messages"),
    ]);
    app.assert_refused(refusals).await
}

fn post(app: &TestApp) -> Call {
    Call::post("/v1/messages").key(&app.org.member_key)
}

/// Bodies refused before they are read as a message: not JSON, not declared JSON, or
/// too large.
fn unreadable_bodies(app: &TestApp) -> Vec<Refusal> {
    let declared = |content_type: &str| post(app).header("content-type", content_type);
    vec![
        refusal(
            "malformed JSON",
            declared("application/json").body("{\"text\": "),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        refusal(
            "an empty body",
            declared("application/json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        refusal(
            "a text/plain body",
            declared("text/plain").body("{\"text\": \"hi\"}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        refusal(
            "a body over the limit, declared",
            declared("application/json")
                .header("content-length", (300 * 1024).to_string())
                .body("{}"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        refusal(
            "a body over the limit, undeclared",
            post(app).json(json!({"text": "x".repeat(300 * 1024)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ]
}

/// Well-formed JSON that is no valid message: 422 `validation_failed`.
fn invalid_messages(app: &TestApp, foreign_session: &str) -> Vec<Refusal> {
    let long_user = "u".repeat(201);
    [
        ("no text", json!({"wait": true})),
        ("a blank text", json!({"text": "   "})),
        ("a NUL in the text", json!({"text": "a\u{0}b"})),
        (
            "a text over 200 KiB",
            json!({"text": "x".repeat(210 * 1024)}),
        ),
        ("an unknown field", json!({"text": "hi", "colour": "blue"})),
        ("text that is a number", json!({"text": 7})),
        (
            "an unknown conversation field",
            json!({"text": "hi", "conversation": {"id": "c", "topic": "x"}}),
        ),
        (
            "both session_id and conversation",
            json!({"text": "hi", "session_id": foreign_session, "conversation": {"id": "c"}}),
        ),
        (
            "a session_id that is no id",
            json!({"text": "hi", "session_id": "nope"}),
        ),
        (
            "an empty conversation id",
            json!({"text": "hi", "conversation": {"id": ""}}),
        ),
        (
            "a conversation user_id over 200 bytes",
            json!({"text": "hi", "conversation": {"id": "c", "user_id": long_user}}),
        ),
        (
            "a malformed agent id",
            json!({"text": "hi", "agent": "Not An Id"}),
        ),
        (
            "an empty idempotency key",
            json!({"text": "hi", "idempotency_key": ""}),
        ),
        (
            "an unknown channel",
            json!({"text": "hi", "channel": "carrier-pigeon"}),
        ),
        (
            "the webhook channel without a webhook URL",
            json!({"text": "hi", "channel": "webhook"}),
        ),
        (
            "the feishu channel",
            json!({"text": "hi", "channel": "feishu"}),
        ),
    ]
    .into_iter()
    .map(|(what, body)| {
        refusal(
            what,
            post(app).json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    })
    .collect()
}

#[tokio::test]
async fn a_body_slower_than_the_body_deadline_is_refused_with_408() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.http.body_timeout = Duration::from_millis(100);
    })
    .await?;
    let never_ends = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let before = app.fingerprint().await?;

    let reply = app
        .send(
            Call::post("/v1/messages")
                .key(&app.org.member_key)
                .header("content-type", "application/json")
                .body(axum::body::Body::from_stream(never_ends)),
        )
        .await;

    assert_error(&reply, StatusCode::REQUEST_TIMEOUT, "request_timeout");
    let changed = changes(&before, &app.fingerprint().await?);
    assert!(changed.is_empty(), "the refused message wrote {changed:?}");
    Ok(())
}

#[tokio::test]
async fn a_message_without_wait_is_accepted_queued_listed_and_woken() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;

    let reply = app
        .send(
            Call::post("/v1/messages")
                .key(&app.org.member_key)
                .json(json!({"text": "hello", "conversation": {"id": "support-42"}})),
        )
        .await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["status"], "queued");
    let turn_id = text(&reply.body["turn_id"])?;
    let turn = app
        .accepted(Call::get(format!("/v1/turns/{turn_id}")).key(&app.org.member_key))
        .await?;
    assert_eq!(turn.body["status"], "queued");
    assert_eq!(turn.body["agent"], "default");
    let sessions = app
        .accepted(Call::get("/v1/sessions").key(&app.org.member_key))
        .await?;
    assert_eq!(sessions.body["sessions"][0]["id"], reply.body["session_id"]);
    assert_eq!(sessions.body["sessions"][0]["conversation"], "support-42");
    let wakeups = app.bus.queue_stats(WorkQueue::Turns).await?;
    assert_eq!(wakeups.pending, 1, "the turn's wake-up is on the bus");
    Ok(())
}

#[tokio::test]
async fn a_waiting_message_with_no_worker_answers_202_once_the_wait_runs_out() -> anyhow::Result<()>
{
    let app = TestApp::spawn(Backend::Sqlite).await?;

    let reply = app
        .send(
            Call::post("/v1/messages")
                .key(&app.org.member_key)
                .json(json!({"text": "hello", "wait": true})),
        )
        .await;

    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["status"], "queued");
    Ok(())
}

#[tokio::test]
async fn the_served_router_accepts_a_message_over_http() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let http = reqwest::Client::new();

    let response = http
        .post(app.url("/v1/messages"))
        .bearer_auth(&app.org.member_key)
        .json(&json!({"text": "hello over the wire"}))
        .send()
        .await?;

    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let body: serde_json::Value = response.json().await?;
    let turn_id = text(&body["turn_id"])?;
    app.accepted(Call::get(format!("/v1/turns/{turn_id}")).key(&app.org.member_key))
        .await?;
    let unknown = http.get(app.url("/v1/nowhere")).send().await?;
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
    let body: serde_json::Value = unknown.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    Ok(())
}
