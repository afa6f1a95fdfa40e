//! The permission table walked: every rule with a key of every role (and none), each
//! answered exactly as the table says; and every rule's route with org A's most
//! privileged key against org B's objects: 404, and the store unchanged.

use axum::http::StatusCode;
use sable_core::Role;
use sable_gateway::permissions::{Access, RULES, Rule};
use serde_json::{Value, json};

use crate::support::{Backend, Call, Reply, Seeded, TestApp, changes};

on_both_backends!(
    every_role_gets_exactly_what_the_permission_table_says,
    a_key_of_one_org_finds_nothing_of_another_org_on_any_route,
);

/// The rule's route with each `{param}` filled from `seeded` (the org's objects) and
/// `org_id`; a body for the methods that take one (not a valid one: the permission
/// check answers before the body is read, and an allowed call answers 4xx without
/// writing).
fn call_of(rule: &Rule, seeded: &Seeded, org_id: &str) -> Call {
    call_with(rule, seeded, org_id, json!({"unknown_field": true}))
}

/// [`call_of`] with `body` for the methods that take one.
fn call_with(rule: &Rule, seeded: &Seeded, org_id: &str, body: Value) -> Call {
    let path = rule
        .path
        .replace("{session_id}", &seeded.session_id)
        .replace("{turn_id}", &seeded.turn_id)
        .replace("{approval_id}", &seeded.approval_id)
        .replace("{id}", &seeded.cron_task_id)
        .replace("{prefix}", &seeded.key_prefix)
        .replace("{app_id}", &seeded.feishu_app_id)
        .replace("{org_id}", org_id)
        .replace("{agent_id}", &seeded.agent_id)
        .replace("{name}", name_of(rule, seeded))
        .replace("{*path}", "app.js")
        .replace("{response_id}", &format!("resp_{}", seeded.turn_id))
        .replace("{model}", &format!("agent:{}", seeded.agent_id));
    let call = match rule.method {
        // A live event stream never ends: HEAD answers its status without the stream.
        "GET" if path.ends_with("/events") => Call::new(axum::http::Method::HEAD, path),
        "GET" => Call::get(path),
        "POST" => Call::post(path),
        "PATCH" => Call::patch(path),
        "PUT" => Call::put(path),
        "DELETE" => Call::delete(path),
        other => panic!("the table names a method the test cannot send: {other}"),
    };
    match rule.method {
        "POST" | "PATCH" | "PUT" => call.json(body),
        _ => call,
    }
}

/// The `{name}` of a rule's route: the org's model profile, provider or MCP server.
fn name_of<'a>(rule: &Rule, seeded: &'a Seeded) -> &'a str {
    if rule.path.starts_with("/v1/providers") {
        &seeded.provider_name
    } else if rule.path.starts_with("/v1/mcp-servers") {
        &seeded.mcp_server_name
    } else {
        &seeded.profile_name
    }
}

/// True when `reply` is the permission check's refusal (or authentication's).
fn refused(reply: &Reply) -> bool {
    // A HEAD answer has no body to name its code: its status says it.
    let code = if reply.body.is_null() {
        match reply.status {
            StatusCode::FORBIDDEN => Some("forbidden"),
            StatusCode::UNAUTHORIZED => Some("unauthorized"),
            _ => None,
        }
    } else {
        reply.body["error"]["code"].as_str()
    };
    (reply.status == StatusCode::FORBIDDEN && code == Some("forbidden"))
        // The OpenAI-compatible routes say it in OpenAI's words.
        || (reply.status == StatusCode::UNAUTHORIZED
            && matches!(code, Some("unauthorized" | "invalid_api_key")))
}

async fn every_role_gets_exactly_what_the_permission_table_says(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let seeded = app.seed(&app.org).await?;
    let org_id = app.org.id.to_string();
    let mut callers: Vec<(Option<Role>, Option<String>)> = app
        .org
        .keys
        .iter()
        .map(|(role, key)| (Some(*role), Some(key.clone())))
        .collect();
    callers.push((Some(Role::Platform), Some(app.platform_key.clone())));
    callers.insert(0, (None, None));
    let mut wrong = Vec::new();
    let mut checked = 0;
    for rule in RULES {
        for (role, key) in &callers {
            let mut call = call_of(rule, &seeded, &org_id);
            if let Some(key) = key {
                call = call.key(key);
            }
            let reply = app.send(call).await;
            let allowed = match (rule.access, role) {
                (Access::Public, _) => true,
                (Access::AtLeast(_), None) => false,
                (Access::AtLeast(needed), Some(role)) => role.allows(needed),
            };
            checked += 1;
            // A public channel callback verifies its own signature (401 `unauthorized`
            // from the channel, not from the table): only 403 counts as the table's.
            let table_refused = if rule.access == Access::Public {
                reply.status == StatusCode::FORBIDDEN
            } else {
                refused(&reply)
            };
            if allowed == table_refused {
                wrong.push(format!(
                    "{} {} as {}: {} {} (the table {})",
                    rule.method,
                    rule.path,
                    role.map_or("no key", Role::as_str),
                    reply.status,
                    reply.body,
                    if allowed { "allows it" } else { "refuses it" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} calls were answered against the permission table:\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );
    assert!(checked >= RULES.len() * 7, "every rule with every caller");
    Ok(())
}

async fn a_key_of_one_org_finds_nothing_of_another_org_on_any_route(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let theirs = app.seed(&app.other_org).await?;
    app.seed(&app.org).await?;
    let owner = app
        .org
        .keys
        .iter()
        .find(|(role, _)| *role == Role::Owner)
        .map(|(_, key)| key.clone())
        .expect("an owner key");
    let their_ids = [
        &theirs.session_id,
        &theirs.turn_id,
        &theirs.approval_id,
        &theirs.cron_task_id,
        &theirs.key_prefix,
        &theirs.feishu_app_id,
        &theirs.agent_id,
        &theirs.profile_name,
        &theirs.provider_name,
        &theirs.mcp_server_name,
    ];
    let their_org = app.other_org.id.to_string();
    let before = app.fingerprint().await?;
    let mut wrong = Vec::new();
    let mut reaching = 0;
    for rule in RULES.iter().filter(|rule| rule.access != Access::Public) {
        // On an object, a valid body, so that only the object's org can refuse it.
        let call = match valid_body(rule).filter(|_| rule.path.contains('{')) {
            Some(body) => call_with(rule, &theirs, &their_org, body),
            None => call_of(rule, &theirs, &their_org),
        };
        let reply = app.send(call.key(&owner)).await;
        // A route no org key may call (the platform's: setting quotas) is refused by the
        // table whatever the object, which tells nothing about it.
        if matches!(rule.access, Access::AtLeast(needed) if !Role::Owner.allows(needed)) {
            if !refused(&reply) {
                wrong.push(format!(
                    "{} {}: {} {} (expected the table's 403)",
                    rule.method, rule.path, reply.status, reply.body
                ));
            }
            continue;
        }
        // Names of configuration items are per org: a PUT names the caller's own item
        // (B's of that name is out of reach, and the body here is refused).
        if rule.method == "PUT" {
            if reply.status != StatusCode::UNPROCESSABLE_ENTITY {
                wrong.push(format!(
                    "PUT {}: {} {} (expected 422 for the invalid body)",
                    rule.path, reply.status, reply.body
                ));
            }
        } else if rule.path.contains('{') {
            reaching += 1;
            if reply.status != StatusCode::NOT_FOUND {
                wrong.push(format!(
                    "{} {}: {} {} (expected 404)",
                    rule.method, rule.path, reply.status, reply.body
                ));
            }
        } else if let Some(id) = their_ids
            .iter()
            .chain([&&their_org])
            .find(|id| mentions(&reply.body, id))
        {
            wrong.push(format!(
                "{} {}: shows the other org's {id}: {}",
                rule.method, rule.path, reply.body
            ));
        }
    }
    // A message to their session, and their session's history through the OpenAI door.
    let into_their_session = app
        .send(
            Call::post("/v1/messages")
                .key(&owner)
                .json(json!({"text": "hi", "session_id": theirs.session_id})),
        )
        .await;
    if into_their_session.status != StatusCode::NOT_FOUND {
        wrong.push(format!(
            "POST /v1/messages into their session: {} {}",
            into_their_session.status, into_their_session.body
        ));
    }
    assert!(
        reaching >= 14,
        "the table names objects on {reaching} routes only"
    );
    assert!(
        wrong.is_empty(),
        "org A reached org B's objects:\n  {}",
        wrong.join("\n  ")
    );
    let changed = changes(&before, &app.fingerprint().await?);
    assert!(
        changed.is_empty(),
        "calls against another org's objects changed the store:\n  {}",
        changed.join("\n  ")
    );
    Ok(())
}

/// A body the route would accept, for the routes on an object that take one.
fn valid_body(rule: &Rule) -> Option<Value> {
    match (rule.method, rule.path) {
        ("POST", "/v1/approvals/{approval_id}") => Some(json!({"decision": "approve"})),
        ("PATCH", "/v1/cron/tasks/{id}") => Some(json!({"enabled": false})),
        ("POST", "/v1/orgs/{org_id}/keys") => Some(json!({"name": "intruder"})),
        ("PUT", "/v1/orgs/{org_id}/quotas") => Some(json!({"requests_per_minute": 0})),
        ("POST" | "PATCH" | "PUT", _) => Some(json!({})),
        _ => None,
    }
}

/// True when `id` appears anywhere in `body` as a string.
fn mentions(body: &Value, id: &str) -> bool {
    match body {
        Value::String(text) => text.contains(id),
        Value::Array(items) => items.iter().any(|item| mentions(item, id)),
        Value::Object(fields) => fields.values().any(|value| mentions(value, id)),
        _ => false,
    }
}
