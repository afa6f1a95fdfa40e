//! `GET /v1/sessions` and `GET /v1/sessions/{session_id}/messages` (`routes/sessions.rs`).

use axum::http::{Method, StatusCode};

use crate::support::{Backend, Call, TestApp, refusal, unauthorized, wrong_method};

on_both_backends!(bad_listings_and_other_orgs_histories_are_refused);

async fn bad_listings_and_other_orgs_histories_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let list = |query: &str| Call::get(format!("/v1/sessions{query}")).key(&app.org.member_key);
    let history =
        |id: &str| Call::get(format!("/v1/sessions/{id}/messages")).key(&app.org.member_key);
    let invalid = |what: &str, query: &str| {
        refusal(
            what,
            list(query),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    };
    let bad_query = |what: &str, query: &str| {
        refusal(what, list(query), StatusCode::BAD_REQUEST, "bad_request")
    };
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/sessions", None);
    refusals.extend(unauthorized(
        &app,
        &Method::GET,
        &format!("/v1/sessions/{}/messages", foreign.session_id),
        None,
    ));
    refusals.extend([
        invalid("a limit of 0", "?limit=0"),
        invalid("a limit over 200", "?limit=201"),
        invalid("a cursor this API never returned", "?cursor=page-2"),
        // Found by schemathesis: Postgres refuses NUL in text, which was a 500.
        invalid("a user_id with a NUL", "?user_id=a%00b"),
        invalid("a channel with a NUL", "?channel=%00"),
        invalid(
            "a conversation over 200 bytes",
            &format!("?conversation={}", "c".repeat(201)),
        ),
        bad_query("a limit that is no number", "?limit=ten"),
        bad_query("an unknown query parameter", "?sort=oldest"),
        refusal(
            "a malformed session id",
            history("not-a-uuid"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "a session nobody has",
            history(&uuid::Uuid::now_v7().to_string()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "another org's session",
            history(&foreign.session_id),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "a session id that is not UTF-8",
            history("%FF"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        wrong_method(&app, Method::POST, "/v1/sessions"),
        wrong_method(
            &app,
            Method::POST,
            &format!("/v1/sessions/{}/messages", foreign.session_id),
        ),
    ]);
    app.assert_refused(refusals).await
}

#[tokio::test]
async fn a_listing_shows_only_the_callers_sessions_a_page_at_a_time() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    app.seed(&app.other_org).await?;
    let own = app.seed(&app.org).await?;

    let listing = app
        .accepted(Call::get("/v1/sessions?limit=1").key(&app.org.member_key))
        .await?;
    let history = app
        .accepted(
            Call::get(format!("/v1/sessions/{}/messages", own.session_id)).key(&app.org.member_key),
        )
        .await?;

    // `seed` made two sessions: its message's and the parked turn's.
    assert_eq!(listing.body["sessions"].as_array().map(Vec::len), Some(1));
    assert!(listing.body["next_cursor"].is_string(), "{}", listing.body);
    let cursor = listing.body["next_cursor"].as_str().unwrap_or_default();
    let rest = app
        .accepted(Call::get(format!("/v1/sessions?cursor={cursor}")).key(&app.org.member_key))
        .await?;
    assert_eq!(rest.body["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["next_cursor"], serde_json::Value::Null);
    assert_eq!(history.body["messages"][0]["text"], "hello");
    Ok(())
}
