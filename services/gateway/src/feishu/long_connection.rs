//! Feishu's long-connection ingress: one WebSocket per `long-connection` app per gateway
//! (endpoint discovery, `pbbp2` frames, pings, chunk reassembly), each event handed to
//! the webhook's intake and ACKed once it is committed; reconnects with the server's
//! settings and jitter. Replicas may all hold a connection for one app: exactly once
//! comes from the store's dedup, not from who holds the socket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use sable_store::{FeishuApp, FeishuSecrets};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::ingress;
use super::pbbp2::{self, Chunk, Frame, Reassembly};
use crate::AppState;

/// The mode whose apps get a connection.
pub(crate) const MODE: &str = "long-connection";
/// Handlers still running at shutdown get this long to commit and be ACKed.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Silence for this many ping intervals ends a connection (the SDKs have no such
/// watchdog by default; a half-open socket would otherwise never reconnect).
const SILENT_PINGS: u32 = 3;
/// Endpoint codes that are worth retrying (busy, internal error); any other non-zero
/// code is a credential or configuration error.
const RETRYABLE_CODES: [i64; 2] = [1, 1_000_040_343];
/// `Handshake-Autherrcode` of a refused connect because the app has too many.
const TOO_MANY_CONNECTIONS: i64 = 1_000_040_350;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Keeps a connection running for every `long-connection` app in the store, rereading
/// the apps every `apps_refresh` (added apps connect, removed ones disconnect), until
/// `shutdown` is cancelled; then drains each connection.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut refresh = tokio::time::interval(state.config.feishu.apps_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = refresh.tick() => {}
        }
        match state.store.feishu_apps_in_mode(MODE).await {
            Ok(apps) => reconcile(&state, &shutdown, &mut running, apps),
            Err(error) => {
                tracing::warn!(%error, "cannot read the feishu long-connection apps");
            }
        }
    }
    for (_, app) in running.drain() {
        app.stop.cancel();
        if app.task.await.is_err() {
            tracing::error!("a feishu long-connection task panicked");
        }
    }
}

/// One app's connection task, and which version of the app it runs for.
struct Running {
    created_at: DateTime<Utc>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn reconcile(
    state: &AppState,
    shutdown: &CancellationToken,
    running: &mut HashMap<String, Running>,
    apps: Vec<FeishuApp>,
) {
    running.retain(|app_id, task| {
        let current = apps
            .iter()
            .any(|app| &app.app_id == app_id && app.created_at == task.created_at);
        if !current {
            tracing::info!(%app_id, "feishu app removed: closing its long connection");
            task.stop.cancel();
        }
        current
    });
    for app in apps {
        if running.contains_key(&app.app_id) {
            continue;
        }
        let Some(secrets) = open_secrets(state, &app) else {
            continue;
        };
        let stop = shutdown.child_token();
        let connection = AppConnection {
            state: state.clone(),
            app: app.clone(),
            secrets,
            stop: stop.clone(),
        };
        running.insert(
            app.app_id.clone(),
            Running {
                created_at: app.created_at,
                stop,
                task: tokio::spawn(connection.run()),
            },
        );
    }
}

fn open_secrets(state: &AppState, app: &FeishuApp) -> Option<FeishuSecrets> {
    let Some(key) = &state.feishu.secrets_key else {
        tracing::warn!(app_id = %app.app_id, "no secrets key (SABLE_SECRETS_KEY): the long connection cannot start");
        return None;
    };
    match app.secrets.open(key, &app.app_id) {
        Ok(secrets) => Some(secrets),
        Err(error) => {
            tracing::error!(app_id = %app.app_id, %error, "feishu app secrets do not open");
            None
        }
    }
}

/// The server's `ClientConfig`, in seconds (`ReconnectCount < 0`: retry forever).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ClientConfig {
    pub reconnect_count: i64,
    pub reconnect_interval: Duration,
    pub reconnect_nonce: Duration,
    pub ping_interval: Duration,
}

impl Default for ClientConfig {
    /// The SDKs' defaults, until the server says otherwise.
    fn default() -> Self {
        Self {
            reconnect_count: -1,
            reconnect_interval: Duration::from_secs(120),
            reconnect_nonce: Duration::from_secs(30),
            ping_interval: Duration::from_secs(120),
        }
    }
}

impl ClientConfig {
    /// This config with the server's values applied, key by key: a missing, negative,
    /// non-numeric or absurd value keeps the one before (intervals are at least a
    /// second: a zero would spin).
    pub(crate) fn updated(self, update: &Value) -> Self {
        let number = |key: &str| update.get(key).and_then(Value::as_f64);
        let seconds = |key: &str, floor: f64, before: Duration| match number(key) {
            Some(value) if (0.0..86_400.0).contains(&value) => {
                Duration::from_secs_f64(value.max(floor))
            }
            _ => before,
        };
        Self {
            reconnect_count: update
                .get("ReconnectCount")
                .and_then(Value::as_i64)
                .unwrap_or(self.reconnect_count),
            reconnect_interval: seconds("ReconnectInterval", 1.0, self.reconnect_interval),
            reconnect_nonce: seconds("ReconnectNonce", 0.0, self.reconnect_nonce),
            ping_interval: seconds("PingInterval", 1.0, self.ping_interval),
        }
    }

    /// A random wait in `0 ..= ReconnectNonce`, so replicas do not reconnect in step.
    fn jitter(&self) -> Duration {
        let nonce_ms = u64::try_from(self.reconnect_nonce.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=nonce_ms))
    }
}

/// Why a connection attempt or a connection ended.
#[derive(Debug)]
enum Ended {
    /// The gateway is stopping (or the app was removed).
    Stopped,
    /// A connection that was up went down: reconnect after the jitter.
    Dropped(String),
    /// An attempt failed in a way worth retrying after `ReconnectInterval`.
    Failed(String),
    /// Retrying cannot help (bad credentials, forbidden, too many connections).
    Fatal(String),
}

/// What discovery returned: where to connect, with which settings.
struct Endpoint {
    url: String,
    config: Option<Value>,
}

struct AppConnection {
    state: AppState,
    app: FeishuApp,
    secrets: FeishuSecrets,
    stop: CancellationToken,
}

impl AppConnection {
    /// Connects, and reconnects (jitter after a drop, `ReconnectInterval` between failed
    /// attempts, at most `ReconnectCount` failures in a row) until stopped.
    async fn run(self) {
        let app_id = self.app.app_id.clone();
        let mut config = ClientConfig::default();
        let mut failures: i64 = 0;
        loop {
            let wait = match self.connect_once(&mut config).await {
                Ended::Stopped => return,
                Ended::Fatal(reason) => {
                    tracing::error!(%app_id, %reason, "feishu long connection gave up");
                    return;
                }
                Ended::Dropped(reason) => {
                    failures = 0;
                    tracing::warn!(%app_id, %reason, "feishu long connection dropped; reconnecting");
                    config.jitter()
                }
                Ended::Failed(reason) => {
                    failures += 1;
                    if config.reconnect_count >= 0 && failures > config.reconnect_count {
                        tracing::error!(%app_id, %reason, failures, "feishu long connection: no reconnects left");
                        return;
                    }
                    tracing::warn!(%app_id, %reason, "feishu long connection failed; retrying");
                    config.reconnect_interval + config.jitter()
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Discovers a fresh endpoint (never reusing an old URL), connects and serves the
    /// connection until it ends.
    async fn connect_once(&self, config: &mut ClientConfig) -> Ended {
        let endpoint = tokio::select! {
            () = self.stop.cancelled() => return Ended::Stopped,
            endpoint = self.discover() => endpoint,
        };
        let endpoint = match endpoint {
            Ok(endpoint) => endpoint,
            Err(ended) => return ended,
        };
        if let Some(update) = &endpoint.config {
            *config = config.updated(update);
        }
        let connected = tokio::select! {
            () = self.stop.cancelled() => return Ended::Stopped,
            connected = tokio_tungstenite::connect_async(endpoint.url.as_str()) => connected,
        };
        let socket = match connected {
            Ok((socket, _)) => socket,
            Err(error) => return handshake_failure(error),
        };
        let query = query_params(&endpoint.url);
        let service = query
            .get("service_id")
            .and_then(|value| value.parse::<i32>().ok())
            .unwrap_or(0);
        let conn_id = query.get("device_id").cloned().unwrap_or_default();
        tracing::info!(app_id = %self.app.app_id, %conn_id, "feishu long connection up");
        Session::new(self, service, *config)
            .serve(socket, config)
            .await
    }

    /// `POST {base}/callback/ws/endpoint` with the app's credentials.
    async fn discover(&self) -> Result<Endpoint, Ended> {
        let url = format!("{}/callback/ws/endpoint", self.app.base_url);
        let response = self
            .state
            .config
            .feishu
            .client
            .post(url)
            .header("locale", "zh")
            .json(&json!({"AppID": self.app.app_id, "AppSecret": self.secrets.app_secret}))
            .send()
            .await
            .map_err(|error| {
                Ended::Failed(format!(
                    "endpoint discovery unreachable: {}",
                    error.without_url()
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Ended::Failed(format!(
                "endpoint discovery answered {status}"
            )));
        }
        let body: Value = response.json().await.map_err(|error| {
            Ended::Failed(format!("endpoint discovery answered without JSON: {error}"))
        })?;
        let code = body["code"].as_i64().unwrap_or(-1);
        if code != 0 {
            let reason = format!(
                "endpoint discovery refused (code {code}: {})",
                body["msg"].as_str().unwrap_or("")
            );
            return Err(if RETRYABLE_CODES.contains(&code) {
                Ended::Failed(reason)
            } else {
                Ended::Fatal(reason)
            });
        }
        let url = body["data"]["URL"]
            .as_str()
            .filter(|url| !url.is_empty())
            .ok_or_else(|| Ended::Failed("endpoint discovery returned no URL".into()))?;
        Ok(Endpoint {
            url: url.to_owned(),
            config: body["data"].get("ClientConfig").cloned(),
        })
    }
}

/// A refused upgrade: `Handshake-Status` 403, or 514 with the too-many-connections code,
/// is fatal; anything else is retried. The URL (it carries the ticket) is never logged.
fn handshake_failure(error: tungstenite::Error) -> Ended {
    let tungstenite::Error::Http(response) = &error else {
        return Ended::Failed(format!("connect failed: {}", connect_error(&error)));
    };
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<i64>().ok())
    };
    let status = header("handshake-status");
    let auth_code = header("handshake-autherrcode");
    let reason = format!(
        "connect refused with HTTP {} (Handshake-Status {status:?}, Handshake-Autherrcode {auth_code:?})",
        response.status()
    );
    match (status, auth_code) {
        (Some(403), _) | (Some(514), Some(TOO_MANY_CONNECTIONS)) => Ended::Fatal(reason),
        _ => Ended::Failed(reason),
    }
}

/// A connect error without the URL in it.
fn connect_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Url(_) => "the endpoint URL is not a ws:// or wss:// URL".into(),
        other => other.to_string(),
    }
}

fn query_params(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// An event handed to the intake: the frame to ACK and the whole payload.
type Pushed = (Frame, Vec<u8>);
/// An event taken (or not): the frame to ACK, the ACK's code, the time it took.
type Handled = (Frame, u16, Duration);

/// One live connection: reads frames, pings, and writes the ACKs of what its intake
/// task took.
struct Session<'a> {
    connection: &'a AppConnection,
    service: i32,
    ping_interval: Duration,
    reassembly: Reassembly,
    /// Events in arrival order; `None` once draining.
    events: Option<mpsc::UnboundedSender<Pushed>>,
    handled: mpsc::UnboundedReceiver<Handled>,
    intake: tokio::task::JoinHandle<()>,
}

impl<'a> Session<'a> {
    fn new(connection: &'a AppConnection, service: i32, config: ClientConfig) -> Self {
        let (events, pushed) = mpsc::unbounded_channel();
        let (done, handled) = mpsc::unbounded_channel();
        let intake = tokio::spawn(take_in_order(
            connection.state.clone(),
            connection.app.clone(),
            connection.secrets.clone(),
            pushed,
            done,
        ));
        Self {
            connection,
            service,
            ping_interval: config.ping_interval,
            reassembly: Reassembly::default(),
            events: Some(events),
            handled,
            intake,
        }
    }

    /// Serves until the socket ends or the connection is stopped; pongs carrying a
    /// `ClientConfig` update `config`.
    async fn serve(mut self, mut socket: Socket, config: &mut ClientConfig) -> Ended {
        let mut ping = tokio::time::interval(self.ping_interval);
        let mut last_heard = Instant::now();
        let ended = loop {
            tokio::select! {
                () = self.connection.stop.cancelled() => break Ended::Stopped,
                Some(done) = self.handled.recv() => {
                    if let Err(reason) = self.acknowledge(&mut socket, done).await {
                        break Ended::Dropped(reason);
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > self.ping_interval * SILENT_PINGS {
                        break Ended::Dropped("the server went silent".into());
                    }
                    let frame = pbbp2::encode(&Frame::ping(self.service));
                    if let Err(error) = socket.send(Message::Binary(frame.into())).await {
                        break Ended::Dropped(format!("ping failed: {error}"));
                    }
                }
                message = socket.next() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Binary(bytes))) => {
                            if let Some(update) = self.on_frame(&bytes) {
                                *config = config.updated(&update);
                                if config.ping_interval != self.ping_interval {
                                    self.ping_interval = config.ping_interval;
                                    ping = tokio::time::interval_at(
                                        tokio::time::Instant::now() + self.ping_interval,
                                        self.ping_interval,
                                    );
                                }
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => {
                            break Ended::Dropped("closed by the server".into());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => break Ended::Dropped(format!("read failed: {error}")),
                    }
                }
            }
        };
        self.drain(&mut socket).await;
        ended
    }

    /// Handles one frame; returns a `ClientConfig` a pong carried.
    fn on_frame(&mut self, bytes: &[u8]) -> Option<Value> {
        let app_id = &self.connection.app.app_id;
        let Some(frame) = pbbp2::decode(bytes) else {
            tracing::warn!(%app_id, "feishu long connection: a binary message that is not a pbbp2 frame");
            return None;
        };
        match (frame.method, frame.header("type")) {
            (pbbp2::CONTROL, Some("pong")) => frame
                .payload
                .as_deref()
                .filter(|payload| !payload.is_empty())
                .and_then(|payload| serde_json::from_slice(payload).ok()),
            (pbbp2::DATA, Some("event")) => {
                self.on_event(frame);
                None
            }
            // Old-style card callbacks are not supported over the long connection (the
            // SDKs drop them unanswered too); server pings want no answer.
            _ => None,
        }
    }

    fn on_event(&mut self, mut frame: Frame) {
        let Some(chunk) = Chunk::of(&frame) else {
            tracing::warn!(app_id = %self.connection.app.app_id, "feishu long connection: a data frame with bad chunk headers");
            return;
        };
        let payload = frame.payload.take().unwrap_or_default();
        let Some(payload) = self.reassembly.add(&chunk, payload, Instant::now()) else {
            return;
        };
        if let Some(events) = &self.events {
            // The intake ends only after this sender is dropped.
            let _queued = events.send((frame, payload));
        }
    }

    /// ACKs a handled event (its frame echoed; the completing frame of a chunked one).
    async fn acknowledge(&self, socket: &mut Socket, done: Handled) -> Result<(), String> {
        let (frame, code, elapsed) = done;
        let ack = pbbp2::encode(&frame.ack(code, elapsed));
        socket
            .send(Message::Binary(ack.into()))
            .await
            .map_err(|error| format!("ACK failed: {error}"))
    }

    /// Lets the intake take the events already received and ACKs them (within a
    /// limit), then closes.
    async fn drain(&mut self, socket: &mut Socket) {
        self.events = None;
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, self.handled.recv()).await {
            if self.acknowledge(socket, done).await.is_err() {
                break;
            }
        }
        self.intake.abort();
        let _closed = socket.close(None).await;
    }
}

/// Takes a connection's events one at a time, in the order they arrived, so one user's
/// messages become turns in the order Feishu pushed them (as its SDKs handle them).
async fn take_in_order(
    state: AppState,
    app: FeishuApp,
    secrets: FeishuSecrets,
    mut pushed: mpsc::UnboundedReceiver<Pushed>,
    done: mpsc::UnboundedSender<Handled>,
) {
    while let Some((frame, payload)) = pushed.recv().await {
        let started = Instant::now();
        let code = match ingress::accept_pushed_event(&state, &app, &secrets, &payload).await {
            Ok(()) => 200,
            Err(error) => {
                tracing::warn!(app_id = %app.app_id, %error, "feishu long connection: event not taken");
                error.status().as_u16()
            }
        };
        if done.send((frame, code, started.elapsed())).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_client_config_applies_key_by_key_and_odd_values_keep_the_old_ones() {
        let config = ClientConfig::default().updated(&json!({
            "ReconnectCount": 3, "ReconnectInterval": 5, "ReconnectNonce": 0.5, "PingInterval": 90,
        }));
        assert_eq!(
            config,
            ClientConfig {
                reconnect_count: 3,
                reconnect_interval: Duration::from_secs(5),
                reconnect_nonce: Duration::from_millis(500),
                ping_interval: Duration::from_secs(90),
            }
        );
        let odd = config
            .updated(&json!({"PingInterval": 0, "ReconnectInterval": -1, "ReconnectNonce": "x"}));
        assert_eq!(
            odd.ping_interval,
            Duration::from_secs(1),
            "floored, never zero"
        );
        assert_eq!(odd.reconnect_interval, Duration::from_secs(5));
        assert_eq!(odd.reconnect_nonce, Duration::from_millis(500));
        assert_eq!(config.updated(&json!("not an object")), config);
        for _ in 0..100 {
            assert!(config.jitter() <= Duration::from_millis(500));
        }
    }

    #[test]
    fn a_refused_handshake_is_fatal_only_when_forbidden_or_over_the_connection_limit() {
        let refusal = |status: &str, code: &str| {
            let response = tungstenite::http::Response::builder()
                .status(400)
                .header("Handshake-Status", status)
                .header("Handshake-Autherrcode", code)
                .body(None)
                .expect("a response");
            handshake_failure(tungstenite::Error::Http(Box::new(response)))
        };
        assert!(matches!(refusal("403", "0"), Ended::Fatal(_)));
        assert!(matches!(refusal("514", "1000040350"), Ended::Fatal(_)));
        assert!(matches!(refusal("514", "1"), Ended::Failed(_)));
        assert!(matches!(refusal("500", "0"), Ended::Failed(_)));
    }
}
