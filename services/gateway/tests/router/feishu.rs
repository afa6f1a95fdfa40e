//! `GET/POST /v1/channels/feishu/apps`, `DELETE /v1/channels/feishu/apps/{app_id}`
//! (`feishu/apps.rs`, admin keys) and Feishu's callback
//! `POST /v1/channels/feishu/{app_id}/events` (`feishu/ingress.rs`, verified by the app's
//! token and signature instead of a key), with its twin `…/card` for card actions.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Backend, Call, Refusal, TestApp, feishu_app_body, forbidden, refusal, unauthorized,
    wrong_method,
};

const APPS: &str = "/v1/channels/feishu/apps";

on_both_backends!(bad_app_requests_are_refused_and_change_no_app);

async fn bad_app_requests_are_refused_and_change_no_app(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let own = app.seed(&app.org).await?;
    let own_path = format!("{APPS}/{}", own.feishu_app_id);
    let create = || Call::post(APPS).key(&app.org.admin_key);
    let remove = |app_id: &str| Call::delete(format!("{APPS}/{app_id}")).key(&app.org.admin_key);
    let mut refusals = unauthorized(&app, &Method::GET, APPS, None);
    refusals.extend(unauthorized(
        &app,
        &Method::POST,
        APPS,
        Some(&feishu_app_body("cli_new")),
    ));
    refusals.extend(unauthorized(&app, &Method::DELETE, &own_path, None));
    refusals.extend(invalid_apps(&app));
    refusals.extend([
        forbidden(&app, Call::get(APPS)),
        forbidden(&app, Call::post(APPS).json(feishu_app_body("cli_new"))),
        forbidden(&app, Call::delete(&own_path)),
        refusal(
            "an app_id the org has already",
            create().json(feishu_app_body(&own.feishu_app_id)),
            StatusCode::CONFLICT,
            "conflict",
        ),
        refusal(
            "an app_id another org has",
            create().json(feishu_app_body(&foreign.feishu_app_id)),
            StatusCode::CONFLICT,
            "conflict",
        ),
        refusal(
            "removing an app nobody has",
            remove("cli_nobody"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "removing another org's app",
            remove(&foreign.feishu_app_id),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        wrong_method(&app, Method::PUT, APPS),
        wrong_method(&app, Method::GET, &own_path),
    ]);
    app.assert_refused(refusals).await
}

/// App bodies an admin may not create.
fn invalid_apps(app: &TestApp) -> Vec<Refusal> {
    let create = || Call::post(APPS).key(&app.org.admin_key);
    let with = |field: &str, value: Value| {
        let mut body = feishu_app_body("cli_new");
        body[field] = value;
        body
    };
    let mut refusals: Vec<Refusal> = [
        ("an app_id with spaces", with("app_id", json!("cli one"))),
        ("an unknown mode", with("mode", json!("polling"))),
        (
            "a base_url that is not http",
            with("base_url", json!("ftp://open.feishu.cn")),
        ),
        ("an agent the catalog lacks", with("agent", json!("nobody"))),
        ("an empty app_secret", with("app_secret", json!(""))),
        (
            "an empty verification_token",
            with("verification_token", json!("")),
        ),
        (
            "an unknown field",
            with("webhook_url", json!("https://example.com")),
        ),
        (
            "no app_secret",
            json!({"app_id": "cli_new", "mode": "webhook", "verification_token": "t"}),
        ),
    ]
    .into_iter()
    .map(|(what, body)| {
        refusal(
            what,
            create().json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    })
    .collect();
    refusals.extend([
        refusal(
            "malformed JSON",
            create()
                .header("content-type", "application/json")
                .body("{\"app_id\""),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        refusal(
            "a text/plain body",
            create()
                .header("content-type", "text/plain")
                .body(feishu_app_body("cli_new").to_string()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ]);
    refusals
}

#[tokio::test]
async fn callbacks_that_fail_verification_or_parsing_are_refused() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let plain = app.seed(&app.org).await?.feishu_app_id;
    let mut encrypted_body = feishu_app_body("cli_encrypted");
    encrypted_body["encrypt_key"] = json!("encrypt-key");
    app.accepted(
        Call::post(APPS)
            .key(&app.org.admin_key)
            .json(encrypted_body),
    )
    .await?;
    let events = |app_id: &str| Call::post(sable_gateway::feishu_webhook_path(app_id));
    let challenge =
        |token: &str| json!({"type": "url_verification", "token": token, "challenge": "c-1"});
    let event = |token: &str, app_id: &str| {
        json!({
            "schema": "2.0",
            "header": {"event_id": "e-1", "event_type": "im.chat.updated_v1", "token": token, "app_id": app_id},
            "event": {},
        })
    };
    let unauthorized =
        |what: &str, call: Call| refusal(what, call, StatusCode::UNAUTHORIZED, "unauthorized");
    let bad = |what: &str, call: Call| refusal(what, call, StatusCode::BAD_REQUEST, "bad_request");

    app.assert_refused(vec![
        refusal(
            "an app nobody has",
            events("cli_nobody").json(challenge("verification-token")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "a body that is not JSON",
            events(&plain).body("challenge?"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        unauthorized(
            "a challenge with the wrong token",
            events(&plain).json(challenge("guess")),
        ),
        unauthorized(
            "an event with the wrong token",
            events(&plain).json(event("guess", &plain)),
        ),
        unauthorized(
            "an event for another app",
            events(&plain).json(event("verification-token", "cli_other")),
        ),
        bad(
            "an event without a header",
            events(&plain).json(json!({"schema": "2.0"})),
        ),
        bad(
            "an encrypted body for an app without an encrypt key",
            events(&plain).json(json!({"encrypt": "AAAA"})),
        ),
        unauthorized(
            "a plaintext body for an app with an encrypt key",
            events("cli_encrypted").json(challenge("verification-token")),
        ),
        unauthorized(
            "an encrypted body with a wrong signature",
            events("cli_encrypted")
                .header("x-lark-signature", "0".repeat(64))
                .json(json!({"encrypt": "AAAA"})),
        ),
        unauthorized(
            "an unsigned body that does not decrypt",
            events("cli_encrypted").json(json!({"encrypt": "AAAA"})),
        ),
        wrong_method(
            &app,
            Method::GET,
            &sable_gateway::feishu_webhook_path(&plain),
        ),
    ])
    .await?;

    let answered = app
        .accepted(events(&plain).json(challenge("verification-token")))
        .await?;
    assert_eq!(answered.body, json!({"challenge": "c-1"}));
    Ok(())
}

#[tokio::test]
async fn message_events_that_cannot_become_turns_are_refused_and_not_recorded() -> anyhow::Result<()>
{
    let app = TestApp::spawn(Backend::Sqlite).await?;
    // Nothing listens on port 1: the bot's identity, needed for group chats, is unknown.
    let mut unreachable = feishu_app_body("cli_unreachable");
    unreachable["base_url"] = json!("http://127.0.0.1:1");
    app.accepted(Call::post(APPS).key(&app.org.admin_key).json(unreachable))
        .await?;
    let events = || Call::post(sable_gateway::feishu_webhook_path("cli_unreachable"));
    let message_event = |event_id: &str, event: Value| {
        json!({
            "schema": "2.0",
            "header": {
                "event_id": event_id,
                "event_type": "im.message.receive_v1",
                "token": "verification-token",
            },
            "event": event,
        })
    };
    let sender = json!({"sender_id": {"open_id": "ou_user"}, "sender_type": "user"});
    let group_text = json!({
        "message_id": "om_1", "chat_id": "oc_1", "chat_type": "group",
        "message_type": "text", "content": "{\"text\":\"hi\"}",
    });
    let no_ids =
        json!({"chat_type": "p2p", "message_type": "text", "content": "{\"text\":\"hi\"}"});

    app.assert_refused(vec![
        refusal(
            "a message event of the wrong shape",
            events().json(message_event("e-shape", json!({"message": 5}))),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        refusal(
            "a message without message_id and chat_id",
            events().json(message_event(
                "e-ids",
                json!({"sender": sender, "message": no_ids}),
            )),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        refusal(
            "a group message while the open platform is unreachable",
            events().json(message_event(
                "e-group",
                json!({"sender": sender, "message": group_text}),
            )),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ])
    .await?;

    for event_id in ["e-shape", "e-ids", "e-group"] {
        let seen = app
            .store
            .feishu_event_seen("cli_unreachable", event_id)
            .await?;
        assert!(
            !seen,
            "refused event {event_id} was recorded, so Feishu's retry would be dropped"
        );
    }
    Ok(())
}

#[tokio::test]
async fn card_actions_that_fail_verification_or_name_no_card_of_the_app_decide_nothing()
-> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let seeded = app.seed(&app.org).await?;
    let feishu_app = seeded.feishu_app_id;
    // The seed's turn was parked through the API: its approval has no card of this app.
    let approval_id = seeded.approval_id;
    let card = || Call::post(format!("/v1/channels/feishu/{feishu_app}/card"));
    let press = |event_id: &str, token: &str, event: Value| {
        json!({
            "schema": "2.0",
            "header": {"event_id": event_id, "event_type": "card.action.trigger", "token": token},
            "event": event,
        })
    };
    let approve = json!({
        "operator": {"open_id": "ou_presser"},
        "action": {"value": {"approval_id": approval_id, "decision": "approve"}, "tag": "button"},
    });
    app.assert_refused(vec![
        refusal(
            "a press with the wrong token",
            card().json(press("p-token", "guess", approve.clone())),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        refusal(
            "a press of the wrong shape",
            card().json(press("p-shape", "verification-token", json!({"action": 5}))),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ])
    .await?;

    for (event_id, event) in [
        ("p-foreign", approve.clone()),
        (
            "p-no-value",
            json!({"operator": {"open_id": "ou_presser"}, "action": {"value": {}}}),
        ),
        (
            "p-decision",
            json!({"operator": {"open_id": "ou_presser"},
                   "action": {"value": {"approval_id": approval_id, "decision": "maybe"}}}),
        ),
    ] {
        let answered = app
            .accepted(card().json(press(event_id, "verification-token", event)))
            .await?;
        assert_eq!(answered.body["toast"]["type"], "error", "{}", answered.body);
    }
    let approval = app
        .store
        .approval(app.org.id, approval_id.parse()?)
        .await?
        .expect("the seeded approval");
    assert_eq!(approval.status, "pending", "a press decided it");
    assert_eq!(approval.decided_by, None);
    Ok(())
}

#[tokio::test]
async fn without_a_secrets_key_the_feishu_routes_are_503() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.feishu.secrets_key = None;
    })
    .await?;
    // An app sealed with a key this gateway does not have.
    let key = sable_store::SecretsKey::from_base64(&sable_store::SecretsKey::generate_base64())?;
    let input = sable_gateway::FeishuAppInput {
        org_id: app.org.id,
        app_id: "cli_sealed".to_owned(),
        mode: "webhook".to_owned(),
        base_url: None,
        agent: None,
        require_mention: None,
        stream_replies: None,
        secrets: sable_store::FeishuSecrets {
            app_secret: "app-secret".to_owned(),
            verification_token: "verification-token".to_owned(),
            encrypt_key: None,
        },
    };
    let sealed =
        sable_gateway::build_feishu_app(input, &key, &sable_runtime::AgentCatalog::default())
            .map_err(anyhow::Error::msg)?;
    app.store
        .create_feishu_app(&sealed, &sable_store::Actor::system())
        .await?;

    app.assert_refused(vec![
        refusal(
            "creating an app",
            Call::post(APPS)
                .key(&app.org.admin_key)
                .json(feishu_app_body("cli_new")),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        refusal(
            "a callback",
            Call::post(sable_gateway::feishu_webhook_path("cli_sealed"))
                .json(json!({"type": "url_verification", "token": "verification-token"})),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ])
    .await
}
