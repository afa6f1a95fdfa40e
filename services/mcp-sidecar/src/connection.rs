//! One long-lived connection per MCP server: opened at start (a shared server) or on the
//! first request that needs it (an org's), reconnected with backoff and jitter when it
//! drops, its tool list refreshed on `notifications/tools/list_changed`, and every call
//! bounded by a deadline (passing it sends the server a cancellation).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    GetPromptRequestParams, GetPromptResult, Implementation, JsonObject, Prompt,
    ReadResourceRequestParams, ReadResourceResult, Resource, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ServerConfig, TransportConfig};
use crate::stats::CallStats;

/// Where a server's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Down,
    Disabled,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Down => "down",
            Self::Disabled => "disabled",
        }
    }
}

/// Why a request to a server produced no result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("MCP server '{0}' is not connected")]
    NotConnected(String),
    #[error("MCP server '{server}' has no tool '{tool}'")]
    UnknownTool { server: String, tool: String },
    #[error("the call took longer than {0:?}; the MCP server was told to cancel it")]
    Deadline(Duration),
    #[error("MCP server '{server}' failed the request: {message}")]
    Failed { server: String, message: String },
}

/// What changes while the sidecar runs.
struct Live {
    state: ConnectionState,
    peer: Option<Peer<RoleClient>>,
    tools: Arc<Vec<Tool>>,
    last_error: Option<String>,
    reconnects: u64,
    /// The stdio child's process id, for logs.
    pid: Option<u32>,
}

/// A point-in-time view of one server, for `Status` and `ListServers`.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    pub state: ConnectionState,
    pub last_error: Option<String>,
    pub tool_count: usize,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub reconnects: u64,
}

/// One configured server and its connection.
pub(crate) struct Server {
    pub config: ServerConfig,
    /// The org whose own server this is; `None`: a shared server of `config/mcp.toml`.
    pub org_id: Option<String>,
    live: RwLock<Live>,
    stats: Mutex<CallStats>,
    slots: Semaphore,
    refresh: Arc<Notify>,
    revision: Arc<AtomicU64>,
    /// True once the first connection attempt ended, either way.
    settled: watch::Sender<bool>,
}

/// The `server` label of an org's server in metrics: one value for all of them, so the
/// number of series does not grow with orgs (and no org's server name is exported). Not
/// a valid server name, so it never meets a shared server's.
const ORG_SERVER_LABEL: &str = "(org)";

/// Tells the supervisor when the server's tool list changed.
#[derive(Clone)]
struct Handler {
    refresh: Arc<Notify>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("sable-mcp-sidecar", env!("CARGO_PKG_VERSION")),
        )
    }
}

impl Server {
    pub(crate) fn new(config: ServerConfig, revision: Arc<AtomicU64>) -> Self {
        Self::of(config, None, revision)
    }

    /// One of `org_id`'s own servers.
    pub(crate) fn for_org(config: ServerConfig, org_id: &str, revision: Arc<AtomicU64>) -> Self {
        Self::of(config, Some(org_id.to_owned()), revision)
    }

    fn of(config: ServerConfig, org_id: Option<String>, revision: Arc<AtomicU64>) -> Self {
        let state = if config.enabled {
            ConnectionState::Connecting
        } else {
            ConnectionState::Disabled
        };
        let slots = Semaphore::new(config.max_concurrent_calls);
        Self {
            config,
            org_id,
            settled: watch::Sender::new(false),
            live: RwLock::new(Live {
                state,
                peer: None,
                tools: Arc::default(),
                last_error: None,
                reconnects: 0,
                pid: None,
            }),
            stats: Mutex::default(),
            slots,
            refresh: Arc::default(),
            revision,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The `server` label of this server's metrics.
    fn label(&self) -> String {
        if self.org_id.is_some() {
            ORG_SERVER_LABEL.to_owned()
        } else {
            self.config.name.clone()
        }
    }

    /// `message` with an org's server's URL cut to its origin: an org's URL may carry a
    /// token in its path or query, and errors (reqwest's among them) quote the URL.
    fn redacted(&self, message: String) -> String {
        match (&self.org_id, &self.config.transport) {
            (Some(_), TransportConfig::Http { url, .. }) => {
                message.replace(url.as_str(), sable_proto::url_origin(url))
            }
            _ => message,
        }
    }

    /// Waits, at most `limit`, for the first connection attempt to end (at once when it
    /// did): a server opened for this request is listed with its tools when it answers.
    pub(crate) async fn first_attempt(&self, limit: Duration) {
        let mut settled = self.settled.subscribe();
        let _ = tokio::time::timeout(limit, settled.wait_for(|settled| *settled)).await;
    }

    /// Closes the connection for good (an org's server that is idle or was removed):
    /// calls still holding the server fail as not connected.
    pub(crate) fn close(&self, why: &str) {
        self.set_state(ConnectionState::Disabled, Some(why.to_owned()));
    }

    pub(crate) fn view(&self) -> ServerView {
        let live = self.live.read().expect("lock");
        let stats = self.stats.lock().expect("lock");
        ServerView {
            state: live.state,
            last_error: live.last_error.clone(),
            tool_count: live.tools.len(),
            calls: stats.calls,
            errors: stats.errors,
            p50_ms: stats.percentile(0.5),
            p99_ms: stats.percentile(0.99),
            reconnects: live.reconnects,
        }
    }

    /// The tools offered while connected; none otherwise.
    pub(crate) fn tools(&self) -> Arc<Vec<Tool>> {
        let live = self.live.read().expect("lock");
        if live.state == ConnectionState::Connected {
            live.tools.clone()
        } else {
            Arc::default()
        }
    }

    fn connected_peer(&self) -> Result<Peer<RoleClient>, CallError> {
        let live = self.live.read().expect("lock");
        match (&live.peer, live.state) {
            (Some(peer), ConnectionState::Connected) => Ok(peer.clone()),
            _ => Err(CallError::NotConnected(self.config.name.clone())),
        }
    }

    fn set_state(&self, state: ConnectionState, error: Option<String>) {
        let mut live = self.live.write().expect("lock");
        if live.state == ConnectionState::Connected && state != ConnectionState::Connected {
            live.peer = None;
        }
        live.state = state;
        if error.is_some() {
            live.last_error = error;
        }
        drop(live);
        if state != ConnectionState::Connecting {
            self.settled.send_replace(true);
        }
        self.revision.fetch_add(1, Ordering::SeqCst);
        if self.org_id.is_none() {
            metrics::gauge!("sable_mcp_server_up", "server" => self.config.name.clone()).set(
                if state == ConnectionState::Connected {
                    1.0
                } else {
                    0.0
                },
            );
        }
    }

    /// Runs `tools/call` within `deadline` (the server's timeout when shorter). Dropping
    /// the request at the deadline sends `notifications/cancelled`.
    pub(crate) async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        deadline: Option<Duration>,
    ) -> Result<CallToolResult, CallError> {
        let started = Instant::now();
        let result = self.call_tool_uncounted(tool, arguments, deadline).await;
        let failed = !matches!(&result, Ok(result) if result.is_error != Some(true));
        self.stats
            .lock()
            .expect("lock")
            .record(started.elapsed(), failed);
        let outcome = match &result {
            Ok(result) if result.is_error == Some(true) => "is_error",
            Ok(_) => "ok",
            Err(CallError::Deadline(_)) => "timeout",
            Err(CallError::NotConnected(_)) => "not_connected",
            Err(CallError::UnknownTool { .. }) => "unknown_tool",
            Err(CallError::Failed { .. }) => "failed",
        };
        metrics::counter!("sable_mcp_calls_total", "server" => self.label(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("sable_mcp_call_duration_seconds", "server" => self.label())
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn call_tool_uncounted(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        deadline: Option<Duration>,
    ) -> Result<CallToolResult, CallError> {
        let peer = self.connected_peer()?;
        if !self.tools().iter().any(|known| known.name == tool) {
            return Err(CallError::UnknownTool {
                server: self.config.name.clone(),
                tool: tool.to_owned(),
            });
        }
        let limit = deadline.map_or(self.config.timeout, |deadline| {
            deadline.min(self.config.timeout)
        });
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        let call = async {
            // Calls beyond max_concurrent_calls wait for a slot within their deadline.
            let _slot = self.slots.acquire().await;
            peer.call_tool(params).await
        };
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(CallError::Deadline(limit)),
            Ok(Err(error)) => Err(self.failed(&error)),
            Ok(Ok(result)) => Ok(result),
        }
    }

    fn failed(&self, error: &rmcp::ServiceError) -> CallError {
        CallError::Failed {
            server: self.config.name.clone(),
            message: self.redacted(error.to_string()),
        }
    }

    pub(crate) async fn list_resources(&self) -> Result<Vec<Resource>, CallError> {
        let peer = self.connected_peer()?;
        self.bounded(peer.list_all_resources()).await
    }

    pub(crate) async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, CallError> {
        let peer = self.connected_peer()?;
        self.bounded(peer.read_resource(ReadResourceRequestParams::new(uri)))
            .await
    }

    pub(crate) async fn list_prompts(&self) -> Result<Vec<Prompt>, CallError> {
        let peer = self.connected_peer()?;
        self.bounded(peer.list_all_prompts()).await
    }

    pub(crate) async fn get_prompt(
        &self,
        name: &str,
        arguments: JsonObject,
    ) -> Result<GetPromptResult, CallError> {
        let peer = self.connected_peer()?;
        let params = GetPromptRequestParams::new(name).with_arguments(arguments);
        self.bounded(peer.get_prompt(params)).await
    }

    async fn bounded<T>(
        &self,
        request: impl Future<Output = Result<T, rmcp::ServiceError>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.config.timeout, request).await {
            Err(_) => Err(CallError::Deadline(self.config.timeout)),
            Ok(result) => result.map_err(|error| self.failed(&error)),
        }
    }
}

/// How reconnection waits between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `failures` (1 = first retry), ±25% jitter.
    fn delay(self, failures: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(self.max);
        let jitter = rand::rng().random_range(0.75..1.25);
        base.mul_f64(jitter)
    }
}

/// Keeps `server` connected until `shutdown`.
pub(crate) async fn supervise(server: Arc<Server>, backoff: Backoff, shutdown: CancellationToken) {
    if !server.config.enabled {
        return;
    }
    let mut failures = 0u32;
    loop {
        if failures > 0 {
            server.live.write().expect("lock").reconnects += 1;
            server.set_state(ConnectionState::Connecting, None);
        }
        let error = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = connect(&server) => match outcome {
                Ok(running) => {
                    failures = 0;
                    match serve_connection(&server, running, &shutdown).await {
                        Some(reason) => reason,
                        None => return,
                    }
                }
                Err(error) => error,
            },
        };
        let error = server.redacted(error);
        tracing::warn!(server = %server.name(), org_id = server.org_id.as_deref(), %error, "MCP server connection is down");
        server.set_state(ConnectionState::Down, Some(error));
        failures = failures.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.delay(failures)) => {}
        }
    }
}

/// Holds a connection open, refreshing its tools on `list_changed`, until it drops (its
/// reason is returned) or shutdown (`None`).
async fn serve_connection(
    server: &Server,
    running: RunningService<RoleClient, Handler>,
    shutdown: &CancellationToken,
) -> Option<String> {
    let peer = running.peer().clone();
    let cancel = running.cancellation_token();
    let mut quit = Box::pin(running.waiting());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                cancel.cancel();
                let _ = quit.await;
                return None;
            }
            () = server.refresh.notified() => {
                match list_tools(server, &peer).await {
                    Ok(tools) => {
                        tracing::info!(server = %server.name(), tools = tools.len(), "MCP server's tool list changed");
                        server.live.write().expect("lock").tools = Arc::new(tools);
                        server.revision.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => {
                        cancel.cancel();
                        let _ = quit.await;
                        return Some(format!("cannot refresh the tool list: {error}"));
                    }
                }
            }
            reason = &mut quit => {
                return Some(match reason {
                    Ok(reason) => format!("the connection ended ({reason:?})"),
                    Err(error) => format!("the connection task failed: {error}"),
                });
            }
        }
    }
}

/// Opens the connection, completes the MCP handshake and lists the tools, within the
/// server's timeout.
async fn connect(server: &Server) -> Result<RunningService<RoleClient, Handler>, String> {
    let handler = Handler {
        refresh: server.refresh.clone(),
    };
    let open = async {
        let (running, pid) = match &server.config.transport {
            TransportConfig::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                let mut process = tokio::process::Command::new(command);
                process.args(args).envs(env);
                if let Some(cwd) = cwd {
                    process.current_dir(cwd);
                }
                let (transport, stderr) = TokioChildProcess::builder(process)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|error| format!("cannot start '{command}': {error}"))?;
                let pid = transport.id();
                if let Some(stderr) = stderr {
                    tokio::spawn(log_stderr(server.config.name.clone(), stderr));
                }
                let running = handler
                    .serve(transport)
                    .await
                    .map_err(|error| format!("the MCP handshake failed: {error}"))?;
                (running, pid)
            }
            TransportConfig::Http { url, headers } => {
                let headers = headers
                    .iter()
                    .filter_map(|(name, value)| {
                        Some((
                            http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                            http::HeaderValue::from_str(value).ok()?,
                        ))
                    })
                    .collect();
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(headers)
                    .max_concurrent_requests(server.config.max_concurrent_calls);
                let transport = StreamableHttpClientTransport::from_config(config);
                let running = handler
                    .serve(transport)
                    .await
                    .map_err(|error| format!("the MCP handshake with {url} failed: {error}"))?;
                (running, None)
            }
        };
        let tools = list_tools(server, running.peer()).await?;
        Ok::<_, String>((running, pid, tools))
    };
    let (running, pid, tools) = tokio::time::timeout(server.config.timeout, open)
        .await
        .map_err(|_elapsed| format!("no answer within {:?}", server.config.timeout))??;
    tracing::info!(server = %server.name(), org_id = server.org_id.as_deref(), transport = server.config.transport.kind(), tools = tools.len(), ?pid, "MCP server connected");
    {
        let mut live = server.live.write().expect("lock");
        live.peer = Some(running.peer().clone());
        live.tools = Arc::new(tools);
        live.pid = pid;
    }
    server.set_state(ConnectionState::Connected, None);
    Ok(running)
}

/// The server's tools after the allow and deny lists.
async fn list_tools(server: &Server, peer: &Peer<RoleClient>) -> Result<Vec<Tool>, String> {
    let tools = peer
        .list_all_tools()
        .await
        .map_err(|error| format!("tools/list failed: {error}"))?;
    Ok(tools
        .into_iter()
        .filter(|tool| server.config.offers(&tool.name))
        .collect())
}

/// A stdio server's stderr goes to the sidecar's log, line by line, with its name.
async fn log_stderr(server: String, stderr: tokio::process::ChildStderr) {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "sable_mcp_sidecar::server_stderr", server = %server, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let first = backoff.delay(1);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let third = backoff.delay(3);
        assert!(third >= Duration::from_millis(300) && third <= Duration::from_millis(500));
        let late = backoff.delay(30);
        assert!(late <= Duration::from_millis(1250));
    }
}
