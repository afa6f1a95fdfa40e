//! MCP tools end to end: `sable mcp-sidecar` keeps the servers of an `mcp.toml`
//! connected (the rmcp-based fake over stdio and streamable HTTP, and the third-party
//! `mcp-server-time` from PyPI), workers offer their tools as `mcp__<server>__<tool>`,
//! and the fake model's `#tool=` directive calls them through `POST /v1/messages`.

use std::time::Duration;

use reqwest::StatusCode;
use sable_proto::v1 as pb;
use sable_proto::v1::mcp_sidecar_client::McpSidecarClient;
use sable_testkit::{
    ChildProcess, ExportedSpan, FakeMcpServer, FakeProvider, OtlpReceiver, eventually,
    fake_mcp_binary, free_port, wait_for,
};
use serde_json::{Value, json};

use crate::support::{Api, READY_TIMEOUT, StackOptions, TestStack, run_sable, spawn_dev_with};

/// A test's own config folder: an agent offered every MCP tool, and an `mcp.toml`.
struct McpConfig {
    dir: std::path::PathBuf,
}

impl McpConfig {
    fn new(mcp_toml: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("sable-mcp-{}", uuid::Uuid::new_v4().simple()));
        for (relative, text) in [
            ("agents/default/agent.toml", "[tools]\nallow = [\"time\"]\n"),
            ("agents/default/AGENT.md", "You are default."),
            (
                "agents/mcp/agent.toml",
                "[tools]\nallow = [\"mcp__local__*\", \"mcp__remote__echo\", \"mcp__time__*\"]\n",
            ),
            ("agents/mcp/AGENT.md", "You use MCP tools."),
            ("mcp.toml", mcp_toml),
        ] {
            let path = dir.join(relative);
            std::fs::create_dir_all(path.parent().expect("a parent"))?;
            std::fs::write(path, text)?;
        }
        Ok(Self { dir })
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "SABLE_AGENTS_DIR",
                self.dir.join("agents").display().to_string(),
            ),
            (
                "SABLE_MCP_FILE",
                self.dir.join("mcp.toml").display().to_string(),
            ),
        ]
    }
}

fn fake_stdio_server() -> String {
    format!(
        "[servers.local]\ntransport = \"stdio\"\ncommand = \"{}\"\nidempotent_tools = [\"echo\"]\n",
        fake_mcp_binary().display()
    )
}

fn time_server() -> &'static str {
    "[servers.time]\ntransport = \"stdio\"\ncommand = \"python3\"\nargs = [\"-m\", \"mcp_server_time\", \"--local-timezone\", \"UTC\"]\nidempotent_tools = [\"get_current_time\"]\n"
}

/// `sable mcp-sidecar` as a child process, and a gRPC client of it.
struct SidecarProcess {
    process: ChildProcess,
    url: String,
}

impl SidecarProcess {
    async fn spawn(stack: &TestStack, addr: &str) -> anyhow::Result<Self> {
        let mut process = stack.spawn_role(
            "mcp-sidecar",
            "mcp-sidecar",
            &[("SABLE_MCP_SIDECAR_ADDR", addr.to_owned())],
        )?;
        let addr = process
            .wait_for_line("sable mcp-sidecar listening on grpc://", READY_TIMEOUT)
            .await?;
        Ok(Self {
            process,
            url: format!("http://{addr}"),
        })
    }

    async fn wait_connected(&self, servers: &[&str]) -> anyhow::Result<()> {
        wait_connected(&self.url, servers)
            .await
            .map_err(|error| anyhow::anyhow!("{error}\n{}", self.process.log_tail()))
    }
}

async fn wait_connected(url: &str, servers: &[&str]) -> anyhow::Result<()> {
    let client = McpSidecarClient::connect(url.to_owned()).await?;
    eventually(
        "the MCP servers to connect",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                let Ok(status) = client.status(pb::StatusRequest {}).await else {
                    return false;
                };
                servers.iter().all(|name| {
                    status
                        .get_ref()
                        .servers
                        .iter()
                        .any(|server| server.name == *name && server.state == "connected")
                })
            }
        },
    )
    .await
}

/// A distributed stack (gateway, worker) with a sidecar started first from `config`.
async fn stack_with_sidecar(config: &McpConfig) -> anyhow::Result<(TestStack, SidecarProcess)> {
    stack_with_sidecar_and(config, Vec::new()).await
}

async fn stack_with_sidecar_and(
    config: &McpConfig,
    extra: Vec<(&'static str, String)>,
) -> anyhow::Result<(TestStack, SidecarProcess)> {
    let mut env = config.env();
    env.extend(extra);
    let mut stack = TestStack::start(StackOptions {
        env,
        ..Default::default()
    })
    .await?;
    let sidecar = SidecarProcess::spawn(&stack, "127.0.0.1:0").await?;
    stack.set_env("SABLE_MCP_SIDECAR_URL", sidecar.url.clone());
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;
    Ok((stack, sidecar))
}

async fn ask(stack: &TestStack, text: &str) -> anyhow::Result<Value> {
    let (status, answer) = stack
        .post_message(0, &json!({"text": text, "agent": "mcp", "wait": true}))
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{status}: {answer}\n{}",
        stack.logs()
    );
    Ok(answer)
}

async fn turn_of(stack: &TestStack, answer: &Value) -> anyhow::Result<Value> {
    let turn_id = answer["turn_id"].as_str().expect("a turn id");
    Ok(stack.get(0, &format!("/v1/turns/{turn_id}")).await?.1)
}

/// The tool specs the model was offered in its first request of the newest turn.
fn offered_tools(provider: &FakeProvider) -> Vec<String> {
    let requests = provider.requests();
    let request = requests
        .iter()
        .rev()
        .find(|request| {
            request["messages"]
                .as_array()
                .is_some_and(|m| m.last().is_some_and(|m| m["role"] == "user"))
        })
        .expect("a request");
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|tool| tool["function"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
// One story from the request to the trace; its steps read in order.
#[allow(clippy::too_many_lines)]
async fn a_scripted_model_calls_an_mcp_tool_through_the_sidecar_and_answers_with_its_result()
-> anyhow::Result<()> {
    let http = FakeMcpServer::start_http().await?;
    let config = McpConfig::new(&format!(
        "{}\n[servers.remote]\ntransport = \"http\"\nurl = \"{}\"\n",
        fake_stdio_server(),
        http.url
    ))?;
    let (stack, sidecar) = stack_with_sidecar(&config).await?;
    sidecar.wait_connected(&["local", "remote"]).await?;

    let answer = ask(
        &stack,
        r##"#tool=mcp__local__echo #args={"text":"over-stdio"}"##,
    )
    .await?;
    assert_eq!(
        answer["reply"]["text"], "tool said: echo: over-stdio",
        "{answer}"
    );
    let offered = offered_tools(&stack.provider);
    assert!(
        offered.contains(&"mcp__local__echo".to_owned()),
        "{offered:?}"
    );
    assert!(
        offered.contains(&"mcp__local__structured".to_owned()),
        "the pattern offers every tool: {offered:?}"
    );
    assert!(
        offered.contains(&"mcp__remote__echo".to_owned()),
        "{offered:?}"
    );
    assert!(
        !offered.contains(&"mcp__remote__fail".to_owned()),
        "only what tools.allow names: {offered:?}"
    );
    let turn = turn_of(&stack, &answer).await?;
    let call = &turn["tool_calls"][0];
    assert_eq!(call["tool"], "mcp__local__echo", "{turn}");
    assert_eq!(call["source"], "mcp", "{turn}");
    assert_eq!(call["server"], "local", "{turn}");
    assert_eq!(call["status"], "ok", "{turn}");

    let answer = ask(
        &stack,
        r##"#tool=mcp__remote__echo #args={"text":"over-http"}"##,
    )
    .await?;
    assert_eq!(
        answer["reply"]["text"], "tool said: echo: over-http",
        "{answer}"
    );
    assert_eq!(http.state.calls(), 1);

    // What the agent is offered, and the sidecar's servers, over HTTP.
    let (status, listed) = stack.get(0, "/v1/tools?agent=mcp").await?;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let tools = listed["tools"].as_array().expect("tools");
    let echo = tools
        .iter()
        .find(|tool| tool["name"] == "mcp__local__echo")
        .expect("mcp__local__echo is listed");
    assert_eq!(echo["source"], "mcp");
    assert_eq!(echo["server"], "local");
    assert_eq!(echo["idempotent"], true, "from idempotent_tools");
    assert_eq!(echo["requires_approval"], false);
    assert_eq!(echo["input_schema"]["required"], json!(["text"]));
    assert!(!tools.iter().any(|tool| tool["name"] == "time"), "{listed}");
    let (_, builtin) = stack.get(0, "/v1/tools?agent=default").await?;
    assert_eq!(builtin["tools"][0]["name"], "time");
    assert_eq!(builtin["tools"][0]["source"], "builtin");
    let (status, _) = stack.get(0, "/v1/tools?agent=nobody").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, servers) = stack.get(0, "/v1/mcp/servers").await?;
    assert_eq!(status, StatusCode::OK, "{servers}");
    let local = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|server| server["name"] == "local")
        .expect("local is listed");
    assert_eq!(local["transport"], "stdio");
    assert_eq!(local["state"], "connected");
    assert_eq!(local["calls"], 1);
    assert!(local["tools"].as_u64().unwrap() >= 7, "{local}");
    let admin_key = stack
        .sable(&["admin", "key", "create", "--org", &stack.org_id, "--admin"])
        .await?;
    let diagnostics: Value = stack
        .http
        .get(stack.url(0, "/v1/diagnostics/runtime"))
        .bearer_auth(admin_key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(diagnostics["mcp"]["status"], "up", "{diagnostics}");
    assert_eq!(diagnostics["mcp"]["servers"].as_array().unwrap().len(), 2);

    // isError is a tool error the model reads, not a failed turn.
    let answer = ask(
        &stack,
        r##"#tool=mcp__local__fail #args={"message":"broken"}"##,
    )
    .await?;
    assert_eq!(
        answer["reply"]["text"], "tool said: error (failed): it failed: broken",
        "{answer}"
    );
    assert_eq!(
        turn_of(&stack, &answer).await?["tool_calls"][0]["status"],
        "error"
    );
    Ok(())
}

#[tokio::test]
async fn the_third_party_mcp_server_time_is_listed_and_called_through_a_full_turn()
-> anyhow::Result<()> {
    let config = McpConfig::new(time_server())?;
    let (stack, sidecar) = stack_with_sidecar(&config).await?;
    sidecar.wait_connected(&["time"]).await?;
    let tools = McpSidecarClient::connect(sidecar.url.clone())
        .await?
        .list_tools(pb::ListToolsRequest {
            known_revision: 0,
            org: None,
        })
        .await?
        .into_inner();
    let names: Vec<&str> = tools.tools.iter().map(|tool| tool.name.as_str()).collect();
    assert!(
        names.contains(&"get_current_time") && names.contains(&"convert_time"),
        "{names:?}"
    );
    assert!(
        tools
            .tools
            .iter()
            .find(|tool| tool.name == "get_current_time")
            .unwrap()
            .idempotent
    );

    let answer = ask(
        &stack,
        r##"#tool=mcp__time__get_current_time #args={"timezone":"Europe/Paris"}"##,
    )
    .await?;
    let reply = answer["reply"]["text"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with("tool said: ")
            && reply.contains("Europe/Paris")
            && reply.contains("datetime"),
        "{answer}"
    );
    let turn = turn_of(&stack, &answer).await?;
    assert_eq!(turn["tool_calls"][0]["source"], "mcp", "{turn}");
    assert_eq!(turn["tool_calls"][0]["status"], "ok", "{turn}");
    Ok(())
}

#[tokio::test]
async fn a_sidecar_killed_mid_turn_is_a_tool_error_the_model_sees_and_the_next_turn_works_once_it_is_back()
-> anyhow::Result<()> {
    let http = FakeMcpServer::start_http().await?;
    let config = McpConfig::new(&format!(
        "[servers.local]\ntransport = \"http\"\nurl = \"{}\"\ntimeout_ms = 60000\n",
        http.url
    ))?;
    let mut stack = TestStack::start(StackOptions {
        env: config.env(),
        ..Default::default()
    })
    .await?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut sidecar = SidecarProcess::spawn(&stack, &addr).await?;
    stack.set_env("SABLE_MCP_SIDECAR_URL", sidecar.url.clone());
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;
    sidecar.wait_connected(&["local"]).await?;

    let client = stack.client();
    let pending = tokio::spawn(async move {
        client
            .post(
                0,
                &json!({"text": "#tool=mcp__local__hang", "agent": "mcp", "wait": true}),
            )
            .await
    });
    eventually(
        "the hanging call to reach the server",
        Duration::from_secs(30),
        || async { http.state.calls() == 1 },
    )
    .await?;
    sidecar.process.kill().await;
    let (status, answer) = pending.await??;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let reply = answer["reply"]["text"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with("tool said: error (failed): the MCP sidecar cannot be reached"),
        "{answer}"
    );

    // Down: the tool is still offered from the cached catalog, and calling it is an error.
    let answer = ask(
        &stack,
        r##"#tool=mcp__local__echo #args={"text":"while-down"}"##,
    )
    .await?;
    assert!(
        answer["reply"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be reached"),
        "{answer}"
    );

    let sidecar = SidecarProcess::spawn(&stack, &addr).await?;
    sidecar.wait_connected(&["local"]).await?;
    let answer = wait_for(
        "a turn through the restarted sidecar",
        Duration::from_secs(30),
        || async {
            ask(&stack, r##"#tool=mcp__local__echo #args={"text":"back"}"##)
                .await
                .ok()
                .filter(|answer| answer["reply"]["text"] == "tool said: echo: back")
        },
    )
    .await?;
    assert_eq!(
        turn_of(&stack, &answer).await?["tool_calls"][0]["status"],
        "ok"
    );
    Ok(())
}

#[tokio::test]
async fn sable_dev_runs_the_sidecar_in_process_so_mcp_tools_work_embedded() -> anyhow::Result<()> {
    sable_llm::install_crypto_provider();
    let config = McpConfig::new(&fake_stdio_server())?;
    let provider = FakeProvider::start().await?;
    let data_dir = config.dir.join("data");
    let env: Vec<(String, String)> = config
        .env()
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    let (process, url, key) = spawn_dev_with(&provider, &data_dir, &env).await?;
    let key = key.expect("a first start prints a key");
    let http = reqwest::Client::new();
    let answer: Value = wait_for("an MCP tool call in sable dev", Duration::from_secs(30), || async {
        let response = http
            .post(format!("{url}/v1/messages"))
            .bearer_auth(&key)
            .json(&json!({"text": r##"#tool=mcp__local__echo #args={"text":"embedded"}"##, "agent": "mcp", "wait": true}))
            .send()
            .await
            .ok()?;
        let answer: Value = response.json().await.ok()?;
        (answer["reply"]["text"] == "tool said: echo: embedded").then_some(answer)
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", process.log_tail()))?;
    let turn: Value = http
        .get(format!(
            "{url}/v1/turns/{}",
            answer["turn_id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(turn["tool_calls"][0]["source"], "mcp", "{turn}");
    Ok(())
}

#[tokio::test]
async fn a_misconfigured_mcp_file_stops_the_sidecar_naming_the_server_and_field()
-> anyhow::Result<()> {
    let config = McpConfig::new(
        "[servers.docs]\ntransport = \"http\"\nurl = \"http://x/${SABLE_TEST_UNSET_TOKEN}\"\n",
    )?;
    let mut env: Vec<(String, String)> = config
        .env()
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    env.push(("SABLE_MCP_SIDECAR_ADDR".into(), "127.0.0.1:0".into()));
    env.push(("SABLE_METRICS_ADDR".into(), "127.0.0.1:0".into()));
    let error = tokio::time::timeout(Duration::from_secs(30), run_sable(&["mcp-sidecar"], &env))
        .await?
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "server 'docs': field 'url': the environment variable SABLE_TEST_UNSET_TOKEN is not set"
        ),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn the_turns_trace_continues_across_the_grpc_hop_into_the_sidecars_span() -> anyhow::Result<()>
{
    const CALLER_TRACE_ID: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
    let receiver = OtlpReceiver::start().await?;
    let config = McpConfig::new(&fake_stdio_server())?;
    let (stack, sidecar) = stack_with_sidecar_and(
        &config,
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())],
    )
    .await?;
    sidecar.wait_connected(&["local"]).await?;
    let answer: Value = stack
        .http
        .post(stack.url(0, "/v1/messages"))
        .bearer_auth(&stack.key)
        .header("traceparent", format!("00-{CALLER_TRACE_ID}-00f067aa0ba902b8-01"))
        .json(&json!({"text": r##"#tool=mcp__local__echo #args={"text":"traced"}"##, "agent": "mcp", "wait": true}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        answer["reply"]["text"], "tool said: echo: traced",
        "{answer}"
    );
    let (tool, call) = wait_for(
        "the tool and sidecar spans",
        Duration::from_secs(30),
        || async {
            let spans: Vec<ExportedSpan> = receiver
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == CALLER_TRACE_ID)
                .collect();
            let tool = spans
                .iter()
                .find(|span| span.name == "execute_tool mcp__local__echo")?;
            let call = spans
                .iter()
                .find(|span| span.name == "mcp call local/echo")?;
            Some((tool.clone(), call.clone()))
        },
    )
    .await?;
    assert_eq!(call.parent_span_id, tool.span_id, "{call:#?}");
    assert_eq!(call.str("sable.mcp.outcome"), Some("ok"), "{call:#?}");
    Ok(())
}

/// Sends `text` to `agent` of the org whose key is `key` and waits for the reply.
async fn ask_as(stack: &TestStack, key: &str, agent: &str, text: &str) -> anyhow::Result<String> {
    let (status, answer) = stack
        .post_message_with_key(0, key, &json!({"text": text, "agent": agent, "wait": true}))
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{status}: {answer}\n{}",
        stack.logs()
    );
    Ok(answer["reply"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
// One story across two orgs: the server added, used, hidden from the other org, changed
// and removed, each step seen by the next turn.
#[allow(clippy::too_many_lines)]
async fn an_orgs_own_mcp_server_serves_only_its_turns_and_a_change_is_seen_by_the_next_turn()
-> anyhow::Result<()> {
    let first = FakeMcpServer::start_http().await?;
    let second = FakeMcpServer::start_http().await?;
    // No shared servers: everything here is the orgs' own.
    let config = McpConfig::new("")?;
    let (stack, sidecar) = stack_with_sidecar_and(
        &config,
        vec![(
            "SABLE_SECRETS_KEY",
            sable_store::SecretsKey::generate_base64(),
        )],
    )
    .await?;
    let ours = stack.key_with_role("admin").await?;
    let platform = stack
        .sable(&["admin", "key", "create", "--platform"])
        .await?;
    let (status, org) = stack
        .send(
            &platform,
            reqwest::Method::POST,
            "/v1/orgs",
            Some(json!({"name": "globex"})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    let (status, key) = stack
        .send(
            &platform,
            reqwest::Method::POST,
            &format!("/v1/orgs/{}/keys", org["id"].as_str().unwrap_or_default()),
            Some(json!({"name": "admin", "role": "admin"})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let theirs = key["key"].as_str().unwrap_or_default().to_owned();
    // Both orgs have an agent that allows every tool of a server named `docs`.
    for key in [&ours, &theirs] {
        let (status, body) = stack
            .send(
                key,
                reqwest::Method::PUT,
                "/v1/agents/helper",
                Some(json!({"prompt": "You use tools.", "tools": {"allow": ["mcp__docs__*"]}})),
            )
            .await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = stack
        .send(
            &ours,
            reqwest::Method::PUT,
            "/v1/mcp-servers/docs",
            Some(json!({"url": first.url, "headers": {"Authorization": "Bearer ours"}})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The very next turn of the org is offered the server's tools and calls one.
    let reply = ask_as(
        &stack,
        &ours,
        "helper",
        r##"#tool=mcp__docs__echo #args={"text":"mine"}"##,
    )
    .await?;
    assert_eq!(reply, "tool said: echo: mine");
    let offered = offered_tools(&stack.provider);
    assert!(
        offered.contains(&"mcp__docs__echo".to_owned()),
        "{offered:?}"
    );
    assert_eq!(first.state.calls(), 1);
    // The sealed header was opened by the worker and sent by the sidecar.
    assert_eq!(first.state.authorizations(), ["Bearer ours"]);

    // The other org's turn is not offered it, and its call of the name reaches nothing.
    let reply = ask_as(
        &stack,
        &theirs,
        "helper",
        r##"#tool=mcp__docs__echo #args={"text":"theirs"}"##,
    )
    .await?;
    assert!(
        reply.starts_with("tool said: error (unknown_tool)"),
        "{reply}"
    );
    let offered = offered_tools(&stack.provider);
    assert!(
        !offered.iter().any(|name| name.starts_with("mcp__docs__")),
        "{offered:?}"
    );
    assert_eq!(
        first.state.calls(),
        1,
        "the other org's turn reached no server"
    );
    let (_, tools) = stack
        .send(
            &theirs,
            reqwest::Method::GET,
            "/v1/tools?agent=helper",
            None,
        )
        .await?;
    assert_eq!(tools["tools"], json!([]), "{tools}");
    let (_, tools) = stack
        .send(&ours, reqwest::Method::GET, "/v1/tools?agent=helper", None)
        .await?;
    assert!(
        tools["tools"].as_array().is_some_and(|tools| tools
            .iter()
            .any(|tool| tool["name"] == "mcp__docs__echo" && tool["server"] == "docs")),
        "{tools}"
    );

    // Moved to another address: the next turn's call goes there.
    let (status, body) = stack
        .send(
            &ours,
            reqwest::Method::PUT,
            "/v1/mcp-servers/docs",
            Some(json!({"url": second.url})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply = ask_as(
        &stack,
        &ours,
        "helper",
        r##"#tool=mcp__docs__echo #args={"text":"moved"}"##,
    )
    .await?;
    assert_eq!(reply, "tool said: echo: moved");
    assert_eq!((first.state.calls(), second.state.calls()), (1, 1));

    // Removed: the next turn is offered nothing of it, and the sidecar closes it.
    let (status, body) = stack
        .send(&ours, reqwest::Method::DELETE, "/v1/mcp-servers/docs", None)
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let reply = ask_as(
        &stack,
        &ours,
        "helper",
        r##"#tool=mcp__docs__echo #args={"text":"gone"}"##,
    )
    .await?;
    assert!(
        reply.starts_with("tool said: error (unknown_tool)"),
        "{reply}"
    );
    assert_eq!(second.state.calls(), 1);
    let status = McpSidecarClient::connect(sidecar.url.clone())
        .await?
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    assert_eq!(status.org_connections, 0, "{status:?}");
    Ok(())
}
