//! The gateway as an MCP server end to end: an rmcp client speaks streamable HTTP to
//! `/mcp` of a real gateway (with a worker and the fake provider), lists the org's agents
//! as `ask_<agent>` tools and calls one, continues its session, reads the session as a
//! resource and an agent's system prompt as a prompt; another org's key sees the same
//! agents but none of the first org's sessions. The same again with the official MCP
//! Python SDK (`tests/e2e/mcp_client.py`, installed by `scripts/services.sh`), which
//! negotiates an older protocol version than rmcp.

use anyhow::Context;
use reqwest::StatusCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    GetPromptRequestParams, Implementation, ReadResourceRequestParams, ResourceContents,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::{StackOptions, TestStack};

type McpClient = RunningService<RoleClient, ClientConfig>;

/// An MCP client of gateway 0's `/mcp`, signed with `key`.
async fn connect(stack: &TestStack, key: &str) -> anyhow::Result<McpClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(stack.url(0, "/mcp"))
        .auth_header(key.to_owned());
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("sable-e2e", "0.0.0"),
    )
    .serve(transport)
    .await?;
    Ok(client)
}

/// Creates another org with a key of its own; returns the key.
async fn second_org_key(stack: &TestStack) -> anyhow::Result<String> {
    let org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    stack
        .sable(&["admin", "key", "create", "--org", &org])
        .await
}

fn arguments(value: &Value) -> rmcp::model::JsonObject {
    value.as_object().cloned().expect("an object literal")
}

async fn ask(
    client: &McpClient,
    tool: &str,
    message_and_session: &Value,
) -> anyhow::Result<CallToolResult> {
    let params =
        CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments(message_and_session));
    Ok(client.call_tool(params).await?)
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The session's history as the resource reads it.
async fn read_session(client: &McpClient, uri: &str) -> anyhow::Result<Value> {
    let read = client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await?;
    let Some(ResourceContents::TextResourceContents { text, .. }) = read.contents.first() else {
        anyhow::bail!("no text contents: {read:?}");
    };
    Ok(serde_json::from_str(text)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_lists_the_orgs_agents_calls_one_and_another_org_sees_only_its_own()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..StackOptions::default()
    })
    .await?;
    let client = connect(&stack, &stack.key).await?;
    assert_tools_are_the_agents(&stack, &client).await?;
    let session_id = assert_ask_answers_and_continues(&stack, &client).await?;
    let uri = format!("sable://sessions/{session_id}");
    assert_session_resource(&client, &uri).await?;
    assert_prompts_are_system_prompts(&client).await?;

    let other_key = second_org_key(&stack).await?;
    let other = connect(&stack, &other_key).await?;
    assert_other_org_sees_only_its_own(&other, &uri, &session_id).await?;
    client.cancel().await?;
    other.cancel().await?;
    Ok(())
}

/// One `ask_<agent>` tool per agent `GET /v1/agents` lists, with a `message` argument.
async fn assert_tools_are_the_agents(stack: &TestStack, client: &McpClient) -> anyhow::Result<()> {
    let (status, agents) = stack.get(0, "/v1/agents").await?;
    assert_eq!(status, StatusCode::OK, "{agents}");
    let mut expected: Vec<String> = agents["agents"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|agent| format!("ask_{}", agent["id"].as_str().expect("an id")))
        .collect();
    let tools = client.list_all_tools().await?;
    let mut names: Vec<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    expected.sort();
    names.sort();
    assert_eq!(names, expected);
    assert!(names.contains(&"ask_default".to_owned()), "{names:?}");
    let schema = serde_json::to_value(&tools[0].input_schema)?;
    assert_eq!(schema["required"], json!(["message"]), "{schema}");
    assert!(schema["properties"]["session_id"].is_object(), "{schema}");
    Ok(())
}

/// A call answers with the agent's reply and the session; a second call with that
/// session_id continues it. Each call is one turn through the API's intake, audited with
/// the key as its actor.
async fn assert_ask_answers_and_continues(
    stack: &TestStack,
    client: &McpClient,
) -> anyhow::Result<String> {
    let first = ask(client, "ask_default", &json!({"message": "hello over mcp"})).await?;
    assert_eq!(first.is_error, Some(false), "{first:?}\n{}", stack.logs());
    assert!(
        text_of(&first).contains("echo: hello over mcp"),
        "{first:?}"
    );
    let structured = first
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(structured["reply"], "echo: hello over mcp", "{structured}");
    let session_id = structured["session_id"]
        .as_str()
        .expect("a session")
        .to_owned();
    assert!(
        text_of(&first).contains(&session_id),
        "the text names the session: {first:?}"
    );

    let second = ask(
        client,
        "ask_default",
        &json!({"message": "and again", "session_id": session_id}),
    )
    .await?;
    assert_eq!(second.is_error, Some(false), "{second:?}");
    let structured = second
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(structured["session_id"], session_id.as_str());
    assert_eq!(structured["reply"], "echo: and again");

    let turn_id = structured["turn_id"].as_str().expect("a turn");
    let (status, turn) = stack.get(0, &format!("/v1/turns/{turn_id}")).await?;
    assert_eq!(status, StatusCode::OK, "{turn}");
    assert_eq!(turn["status"], "done", "{turn}");
    let audited = stack
        .scalar(&format!(
            "SELECT count(*) FROM audit_events WHERE action = 'message.accepted' \
             AND actor LIKE 'key:%' AND session_id = '{session_id}'"
        ))
        .await?;
    assert_eq!(
        audited, 2,
        "each call is one audited acceptance with the key as actor"
    );

    let bad = ask(client, "ask_default", &json!({"message": ""})).await?;
    assert_eq!(
        bad.is_error,
        Some(true),
        "an empty message is a tool error: {bad:?}"
    );
    let unknown = ask(client, "ask_nobody", &json!({"message": "hi"})).await;
    assert!(
        unknown.is_err(),
        "an unknown tool is a protocol error: {unknown:?}"
    );
    Ok(session_id)
}

/// The session is listed as `sable://sessions/{id}` and reads as its history.
async fn assert_session_resource(client: &McpClient, uri: &str) -> anyhow::Result<()> {
    let resources = client.list_all_resources().await?;
    assert!(
        resources.iter().any(|resource| resource.uri == uri),
        "{uri} not in {resources:?}"
    );
    let history = read_session(client, uri).await?;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|message| message["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "hello over mcp",
            "echo: hello over mcp",
            "and again",
            "echo: and again"
        ],
        "{history}"
    );
    let templates = client.list_all_resource_templates().await?;
    assert!(
        templates
            .iter()
            .any(|template| template.uri_template == "sable://sessions/{id}"),
        "{templates:?}"
    );
    Ok(())
}

/// Each agent's system prompt (its AGENT.md) is a prompt named after the agent.
async fn assert_prompts_are_system_prompts(client: &McpClient) -> anyhow::Result<()> {
    let prompts = client.list_all_prompts().await?;
    assert!(
        prompts.iter().any(|prompt| prompt.name == "default"),
        "{prompts:?}"
    );
    let prompt = client
        .get_prompt(GetPromptRequestParams::new("default"))
        .await?;
    let agent_md =
        std::fs::read_to_string(sable_testkit::workspace_root().join("agents/default/AGENT.md"))?;
    let text = serde_json::to_value(&prompt.messages)?;
    assert_eq!(
        text[0]["content"]["text"].as_str().map(str::trim),
        Some(agent_md.trim()),
        "{text}"
    );
    let missing = client
        .get_prompt(GetPromptRequestParams::new("nobody"))
        .await;
    assert!(missing.is_err(), "{missing:?}");
    Ok(())
}

/// The other org is offered the same agents, lists none of the first org's sessions, and
/// can neither read nor continue one.
async fn assert_other_org_sees_only_its_own(
    other: &McpClient,
    uri: &str,
    session_id: &str,
) -> anyhow::Result<()> {
    let tools = other.list_all_tools().await?;
    assert!(
        tools.iter().any(|tool| tool.name == "ask_default"),
        "{tools:?}"
    );
    let resources = other.list_all_resources().await?;
    assert!(
        resources.iter().all(|resource| resource.uri != uri),
        "another org lists the session: {resources:?}"
    );
    let read = other
        .read_resource(ReadResourceRequestParams::new(uri))
        .await;
    let error = format!(
        "{:?}",
        read.expect_err("another org's session is not readable")
    );
    assert!(error.contains("no resource"), "{error}");
    let continued = ask(
        other,
        "ask_default",
        &json!({"message": "let me in", "session_id": session_id}),
    )
    .await?;
    assert_eq!(continued.is_error, Some(true), "{continued:?}");
    assert!(
        text_of(&continued).contains("no such session"),
        "{continued:?}"
    );
    // Its own call makes its own session, which it then lists.
    let own = ask(other, "ask_default", &json!({"message": "mine"})).await?;
    let own_session = own.structured_content.expect("structured")["session_id"]
        .as_str()
        .expect("a session")
        .to_owned();
    let resources = other.list_all_resources().await?;
    let uris: Vec<&str> = resources
        .iter()
        .map(|resource| resource.uri.as_str())
        .collect();
    assert_eq!(uris, [format!("sable://sessions/{own_session}")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_without_a_valid_key_is_refused_before_any_mcp_handling_and_any_host_is_served()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        ..StackOptions::default()
    })
    .await?;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "curl", "version": "0"}}
    });
    let post = |key: Option<&str>| {
        let mut request = stack
            .http
            .post(stack.url(0, "/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("host", "sable.example.com")
            .json(&initialize);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    for key in [None, Some("sk-not-a-key")] {
        let response = post(key).await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|value| value.to_str().ok()),
            Some(Some("Bearer realm=\"sable\""))
        );
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let response = post(Some(&stack.key)).await?;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a real hostname is served"
    );
    let body = response.text().await?;
    assert!(body.contains("\"serverInfo\""), "{body}");
    assert!(
        connect(&stack, "sk-not-a-key").await.is_err(),
        "rmcp's handshake fails"
    );
    Ok(())
}

/// Runs the Python SDK script against gateway 0 and returns what it printed.
async fn run_python_sdk(stack: &TestStack, other_key: &str) -> anyhow::Result<Value> {
    let script = sable_testkit::workspace_root().join("tests/e2e/mcp_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&stack.gateways[0].url)
        .arg(&stack.key)
        .arg(other_key)
        .output()
        .await
        .context("python3 runs (scripts/services.sh installs it and the mcp SDK)")?;
    crate::support::printed_json(stack, "the SDK script", &output)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_mcp_python_sdk_asks_an_agent_and_another_org_sees_only_its_own()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..StackOptions::default()
    })
    .await?;
    let other_key = second_org_key(&stack).await?;
    let seen = run_python_sdk(&stack, &other_key).await?;
    assert_eq!(seen["server"], "sable", "{seen}");
    assert!(
        seen["tools"]
            .as_array()
            .is_some_and(|tools| tools.contains(&json!("ask_default"))),
        "{seen}"
    );
    assert_eq!(seen["first"]["is_error"], false, "{seen}");
    assert_eq!(
        seen["first"]["text"][0], "echo: hello from python",
        "{seen}"
    );
    let session_id = seen["first"]["structured"]["session_id"]
        .as_str()
        .expect("a session");
    assert_eq!(
        seen["second"]["structured"]["session_id"], session_id,
        "{seen}"
    );
    assert_eq!(
        seen["second"]["structured"]["reply"], "echo: more",
        "{seen}"
    );
    let uri = format!("sable://sessions/{session_id}");
    assert_eq!(seen["resources"], json!([uri]), "{seen}");
    assert_eq!(
        seen["history"]["messages"].as_array().map(Vec::len),
        Some(4),
        "{seen}"
    );
    assert!(
        seen["prompt"]
            .as_str()
            .is_some_and(|prompt| prompt.starts_with("You are")),
        "{seen}"
    );
    assert_eq!(seen["other_tools"], seen["tools"], "{seen}");
    assert_eq!(
        seen["other_resources"],
        json!([]),
        "another org lists no session of the first: {seen}"
    );
    assert!(
        seen["other_read"]
            .as_str()
            .is_some_and(|read| read.contains("no resource")),
        "another org cannot read the session: {seen}"
    );
    Ok(())
}
