//! `/v1/cron/tasks`, `/v1/cron/tasks/{id}` (`GET`, `PATCH`, `DELETE`), `.../run`,
//! `.../runs` and `/v1/cron/preview` (`routes/cron.rs`).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Backend, Call, Refusal, Seeded, TestApp, refusal, unauthorized, wrong_method,
};

on_both_backends!(bad_cron_requests_are_refused_and_change_no_task);

async fn bad_cron_requests_are_refused_and_change_no_task(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let own = app.seed(&app.org).await?;
    let mut refusals = keyless(&app, &own.cron_task_id);
    refusals.extend(invalid_creations(&app, &own, &foreign));
    refusals.extend(invalid_edits(&app, &own.cron_task_id, &foreign.session_id));
    refusals.extend(invalid_run_listings(&app, &own.cron_task_id));
    refusals.extend(invalid_previews(&app));
    for (what, id) in [
        ("a malformed id", "not-a-uuid".to_owned()),
        ("an id nobody has", uuid::Uuid::now_v7().to_string()),
        ("another org's task", foreign.cron_task_id.clone()),
    ] {
        refusals.extend(unseen_task(&app, what, &id));
    }
    refusals.extend([
        wrong_method(&app, Method::PUT, "/v1/cron/tasks"),
        wrong_method(&app, Method::PUT, &task_path(&own.cron_task_id, "")),
        wrong_method(&app, Method::GET, &task_path(&own.cron_task_id, "/run")),
        wrong_method(&app, Method::POST, &task_path(&own.cron_task_id, "/runs")),
        wrong_method(&app, Method::GET, "/v1/cron/preview"),
    ]);

    app.assert_refused(refusals).await?;

    let preview = app
        .accepted(
            Call::post("/v1/cron/preview")
                .key(&app.org.operator_key)
                .json(
                    json!({"schedule": "0 9 * * *", "after": "2025-01-01T00:00:00Z", "count": 2}),
                ),
        )
        .await?;
    assert_eq!(
        preview.body["fires"],
        json!(["2025-01-01T09:00:00+00:00", "2025-01-02T09:00:00+00:00"])
    );
    Ok(())
}

fn task_path(id: &str, rest: &str) -> String {
    format!("/v1/cron/tasks/{id}{rest}")
}

fn valid_task() -> Value {
    json!({"name": "n", "schedule": "0 9 * * *", "prompt": "p"})
}

fn valid_task_with(field: &str, value: Value) -> Value {
    let mut body = valid_task();
    body[field] = value;
    body
}

/// Every cron route without a valid key.
fn keyless(app: &TestApp, task_id: &str) -> Vec<Refusal> {
    let rename = json!({"name": "m"});
    let daily = json!({"schedule": "@daily"});
    let valid = valid_task();
    [
        (Method::POST, "/v1/cron/tasks".to_owned(), Some(&valid)),
        (Method::GET, "/v1/cron/tasks".to_owned(), None),
        (Method::GET, task_path(task_id, ""), None),
        (Method::PATCH, task_path(task_id, ""), Some(&rename)),
        (Method::DELETE, task_path(task_id, ""), None),
        (Method::POST, task_path(task_id, "/run"), None),
        (Method::GET, task_path(task_id, "/runs"), None),
        (Method::POST, "/v1/cron/preview".to_owned(), Some(&daily)),
    ]
    .into_iter()
    .flat_map(|(method, path, body)| unauthorized(app, &method, &path, body))
    .collect()
}

fn invalid_creations(app: &TestApp, own: &Seeded, foreign: &Seeded) -> Vec<Refusal> {
    let create = || Call::post("/v1/cron/tasks").key(&app.org.operator_key);
    let both_targets = json!({"session_id": own.session_id, "conversation": {"id": "c"}});
    let mut refusals: Vec<Refusal> = [
        ("no prompt", json!({"name": "n", "schedule": "0 9 * * *"})),
        ("an unknown field", valid_task_with("colour", json!("blue"))),
        (
            "a schedule that does not parse",
            valid_task_with("schedule", json!("every day")),
        ),
        (
            "an unknown time zone",
            valid_task_with("timezone", json!("Mars/Olympus")),
        ),
        (
            "an unknown misfire policy",
            valid_task_with("misfire", json!("sometimes")),
        ),
        (
            "a target that is no object",
            valid_task_with("target", json!("session")),
        ),
        (
            "a target session that is no id",
            valid_task_with("target", json!({"session_id": "s"})),
        ),
        (
            "another org's session as target",
            valid_task_with("target", json!({"session_id": foreign.session_id})),
        ),
        (
            "a conversation target without an id",
            valid_task_with("target", json!({"conversation": {}})),
        ),
        (
            "a target naming a session and a conversation",
            valid_task_with("target", both_targets),
        ),
    ]
    .into_iter()
    .map(|(what, body)| {
        refusal(
            format!("create with {what}"),
            create().json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    })
    .collect();
    refusals.extend([
        refusal(
            "create with an agent the catalog lacks",
            create().json(valid_task_with("agent", json!("nobody"))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_agent",
        ),
        refusal(
            "create with malformed JSON",
            create()
                .header("content-type", "application/json")
                .body("{\"name\":"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        refusal(
            "create with a text/plain body",
            create()
                .header("content-type", "text/plain")
                .body(valid_task().to_string()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ]);
    refusals
}

/// Edits of the caller's own task that must leave it as it was.
fn invalid_edits(app: &TestApp, task_id: &str, foreign_session: &str) -> Vec<Refusal> {
    let edit = || Call::patch(task_path(task_id, "")).key(&app.org.operator_key);
    let mut refusals: Vec<Refusal> = [
        (
            "a schedule that does not parse",
            json!({"schedule": "now and then"}),
        ),
        ("an unknown time zone", json!({"timezone": "Nowhere/Town"})),
        ("an unknown field", json!({"owner": "me"})),
        ("an unknown misfire policy", json!({"misfire": "later"})),
        (
            "a target of another org's session",
            json!({"target": {"session_id": foreign_session}}),
        ),
    ]
    .into_iter()
    .map(|(what, body)| {
        refusal(
            format!("edit with {what}"),
            edit().json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    })
    .collect();
    refusals.push(refusal(
        "edit with an agent the catalog lacks",
        edit().json(json!({"agent": "nobody"})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_agent",
    ));
    refusals
}

fn invalid_run_listings(app: &TestApp, task_id: &str) -> Vec<Refusal> {
    let runs = |query: &str| Call::get(task_path(task_id, &format!("/runs{query}")));
    vec![
        refusal(
            "runs with a limit of 0",
            runs("?limit=0").key(&app.org.operator_key),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        refusal(
            "runs with a limit over 200",
            runs("?limit=201").key(&app.org.operator_key),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        refusal(
            "runs with a limit that is no number",
            runs("?limit=all").key(&app.org.operator_key),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ]
}

fn invalid_previews(app: &TestApp) -> Vec<Refusal> {
    [
        (
            "a schedule that does not parse",
            json!({"schedule": "soon"}),
        ),
        ("a count of 0", json!({"schedule": "@daily", "count": 0})),
        (
            "a count over 100",
            json!({"schedule": "@daily", "count": 101}),
        ),
        (
            "a negative count",
            json!({"schedule": "@daily", "count": -1}),
        ),
        (
            "an after that is no time",
            json!({"schedule": "@daily", "after": "yesterday"}),
        ),
        (
            "an unknown field",
            json!({"schedule": "@daily", "until": "never"}),
        ),
    ]
    .into_iter()
    .map(|(what, body)| {
        refusal(
            format!("preview with {what}"),
            Call::post("/v1/cron/preview")
                .key(&app.org.operator_key)
                .json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    })
    .collect()
}

/// Every route of one task, for a task id the caller cannot see: 404.
fn unseen_task(app: &TestApp, what: &str, id: &str) -> Vec<Refusal> {
    [
        ("show", Call::get(task_path(id, ""))),
        (
            "edit",
            Call::patch(task_path(id, "")).json(json!({"name": "mine now"})),
        ),
        ("delete", Call::delete(task_path(id, ""))),
        ("run", Call::post(task_path(id, "/run"))),
        ("list the runs of", Call::get(task_path(id, "/runs"))),
    ]
    .into_iter()
    .map(|(action, call)| {
        refusal(
            format!("{action} {what}"),
            call.key(&app.org.operator_key),
            StatusCode::NOT_FOUND,
            "not_found",
        )
    })
    .collect()
}
