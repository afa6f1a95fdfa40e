//! `GET /v1/approvals` and `POST /v1/approvals/{approval_id}` (`routes/approvals.rs`).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Backend, Call, Refusal, TestApp, refusal, unauthorized, wrong_method};

on_both_backends!(bad_decisions_and_other_orgs_or_decided_approvals_are_refused);

async fn bad_decisions_and_other_orgs_or_decided_approvals_are_refused(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let pending = app.park_a_turn(&app.org).await?;
    let decided = app.park_a_turn(&app.org).await?;
    let first = app
        .accepted(decide(&app, &decided).json(json!({"decision": "approve"})))
        .await?;
    assert_eq!(first.body["status"], "approved");
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/approvals", None);
    refusals.extend(unauthorized(
        &app,
        &Method::POST,
        &format!("/v1/approvals/{pending}"),
        Some(&json!({"decision": "approve"})),
    ));
    refusals.extend(invalid_decisions(&app, &pending));
    refusals.extend(unknown_or_decided(&app, &foreign.approval_id, &decided));
    refusals.extend([
        refusal(
            "an unknown status filter",
            Call::get("/v1/approvals?status=maybe").key(&app.org.member_key),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        wrong_method(&app, Method::GET, &format!("/v1/approvals/{pending}")),
        wrong_method(&app, Method::POST, "/v1/approvals"),
    ]);

    app.assert_refused(refusals).await?;

    let listing = app
        .accepted(Call::get("/v1/approvals?status=pending").key(&app.org.member_key))
        .await?;
    let listed: Vec<&Value> = listing.body["approvals"]
        .as_array()
        .map(|approvals| {
            approvals
                .iter()
                .map(|approval| &approval["approval_id"])
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        listed,
        [&json!(pending)],
        "only the caller's own pending approval is listed"
    );
    Ok(())
}

fn decide(app: &TestApp, approval_id: &str) -> Call {
    Call::post(format!("/v1/approvals/{approval_id}")).key(&app.org.operator_key)
}

/// Decisions on a pending approval that are no valid decision.
fn invalid_decisions(app: &TestApp, pending: &str) -> Vec<Refusal> {
    let mut refusals: Vec<Refusal> = [
        ("no decision", json!({"scope": "once"})),
        ("an unknown decision", json!({"decision": "maybe"})),
        (
            "an unknown scope",
            json!({"decision": "approve", "scope": "forever"}),
        ),
        (
            "a comment over 2000 characters",
            json!({"decision": "deny", "comment": "x".repeat(2_001)}),
        ),
        (
            "a NUL in the comment",
            json!({"decision": "deny", "comment": "no\u{0}pe"}),
        ),
        (
            "an unknown field",
            json!({"decision": "approve", "reason": "ok"}),
        ),
    ]
    .into_iter()
    .map(|(what, body)| {
        refusal(
            what,
            decide(app, pending).json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    })
    .collect();
    refusals.extend([
        refusal(
            "malformed JSON",
            decide(app, pending)
                .header("content-type", "application/json")
                .body("{\"decision\""),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        refusal(
            "a form body",
            decide(app, pending)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("decision=approve"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ]);
    refusals
}

/// Valid decisions on approvals the caller cannot decide: 404 for those it cannot see,
/// 409 for one decided already.
fn unknown_or_decided(app: &TestApp, foreign: &str, decided: &str) -> Vec<Refusal> {
    let approve = json!({"decision": "approve"});
    let not_found = |what: &str, id: &str| {
        refusal(
            what,
            decide(app, id).json(approve.clone()),
            StatusCode::NOT_FOUND,
            "not_found",
        )
    };
    vec![
        not_found("a malformed id", "not-a-uuid"),
        not_found("an id nobody has", &uuid::Uuid::now_v7().to_string()),
        not_found("another org's approval", foreign),
        refusal(
            "approving a decided approval again",
            decide(app, decided).json(approve.clone()),
            StatusCode::CONFLICT,
            "conflict",
        ),
        refusal(
            "denying an approved approval",
            decide(app, decided).json(json!({"decision": "deny"})),
            StatusCode::CONFLICT,
            "conflict",
        ),
    ]
}
