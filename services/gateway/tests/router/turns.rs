//! `GET /v1/turns/{turn_id}` (`routes/turns.rs`).

use axum::http::{Method, StatusCode};

use crate::support::{Backend, Call, TestApp, refusal, unauthorized, wrong_method};

on_both_backends!(turns_that_are_malformed_unknown_or_another_orgs_are_not_found);

async fn turns_that_are_malformed_unknown_or_another_orgs_are_not_found(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let own = app.seed(&app.org).await?;
    let get = |id: &str| Call::get(format!("/v1/turns/{id}")).key(&app.org.admin_key);
    let not_found =
        |what: &str, id: &str| refusal(what, get(id), StatusCode::NOT_FOUND, "not_found");
    let mut refusals = unauthorized(
        &app,
        &Method::GET,
        &format!("/v1/turns/{}", own.turn_id),
        None,
    );
    refusals.extend([
        not_found("a malformed id", "not-a-uuid"),
        not_found("an id nobody has", &uuid::Uuid::now_v7().to_string()),
        not_found("another org's turn", &foreign.turn_id),
        not_found("another kind of id", &own.session_id),
        refusal(
            "an id that is not UTF-8",
            get("%FF"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        wrong_method(&app, Method::DELETE, &format!("/v1/turns/{}", own.turn_id)),
        wrong_method(&app, Method::POST, &format!("/v1/turns/{}", own.turn_id)),
    ]);
    app.assert_refused(refusals).await?;
    app.accepted(get(&own.turn_id)).await?;
    Ok(())
}
