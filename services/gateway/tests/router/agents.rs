//! `GET /v1/agents` (`routes/agents.rs`).

use axum::http::Method;

use crate::support::{Backend, Call, TestApp, unauthorized, wrong_method};

#[tokio::test]
async fn the_agent_list_refuses_bad_keys_and_other_methods() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/agents", None);
    refusals.push(wrong_method(&app, Method::POST, "/v1/agents"));

    app.assert_refused(refusals).await?;

    let listed = app
        .accepted(Call::get("/v1/agents").key(&app.org.member_key))
        .await?;
    assert_eq!(listed.body["agents"][0]["id"], "default");
    assert_eq!(listed.body["agents"][0]["default"], true);
    Ok(())
}
