//! A fake MCP server built on rmcp, over stdio (the `sable-fake-mcp` binary) or
//! streamable HTTP (in-process, [`FakeMcpServer::start_http`]). Tools: `echo` (text,
//! after an optional `delay_ms`), `fail` (an `isError` result), `hang` (never answers;
//! counts the cancellations it receives), `structured` (structured content), `add_tool`
//! (adds an echoing tool and sends `notifications/tools/list_changed`), `pid` (the
//! server's process id), `cancellations` and `counters` (handshakes, calls and the most
//! calls in flight at once, as JSON: over stdio the only view of the child's state). One
//! resource (`fake://greeting`) and one prompt (`greet`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorData, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, InitializeRequestParams, InitializeResult,
    ListPromptsResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// What the fake has seen, shared by every session it serves.
#[derive(Debug, Default)]
pub struct FakeMcpState {
    cancellations: AtomicU64,
    calls: AtomicU64,
    initializations: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    extra_tools: Mutex<Vec<String>>,
    authorizations: Mutex<Vec<String>>,
}

impl FakeMcpState {
    /// `notifications/cancelled` received for `hang` calls.
    pub fn cancellations(&self) -> u64 {
        self.cancellations.load(Ordering::SeqCst)
    }

    /// Tool calls received.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// `initialize` requests answered: one per MCP session.
    pub fn initializations(&self) -> u64 {
        self.initializations.load(Ordering::SeqCst)
    }

    /// The most tool calls that were running at the same moment.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Each distinct `Authorization` header the HTTP server received, in order of first
    /// arrival (streamable HTTP only).
    pub fn authorizations(&self) -> Vec<String> {
        self.authorizations.lock().expect("lock").clone()
    }

    fn record_authorization(&self, value: Option<&str>) {
        let Some(value) = value else { return };
        let mut seen = self.authorizations.lock().expect("lock");
        if !seen.iter().any(|known| known == value) {
            seen.push(value.to_owned());
        }
    }

    /// The counters as the `counters` tool reports them.
    pub fn counters_json(&self) -> Value {
        json!({
            "initializations": self.initializations(),
            "calls": self.calls(),
            "peak_in_flight": self.peak_in_flight(),
        })
    }
}

/// One running tool call, counted in `in_flight` until it is dropped.
struct InFlight<'a>(&'a FakeMcpState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a FakeMcpState) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The MCP handler; cheap to clone (one per HTTP session, sharing the state).
#[derive(Debug, Clone, Default)]
pub struct FakeMcp {
    pub state: Arc<FakeMcpState>,
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the fake's literals match the MCP schema")
}

fn text_result(text: &str, is_error: bool) -> CallToolResult {
    from_json(json!({"content": [{"type": "text", "text": text}], "isError": is_error}))
}

fn object_schema(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

impl FakeMcp {
    fn tools(&self) -> Vec<Value> {
        let mut tools = vec![
            json!({"name": "echo", "description": "Echoes the text back, after delay_ms when given.",
                   "inputSchema": object_schema(json!({"text": {"type": "string"}, "delay_ms": {"type": "integer"}}), &["text"])}),
            json!({"name": "fail", "description": "Always fails with isError.",
                   "inputSchema": object_schema(json!({"message": {"type": "string"}}), &[])}),
            json!({"name": "hang", "description": "Never answers.",
                   "inputSchema": object_schema(json!({}), &[])}),
            json!({"name": "structured", "description": "Returns structured content.",
                   "inputSchema": object_schema(json!({"city": {"type": "string"}}), &[]),
                   "outputSchema": object_schema(json!({"city": {"type": "string"}, "celsius": {"type": "number"}}), &["city", "celsius"])}),
            json!({"name": "add_tool", "description": "Adds an echoing tool and announces the change.",
                   "inputSchema": object_schema(json!({"name": {"type": "string"}}), &["name"])}),
            json!({"name": "pid", "description": "The server's process id.",
                   "inputSchema": object_schema(json!({}), &[])}),
            json!({"name": "cancellations", "description": "How many cancellations arrived.",
                   "inputSchema": object_schema(json!({}), &[])}),
            json!({"name": "counters", "description": "Handshakes, calls and the peak of calls in flight, as JSON.",
                   "inputSchema": object_schema(json!({}), &[])}),
        ];
        for name in self.state.extra_tools.lock().expect("lock").iter() {
            tools.push(json!({"name": name, "description": "Added at run time; echoes.",
                              "inputSchema": object_schema(json!({"text": {"type": "string"}}), &[])}));
        }
        tools
    }

    async fn run_tool(
        &self,
        name: &str,
        arguments: &Value,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let text = |key: &str| arguments[key].as_str().unwrap_or_default().to_owned();
        Ok(match name {
            "echo" => {
                if let Some(delay_ms) = arguments["delay_ms"].as_u64() {
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                }
                text_result(&format!("echo: {}", text("text")), false)
            }
            "fail" => text_result(&format!("it failed: {}", text("message")), true),
            "hang" => {
                context.ct.cancelled().await;
                self.state.cancellations.fetch_add(1, Ordering::SeqCst);
                text_result("cancelled", true)
            }
            "structured" => {
                let city = text("city");
                let value = json!({"city": city, "celsius": 21.5});
                from_json(
                    json!({"content": [{"type": "text", "text": value.to_string()}],
                                 "structuredContent": value}),
                )
            }
            "add_tool" => {
                self.state
                    .extra_tools
                    .lock()
                    .expect("lock")
                    .push(text("name"));
                let _ = context.peer.notify_tool_list_changed().await;
                text_result("added", false)
            }
            "pid" => text_result(&std::process::id().to_string(), false),
            "cancellations" => text_result(&self.state.cancellations().to_string(), false),
            "counters" => text_result(&self.state.counters_json().to_string(), false),
            other
                if self
                    .state
                    .extra_tools
                    .lock()
                    .expect("lock")
                    .iter()
                    .any(|extra| extra == other) =>
            {
                text_result(&format!("{other}: {}", text("text")), false)
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named {other}"),
                    None,
                ));
            }
        })
    }
}

impl ServerHandler for FakeMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        self.state.initializations.fetch_add(1, Ordering::SeqCst);
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(from_json(json!({"tools": self.tools()})))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let _running = InFlight::enter(&self.state);
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        self.run_tool(&request.name, &arguments, context)
            .await
            .map(CallToolResponse::Complete)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(from_json(json!({"resources": [
            {"uri": "fake://greeting", "name": "greeting", "description": "A greeting.", "mimeType": "text/plain"}
        ]})))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != "fake://greeting" {
            return Err(ErrorData::resource_not_found(
                format!("no resource {}", request.uri),
                None,
            ));
        }
        let result: ReadResourceResult = from_json(json!({"contents": [
            {"uri": "fake://greeting", "mimeType": "text/plain", "text": "hello from the fake MCP server"}
        ]}));
        Ok(ReadResourceResponse::Complete(result))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(from_json(json!({"prompts": [
            {"name": "greet", "description": "Greets someone.",
             "arguments": [{"name": "name", "description": "Who to greet.", "required": true}]}
        ]})))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "greet" {
            return Err(ErrorData::invalid_params("no such prompt", None));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("nobody")
            .to_owned();
        let result: GetPromptResult = from_json(json!({
            "description": "A greeting prompt.",
            "messages": [{"role": "user", "content": {"type": "text", "text": format!("Say hello to {name}.")}}]
        }));
        Ok(GetPromptResponse::Complete(result))
    }
}

/// Serves the fake on stdin/stdout until the client goes away.
pub async fn serve_stdio() -> anyhow::Result<()> {
    let running = FakeMcp::default().serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// A fake MCP server on streamable HTTP, in this process.
pub struct FakeMcpServer {
    /// The MCP endpoint, e.g. `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    pub addr: SocketAddr,
    pub state: Arc<FakeMcpState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeMcpServer {
    /// Serves on 127.0.0.1 on a port chosen by the OS.
    pub async fn start_http() -> anyhow::Result<Self> {
        Self::start_http_on("127.0.0.1:0".parse()?).await
    }

    pub async fn start_http_on(addr: SocketAddr) -> anyhow::Result<Self> {
        use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
        use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let handler = FakeMcp::default();
        let state = handler.state.clone();
        let service = StreamableHttpService::new(
            move || Ok(handler.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let seen = state.clone();
        let app =
            axum::Router::new()
                .nest_service("/mcp", service)
                .layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        let seen = seen.clone();
                        async move {
                            seen.record_authorization(
                                request
                                    .headers()
                                    .get("authorization")
                                    .and_then(|value| value.to_str().ok()),
                            );
                            next.run(request).await
                        }
                    },
                ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{addr}/mcp"),
            addr,
            state,
            task,
        })
    }

    /// Stops serving (open connections break).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FakeMcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `sable-fake-mcp` binary (stdio), built next to the running test executable.
/// `scripts/test.sh` builds it; when it is missing this builds it with cargo into the
/// same target directory.
pub fn fake_mcp_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test knows its own path");
            // target/debug/deps/<test> -> target/debug/sable-fake-mcp
            let profile_dir = exe
                .parent()
                .and_then(std::path::Path::parent)
                .expect("test executables live in target/<profile>/deps");
            let binary = profile_dir.join("sable-fake-mcp");
            if !binary.is_file() {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .args(["build", "-p", "sable-testkit", "--bin", "sable-fake-mcp"])
                    .current_dir(crate::workspace_root())
                    .status()
                    .expect("cargo runs");
                assert!(
                    status.success() && binary.is_file(),
                    "cannot build sable-fake-mcp; run: cargo build -p sable-testkit --bin sable-fake-mcp"
                );
            }
            binary
        })
        .clone()
}
