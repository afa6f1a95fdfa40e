//! The sidecar against the rmcp-based fake MCP server over stdio (a child process) and
//! streamable HTTP, driven through its real gRPC service on port 0.

use std::time::Duration;

use sable_mcp_sidecar::{McpConfig, SidecarConfig, SidecarListeners};
use sable_proto::v1 as pb;
use sable_proto::v1::mcp_sidecar_client::McpSidecarClient;
use sable_testkit::{FakeMcpServer, eventually, fake_mcp_binary, wait_for};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Sidecar {
    addr: std::net::SocketAddr,
    client: McpSidecarClient<Channel>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Sidecar {
    async fn start(config_text: &str) -> anyhow::Result<Self> {
        Self::start_with(config_text, |_| {}).await
    }

    async fn start_with(
        config_text: &str,
        configure: impl FnOnce(&mut SidecarConfig),
    ) -> anyhow::Result<Self> {
        // The binary installs one at start; the HTTP transport's reqwest client needs it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let lookup = |_: &str| None;
        let mcp = McpConfig::parse(config_text, "mcp.toml", &lookup)?;
        let mut config = SidecarConfig::new(mcp);
        config.reconnect.initial = Duration::from_millis(300);
        configure(&mut config);
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sable_mcp_sidecar::run(
            config,
            SidecarListeners { grpc, http: None },
            shutdown.clone(),
        ));
        let client = McpSidecarClient::connect(format!("http://{addr}")).await?;
        Ok(Self {
            addr,
            client,
            shutdown,
            task,
        })
    }

    /// A client on a gRPC channel of its own (its own HTTP/2 connection), as each worker
    /// holds one.
    async fn new_worker_client(&self) -> anyhow::Result<McpSidecarClient<Channel>> {
        Ok(McpSidecarClient::connect(format!("http://{}", self.addr)).await?)
    }

    async fn status_of(&self, server: &str) -> pb::ServerStatus {
        let status = self
            .client
            .clone()
            .status(pb::StatusRequest {})
            .await
            .expect("status answers")
            .into_inner();
        status
            .servers
            .into_iter()
            .find(|status| status.name == server)
            .expect("the server is configured")
    }

    async fn wait_connected(&self, server: &str) -> anyhow::Result<()> {
        eventually(
            &format!("{server} to connect"),
            Duration::from_secs(20),
            || async { self.status_of(server).await.state == "connected" },
        )
        .await
    }

    async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: serde_json::Value,
        deadline_ms: u64,
    ) -> Result<pb::CallToolResponse, tonic::Status> {
        self.client
            .clone()
            .call_tool(pb::CallToolRequest {
                server: server.into(),
                tool: tool.into(),
                arguments_json: arguments.to_string(),
                deadline_ms,
                org_id: "org".into(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

fn both_transports(http_url: &str) -> String {
    format!(
        r#"
[servers.local]
transport = "stdio"
command = "{}"
idempotent_tools = ["echo"]
timeout_ms = 10000

[servers.remote]
transport = "http"
url = "{http_url}"
"#,
        fake_mcp_binary().display()
    )
}

fn text_of(response: &pb::CallToolResponse) -> String {
    response
        .content
        .iter()
        .filter_map(|block| block.text.clone())
        .collect()
}

#[tokio::test]
async fn tools_results_errors_resources_and_prompts_map_through_grpc_on_both_transports()
-> anyhow::Result<()> {
    let http = FakeMcpServer::start_http().await?;
    let sidecar = Sidecar::start(&both_transports(&http.url)).await?;
    for server in ["local", "remote"] {
        sidecar.wait_connected(server).await?;
        let echoed = sidecar
            .call(server, "echo", serde_json::json!({"text": "hi"}), 0)
            .await?;
        assert!(!echoed.is_error);
        assert_eq!(text_of(&echoed), "echo: hi");
        assert_eq!(echoed.content[0].kind, "text");

        let failed = sidecar
            .call(server, "fail", serde_json::json!({"message": "nope"}), 0)
            .await?;
        assert!(failed.is_error, "isError maps to is_error");
        assert_eq!(text_of(&failed), "it failed: nope");

        let structured = sidecar
            .call(server, "structured", serde_json::json!({"city": "Oslo"}), 0)
            .await?;
        let value: serde_json::Value =
            serde_json::from_str(structured.structured_content_json.as_deref().unwrap())?;
        assert_eq!(value, serde_json::json!({"city": "Oslo", "celsius": 21.5}));

        let unknown = sidecar
            .call(server, "nope", serde_json::json!({}), 0)
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        let mut client = sidecar.client.clone();
        let resources = client
            .list_resources(pb::ListResourcesRequest {
                server: server.into(),
            })
            .await?
            .into_inner();
        assert_eq!(resources.resources[0].uri, "fake://greeting");
        let read = client
            .read_resource(pb::ReadResourceRequest {
                server: server.into(),
                uri: "fake://greeting".into(),
            })
            .await?
            .into_inner();
        assert_eq!(
            read.contents[0].text.as_deref(),
            Some("hello from the fake MCP server")
        );
        let prompts = client
            .list_prompts(pb::ListPromptsRequest {
                server: server.into(),
            })
            .await?
            .into_inner();
        assert_eq!(prompts.prompts[0].name, "greet");
        assert!(prompts.prompts[0].arguments[0].required);
        let prompt = client
            .get_prompt(pb::GetPromptRequest {
                server: server.into(),
                name: "greet".into(),
                arguments: [("name".to_owned(), "Ada".to_owned())].into(),
            })
            .await?
            .into_inner();
        assert_eq!(prompt.messages[0].role, "user");
        assert_eq!(
            prompt.messages[0].content.as_ref().unwrap().text.as_deref(),
            Some("Say hello to Ada.")
        );
    }

    let tools = sidecar
        .client
        .clone()
        .list_tools(pb::ListToolsRequest {
            known_revision: 0,
            org: None,
        })
        .await?
        .into_inner();
    let local_echo = tools
        .tools
        .iter()
        .find(|tool| tool.server == "local" && tool.name == "echo")
        .unwrap();
    assert!(local_echo.idempotent, "idempotency comes from the config");
    let schema: serde_json::Value = serde_json::from_str(&local_echo.input_schema_json)?;
    assert_eq!(schema["required"], serde_json::json!(["text"]));
    let again = sidecar
        .client
        .clone()
        .list_tools(pb::ListToolsRequest {
            known_revision: tools.revision,
            org: None,
        })
        .await?
        .into_inner();
    assert!(again.unchanged && again.tools.is_empty());
    let status = sidecar.status_of("remote").await;
    assert_eq!(status.calls, 4);
    assert_eq!(status.errors, 2, "the isError result and the unknown tool");
    assert!(status.p99_ms >= status.p50_ms && status.p50_ms > 0.0);
    sidecar.stop().await
}

#[tokio::test]
async fn list_changed_refreshes_the_catalog_and_bumps_its_revision() -> anyhow::Result<()> {
    let http = FakeMcpServer::start_http().await?;
    let sidecar = Sidecar::start(&both_transports(&http.url)).await?;
    for server in ["local", "remote"] {
        sidecar.wait_connected(server).await?;
        let before = sidecar
            .client
            .clone()
            .list_tools(pb::ListToolsRequest {
                known_revision: 0,
                org: None,
            })
            .await?
            .into_inner();
        let added = format!("late_{server}");
        sidecar
            .call(server, "add_tool", serde_json::json!({"name": added}), 0)
            .await?;
        let after = wait_for("the new tool", Duration::from_secs(10), || {
            let mut client = sidecar.client.clone();
            let added = added.clone();
            async move {
                let tools = client
                    .list_tools(pb::ListToolsRequest {
                        known_revision: before.revision,
                        org: None,
                    })
                    .await
                    .ok()?
                    .into_inner();
                tools
                    .tools
                    .iter()
                    .any(|tool| tool.server == server && tool.name == added)
                    .then_some(tools)
            }
        })
        .await?;
        assert!(after.revision > before.revision);
        let called = sidecar
            .call(server, &added, serde_json::json!({"text": "x"}), 0)
            .await?;
        assert_eq!(text_of(&called), format!("{added}: x"));
    }
    sidecar.stop().await
}

#[tokio::test]
async fn a_hanging_call_fails_at_its_deadline_and_the_server_receives_the_cancellation()
-> anyhow::Result<()> {
    let http = FakeMcpServer::start_http().await?;
    let sidecar = Sidecar::start(&both_transports(&http.url)).await?;
    for server in ["local", "remote"] {
        sidecar.wait_connected(server).await?;
        let started = std::time::Instant::now();
        let error = sidecar
            .call(server, "hang", serde_json::json!({}), 300)
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        eventually(
            "the server to count the cancellation",
            Duration::from_secs(10),
            || async {
                sidecar
                    .call(server, "cancellations", serde_json::json!({}), 0)
                    .await
                    .is_ok_and(|response| text_of(&response) == "1")
            },
        )
        .await?;
    }
    assert_eq!(http.state.cancellations(), 1);
    sidecar.stop().await
}

#[tokio::test]
async fn a_killed_stdio_server_shows_down_then_reconnects_and_the_next_call_succeeds()
-> anyhow::Result<()> {
    let http = FakeMcpServer::start_http().await?;
    let sidecar = Sidecar::start(&both_transports(&http.url)).await?;
    sidecar.wait_connected("local").await?;
    let pid: i32 = text_of(
        &sidecar
            .call("local", "pid", serde_json::json!({}), 0)
            .await?,
    )
    .parse()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let down = wait_for(
        "the status to show the server down",
        Duration::from_secs(10),
        || async {
            let status = sidecar.status_of("local").await;
            (status.state == "down").then_some(status)
        },
    )
    .await?;
    assert!(down.last_error.is_some());
    let refused = sidecar
        .call("local", "echo", serde_json::json!({"text": "x"}), 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    sidecar.wait_connected("local").await?;
    let echoed = sidecar
        .call("local", "echo", serde_json::json!({"text": "back"}), 0)
        .await?;
    assert_eq!(text_of(&echoed), "echo: back");
    let new_pid: i32 = text_of(
        &sidecar
            .call("local", "pid", serde_json::json!({}), 0)
            .await?,
    )
    .parse()?;
    assert_ne!(new_pid, pid, "a new child process");
    assert_eq!(sidecar.status_of("local").await.reconnects, 1);
    sidecar.stop().await
}

/// `calls` echo calls, spread over `workers` round-robin and sent all at once, each with a
/// unique text and a delay (50 to 149 ms) that varies by call, so the answers come back in
/// another order than the requests went out: what each sent and got back, or its failure.
async fn echo_from_workers(
    workers: &[McpSidecarClient<Channel>],
    calls: usize,
) -> Vec<(String, Result<pb::CallToolResponse, tonic::Status>)> {
    let tasks: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(worker, client)| {
            let client = client.clone();
            let own_calls: Vec<usize> = (worker..calls).step_by(workers.len()).collect();
            tokio::spawn(async move {
                let calls = own_calls.into_iter().map(|index| {
                    let mut client = client.clone();
                    async move {
                        let text = format!("worker {worker} call {index}");
                        let arguments =
                            serde_json::json!({"text": text, "delay_ms": 50 + index * 37 % 100});
                        let response = client
                            .call_tool(pb::CallToolRequest {
                                server: "local".into(),
                                tool: "echo".into(),
                                arguments_json: arguments.to_string(),
                                deadline_ms: 0,
                                org_id: format!("org-{worker}"),
                                ..Default::default()
                            })
                            .await
                            .map(tonic::Response::into_inner);
                        (text, response)
                    }
                });
                futures::future::join_all(calls).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.expect("a worker's task completes"));
    }
    results
}

async fn counters_of_local(sidecar: &Sidecar) -> anyhow::Result<serde_json::Value> {
    let response = sidecar
        .call("local", "counters", serde_json::json!({}), 0)
        .await?;
    Ok(serde_json::from_str(&text_of(&response))?)
}

#[tokio::test]
async fn two_hundred_concurrent_calls_from_three_workers_get_their_own_results_over_one_stdio_connection()
-> anyhow::Result<()> {
    const CALLS: usize = 200;
    // One stdio server, with room for every call at once, so all 200 requests are
    // outstanding on its one stdin/stdout pair together.
    let config = format!(
        "[servers.local]\ntransport = \"stdio\"\ncommand = \"{}\"\nmax_concurrent_calls = {CALLS}\n",
        fake_mcp_binary().display()
    );
    let sidecar = Sidecar::start(&config).await?;
    sidecar.wait_connected("local").await?;
    let pid = text_of(
        &sidecar
            .call("local", "pid", serde_json::json!({}), 0)
            .await?,
    );
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(sidecar.new_worker_client().await?);
    }

    let results = echo_from_workers(&workers, CALLS).await;

    assert_eq!(results.len(), CALLS);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(sent, response)| {
            response
                .as_ref()
                .err()
                .map(|status| format!("{sent}: {status:?}"))
        })
        .collect();
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    for (sent, response) in &results {
        let response = response.as_ref().expect("checked above");
        assert!(!response.is_error, "{sent}: {response:?}");
        assert_eq!(response.content.len(), 1, "{sent}: {response:?}");
        assert_eq!(
            text_of(response),
            format!("echo: {sent}"),
            "a mixed-up result"
        );
    }
    // One child process, one MCP session, and every call went through it.
    let status = sidecar.status_of("local").await;
    assert_eq!((status.state.as_str(), status.reconnects), ("connected", 0));
    assert_eq!(status.calls, 1 + CALLS as u64, "pid, then the echoes");
    let counters = counters_of_local(&sidecar).await?;
    assert_eq!(counters["initializations"], 1, "{counters}");
    assert_eq!(
        counters["calls"],
        2 + CALLS as u64,
        "pid, echoes, counters: {counters}"
    );
    // Each echo waits 50 to 149 ms, so the calls overlap there unless something
    // serialises them on the way.
    let peak = counters["peak_in_flight"].as_u64().unwrap_or_default();
    assert!(
        peak >= CALLS as u64 / 2,
        "most calls were at the server at once: {counters}"
    );
    let pid_after = text_of(
        &sidecar
            .call("local", "pid", serde_json::json!({}), 0)
            .await?,
    );
    assert_eq!(pid, pid_after, "one long-lived child served every call");
    sidecar.stop().await
}

/// `org_id`'s servers at `config_version`.
fn org_servers(org_id: &str, config_version: i64, servers: &[pb::McpServerSpec]) -> pb::OrgServers {
    pb::OrgServers {
        org_id: org_id.into(),
        config_version,
        servers: servers.to_vec(),
    }
}

/// `(server, tool, org)` of every tool a listing for `org` offers.
async fn listed_for(
    sidecar: &Sidecar,
    org: Option<pb::OrgServers>,
) -> anyhow::Result<Vec<(String, String, bool)>> {
    let tools = sidecar
        .client
        .clone()
        .list_tools(pb::ListToolsRequest {
            known_revision: 0,
            org,
        })
        .await?
        .into_inner();
    Ok(tools
        .tools
        .into_iter()
        .map(|tool| (tool.server, tool.name, tool.org))
        .collect())
}

async fn org_connections(sidecar: &Sidecar) -> u32 {
    sidecar
        .client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .map(|status| status.into_inner().org_connections)
        .unwrap_or(u32::MAX)
}

#[tokio::test]
// One org's servers followed through opening, isolation, a change, removal and idleness.
#[allow(clippy::too_many_lines)]
async fn an_orgs_own_server_is_served_to_that_org_alone_opened_on_demand_and_closed_when_changed_or_idle()
-> anyhow::Result<()> {
    let shared = FakeMcpServer::start_http().await?;
    let theirs = FakeMcpServer::start_http().await?;
    let sidecar = Sidecar::start_with(
        &format!(
            "[servers.remote]\ntransport = \"http\"\nurl = \"{}\"\n",
            shared.url
        ),
        |config| config.org_idle_timeout = Duration::from_secs(2),
    )
    .await?;
    sidecar.wait_connected("remote").await?;
    let docs = pb::McpServerSpec {
        name: "docs".into(),
        url: theirs.url.clone(),
        headers: [("Authorization".to_owned(), "Bearer a".to_owned())].into(),
        idempotent_tools: vec!["echo".into()],
        ..Default::default()
    };
    assert_eq!(
        org_connections(&sidecar).await,
        0,
        "nothing is opened before it is asked for"
    );

    // Org A's listing opens its server and offers its tools, marked as the org's.
    let listed = listed_for(
        &sidecar,
        Some(org_servers("org-a", 1, std::slice::from_ref(&docs))),
    )
    .await?;
    assert!(
        listed.contains(&("docs".into(), "echo".into(), true)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("remote".into(), "echo".into(), false)),
        "{listed:?}"
    );
    assert_eq!(theirs.state.initializations(), 1);
    assert_eq!(org_connections(&sidecar).await, 1);

    // Org B, and a listing for no org, never see it; B's call to that name finds nothing.
    for org in [Some(org_servers("org-b", 3, &[])), None] {
        let listed = listed_for(&sidecar, org).await?;
        assert!(
            listed
                .iter()
                .all(|(server, _, org)| server == "remote" && !org),
            "{listed:?}"
        );
    }
    let mut client = sidecar.client.clone();
    let call = |org_id: &str, org_server: Option<pb::McpServerSpec>| pb::CallToolRequest {
        server: "docs".into(),
        tool: "echo".into(),
        arguments_json: r#"{"text":"hi"}"#.into(),
        org_id: org_id.into(),
        org_server,
        org_config_version: 1,
        ..Default::default()
    };
    let unknown = client.call_tool(call("org-b", None)).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let answered = client
        .call_tool(call("org-a", Some(docs.clone())))
        .await?
        .into_inner();
    assert_eq!(text_of(&answered), "echo: hi");
    assert_eq!(theirs.state.calls(), 1);
    assert_eq!(
        theirs.state.initializations(),
        1,
        "the call used the listed connection"
    );

    // A spec named like a shared server is ignored: the shared one answers.
    let impostor = pb::McpServerSpec {
        name: "remote".into(),
        ..docs.clone()
    };
    let listed = listed_for(
        &sidecar,
        Some(org_servers("org-b", 4, std::slice::from_ref(&impostor))),
    )
    .await?;
    assert!(listed.iter().all(|(_, _, org)| !org), "{listed:?}");
    let to_shared = client
        .call_tool(pb::CallToolRequest {
            server: "remote".into(),
            ..call("org-b", Some(impostor))
        })
        .await?
        .into_inner();
    assert_eq!(text_of(&to_shared), "echo: hi");
    assert_eq!(shared.state.calls(), 1);
    assert_eq!(theirs.state.initializations(), 1);

    // A changed spec at a newer version replaces the connection; removing it closes it.
    let changed = pb::McpServerSpec {
        timeout_ms: 20_000,
        ..docs.clone()
    };
    listed_for(
        &sidecar,
        Some(org_servers("org-a", 2, std::slice::from_ref(&changed))),
    )
    .await?;
    assert_eq!(theirs.state.initializations(), 2);
    assert_eq!(
        org_connections(&sidecar).await,
        1,
        "the old connection was closed"
    );
    let stale = client.call_tool(call("org-a", Some(docs.clone()))).await?;
    assert_eq!(
        text_of(stale.get_ref()),
        "echo: hi",
        "a turn of the old version still gets its call"
    );
    listed_for(&sidecar, Some(org_servers("org-a", 5, &[]))).await?;
    assert_eq!(
        org_connections(&sidecar).await,
        0,
        "a newer version without it closes it"
    );

    // Opened again, then left unused: closed after the idle time.
    listed_for(&sidecar, Some(org_servers("org-a", 6, &[changed]))).await?;
    assert_eq!(org_connections(&sidecar).await, 1);
    eventually(
        "the idle org connection to close",
        Duration::from_secs(20),
        || async { org_connections(&sidecar).await == 0 },
    )
    .await?;
    sidecar.stop().await
}
