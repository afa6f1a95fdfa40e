//! What the web console adds: `GET /v1/me` (`routes/me.rs`), a session's live events
//! (`routes/session_events.rs`; the stream itself is driven in `tests/e2e/console.rs`)
//! and the console's files (`console.rs`).

use axum::http::{Method, StatusCode};

use crate::support::{Backend, Call, TestApp, assert_error, refusal, unauthorized, wrong_method};

#[tokio::test]
async fn me_names_the_keys_org_and_role_and_refuses_bad_keys() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/me", None);
    refusals.push(wrong_method(&app, Method::POST, "/v1/me"));
    app.assert_refused(refusals).await?;

    let admin = app
        .accepted(Call::get("/v1/me").key(&app.org.admin_key))
        .await?;
    assert_eq!(admin.body["role"], "admin", "{}", admin.body);
    assert_eq!(admin.body["org_id"], app.org.id.to_string());
    let member = app
        .accepted(Call::get("/v1/me").key(&app.org.member_key))
        .await?;
    assert_eq!(member.body["role"], "member", "{}", member.body);
    let other = app
        .accepted(Call::get("/v1/me").key(&app.other_org.admin_key))
        .await?;
    assert_eq!(other.body["org_id"], app.other_org.id.to_string());
    assert_ne!(other.body["key"]["id"], admin.body["key"]["id"]);
    Ok(())
}

#[tokio::test]
async fn the_console_is_served_with_its_content_types_and_a_strict_policy() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let redirect = app.send(Call::get("/console")).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers["location"], "/console/");

    let index = app.send(Call::get("/console/")).await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    let policy = index.headers["content-security-policy"].to_str()?;
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    let html = index.body.as_str().unwrap_or_default();
    assert!(html.contains("/console/app.js"), "{html}");

    for (path, content_type) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/pages/turn.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let file = app.send(Call::get(path)).await;
        assert_eq!(file.status, StatusCode::OK, "{path}");
        assert_eq!(file.headers["content-type"], content_type, "{path}");
        assert_eq!(file.headers["x-content-type-options"], "nosniff", "{path}");
    }
    for missing in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/pages/",
    ] {
        let reply = app.send(Call::get(missing)).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    Ok(())
}

#[tokio::test]
async fn session_events_refuse_bad_keys_other_orgs_sessions_and_malformed_ids() -> anyhow::Result<()>
{
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let theirs = app.seed(&app.other_org).await?;
    let path = format!("/v1/sessions/{}/events", theirs.session_id);
    let mut refusals = unauthorized(&app, &Method::GET, &path, None);
    refusals.extend([
        refusal(
            "another org's session",
            Call::get(&path).key(&app.org.admin_key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "a malformed session id",
            Call::get("/v1/sessions/not-a-session/events").key(&app.org.admin_key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        wrong_method(&app, Method::POST, &path),
    ]);
    app.assert_refused(refusals).await
}
