//! The org's own configuration (`routes/org_config.rs`): a change that does not hold
//! together is refused naming the item and field and changes nothing; a provider's key
//! is never answered.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{Backend, Call, TestApp, refusal};

/// Makes the same call again (a body is sent once).
type CallOf = Box<dyn Fn() -> Call>;

on_both_backends!(
    invalid_configuration_is_refused_naming_the_field_and_changes_nothing,
    a_providers_key_is_write_only,
);

async fn invalid_configuration_is_refused_naming_the_field_and_changes_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let admin = app.org.admin_key.clone();
    app.accepted(
        Call::put("/v1/model-profiles/fast")
            .key(&admin)
            .json(json!({"provider": "openai", "model": "small"})),
    )
    .await?;
    app.accepted(
        Call::put("/v1/agents/support")
            .key(&admin)
            .json(json!({"prompt": "You help.", "model": {"profile": "fast"}})),
    )
    .await?;
    let put = |path: &'static str, body: serde_json::Value| -> CallOf {
        let admin = admin.clone();
        Box::new(move || Call::put(path).key(&admin).json(body.clone()))
    };
    let cases: Vec<(&str, CallOf, &str)> = vec![
        (
            "an unknown profile",
            put(
                "/v1/agents/other",
                json!({"prompt": "x", "model": {"profile": "nope"}}),
            ),
            "agent 'other': model.profile: no model profile named 'nope'",
        ),
        (
            "a field of the wrong type",
            put(
                "/v1/agents/other",
                json!({"prompt": "x", "limits": {"history_messages": "many"}}),
            ),
            "limits.history_messages",
        ),
        (
            "an unknown field",
            put("/v1/agents/other", json!({"prompt": "x", "modle": {}})),
            "unknown field `modle`",
        ),
        (
            "no prompt",
            put("/v1/agents/other", json!({"name": "Other"})),
            "prompt:",
        ),
        (
            "a provider reading the deployment's environment",
            put(
                "/v1/providers/mine",
                json!({"kind": "openai", "base_url": "http://x", "api_key_env": "SABLE_SECRETS_KEY"}),
            ),
            "api_key_env:",
        ),
        (
            "a profile on an unknown provider",
            put(
                "/v1/model-profiles/slow",
                json!({"provider": "ghost", "model": "m"}),
            ),
            "model profile 'slow': provider: no provider named 'ghost'",
        ),
        (
            "a default agent the org does not have",
            put("/v1/org-settings", json!({"default_agent": "ghost"})),
            "default_agent: no agent named 'ghost'",
        ),
        (
            "deleting a profile an agent names",
            {
                let admin = admin.clone();
                Box::new(move || Call::delete("/v1/model-profiles/fast").key(&admin))
            },
            "agent 'support': model.profile: no model profile named 'fast'",
        ),
    ];
    let mut refusals = Vec::new();
    for (what, call, expected) in cases {
        let reply = app.send(call()).await;
        let message = reply.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains(expected),
            "{what}: {} {}",
            reply.status,
            reply.body
        );
        refusals.push(refusal(
            what,
            call(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ));
    }
    app.assert_refused(refusals).await?;
    Ok(())
}

async fn a_providers_key_is_write_only(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let admin = app.org.admin_key.clone();
    let secret = "sk-write-only-0123456789";
    let created = app
        .accepted(Call::put("/v1/providers/openai").key(&admin).json(
            json!({"kind": "openai", "base_url": "http://provider.invalid/v1", "api_key": secret}),
        ))
        .await?;
    assert_eq!(created.status, StatusCode::CREATED);
    // Replaced without a key: the stored one is kept.
    app.accepted(
        Call::put("/v1/providers/openai")
            .key(&admin)
            .json(json!({"kind": "openai", "base_url": "http://provider2.invalid/v1"})),
    )
    .await?;
    let listed = app.accepted(Call::get("/v1/providers").key(&admin)).await?;
    let openai = listed.body["providers"]
        .as_array()
        .and_then(|providers| {
            providers
                .iter()
                .find(|provider| provider["name"] == "openai")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(openai["source"], "org", "{}", listed.body);
    assert_eq!(openai["api_key_set"], true, "{}", listed.body);
    assert_eq!(openai["base_url"], "http://provider2.invalid/v1");
    let audit = app.accepted(Call::get("/v1/audit").key(&admin)).await?;
    for body in [&created.body, &listed.body, &audit.body] {
        assert!(!body.to_string().contains(secret), "{body}");
    }
    // A member reads neither the providers nor writes them.
    let member = app
        .send(Call::get("/v1/providers").key(&app.org.member_key))
        .await;
    assert_eq!(member.status, StatusCode::FORBIDDEN);
    Ok(())
}
