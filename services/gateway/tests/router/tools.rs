//! `GET /v1/tools` and `GET /v1/mcp/servers` (`routes/tools.rs`).

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{Backend, Call, TestApp, assert_error, refusal, unauthorized, wrong_method};

#[tokio::test]
async fn tool_views_refuse_bad_keys_unknown_agents_and_other_methods() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/tools", None);
    refusals.extend(unauthorized(&app, &Method::GET, "/v1/mcp/servers", None));
    refusals.extend([
        refusal(
            "an agent the catalog lacks",
            Call::get("/v1/tools?agent=nobody").key(&app.org.member_key),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_agent",
        ),
        wrong_method(&app, Method::POST, "/v1/tools"),
        wrong_method(&app, Method::DELETE, "/v1/mcp/servers"),
    ]);

    app.assert_refused(refusals).await?;

    let tools = app
        .accepted(Call::get("/v1/tools?agent=default").key(&app.org.member_key))
        .await?;
    assert_eq!(
        tools.body,
        json!({"tools": []}),
        "the test app registers no tools"
    );
    let servers = app
        .accepted(Call::get("/v1/mcp/servers").key(&app.org.member_key))
        .await?;
    assert_eq!(servers.body, json!({"servers": []}));
    Ok(())
}

#[tokio::test]
async fn an_unreachable_mcp_sidecar_is_503() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        let sidecar = sable_tools::McpCatalog::connect_lazy("http://127.0.0.1:1")
            .expect("a well-formed sidecar URL");
        config.tools.set_mcp(sidecar);
    })
    .await?;

    let reply = app
        .send(Call::get("/v1/mcp/servers").key(&app.org.member_key))
        .await;

    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    Ok(())
}
