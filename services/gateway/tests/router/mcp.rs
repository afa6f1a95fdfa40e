//! `/mcp` (`routes/mcp/`): refused before any MCP handling without a valid key, other
//! methods than POST refused, and an `initialize` under any `Host` answered.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Backend, Call, TestApp, refusal, unauthorized};

fn initialize() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "router-test", "version": "0"}}
    })
}

async fn the_mcp_endpoint_refuses_bad_keys_and_other_methods(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let mut refusals = unauthorized(&app, &Method::POST, "/mcp", Some(&initialize()));
    for method in [Method::GET, Method::DELETE] {
        refusals.push(refusal(
            format!("{method} /mcp (stateless: no server stream, no session to end)"),
            Call::new(method, "/mcp")
                .key(&app.org.member_key)
                .header("host", "sable.example.com")
                .header("accept", "application/json, text/event-stream"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ));
    }
    app.assert_refused(refusals).await?;

    let reply = app
        .send(
            Call::post("/mcp")
                .key(&app.org.member_key)
                .header("host", "sable.example.com")
                .header("accept", "application/json, text/event-stream")
                .json(initialize()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        reply.headers.get("mcp-session-id").is_none(),
        "served stateless: {reply:?}"
    );
    let body = reply.body.to_string();
    assert!(
        body.contains("serverInfo") && body.contains("sable"),
        "{body}"
    );
    Ok(())
}

on_both_backends!(the_mcp_endpoint_refuses_bad_keys_and_other_methods);
