//! A fake of Feishu's long-connection server: hands out endpoints through the fake
//! open platform's `POST /callback/ws/endpoint` (single-use tickets), speaks `pbbp2`
//! over a real WebSocket, answers pings with the `ClientConfig`, pushes events (whole or
//! in chunks, to one connection or to all), records every ACK, and drops connections
//! on demand.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::FakeFeishu;

/// The `service_id` of the endpoints handed out (Feishu's own, from a real URL).
pub const SERVICE_ID: i32 = 33_554_678;

/// `pbbp2.Header`.
#[derive(Clone, PartialEq, prost::Message)]
struct Header {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, required, tag = "2")]
    value: String,
}

/// `pbbp2.Frame` (proto2; fields 1 to 4 required, so always written).
#[derive(Clone, PartialEq, prost::Message)]
struct Frame {
    #[prost(uint64, required, tag = "1")]
    seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    log_id: u64,
    #[prost(int32, required, tag = "3")]
    service: i32,
    #[prost(int32, required, tag = "4")]
    method: i32,
    #[prost(message, repeated, tag = "5")]
    headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    log_id_new: Option<String>,
}

impl Frame {
    fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|header| header.key == key)
            .map(|header| header.value.as_str())
    }
}

fn header(key: &str, value: impl Into<String>) -> Header {
    Header {
        key: key.to_owned(),
        value: value.into(),
    }
}

/// A data frame a client sent back: its ACK of one push.
#[derive(Debug, Clone)]
pub struct FeishuWsAck {
    /// Which connection it came on.
    pub connection: u64,
    /// The push's `message_id` header (one per push, shared by its chunks).
    pub message_id: String,
    /// The `seq` header of the frame it echoes (the chunk that completed the message).
    pub seq: String,
    pub seq_id: u64,
    /// `code` of the JSON payload (`None` when the payload is not that JSON).
    pub code: Option<i64>,
    /// The `biz_rt` header the client appended.
    pub biz_rt: Option<String>,
}

/// A connection as the fake saw it.
#[derive(Debug, Clone)]
pub struct FeishuWsConnection {
    pub id: u64,
    /// The `device_id` of the endpoint it connected to.
    pub device_id: String,
    pub open: bool,
    /// Whether the client ended it with a close frame (a clean shutdown).
    pub closed_by_client: bool,
    /// Client pings received on it.
    pub pings: usize,
}

enum Outgoing {
    Frame(Vec<u8>),
    Drop,
}

struct Connection {
    info: FeishuWsConnection,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

#[derive(Default)]
struct Server {
    addr: Option<SocketAddr>,
    client_config: Value,
    tickets: HashSet<String>,
    discoveries: usize,
    refused_handshakes: usize,
    connections: Vec<Connection>,
    acks: Vec<FeishuWsAck>,
    next_seq_id: u64,
}

/// What the fake open platform's endpoint route asks for an answer to discovery.
#[derive(Clone)]
pub(crate) struct Discovery(Arc<Mutex<Server>>);

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Discovery")
    }
}

impl Discovery {
    /// `data` of a successful `/callback/ws/endpoint` answer: a fresh URL with a new
    /// single-use ticket, and the current `ClientConfig`.
    pub(crate) fn answer(&self) -> Value {
        let mut server = self.0.lock().expect("fake feishu ws lock");
        server.discoveries += 1;
        let ticket = uuid::Uuid::new_v4().to_string();
        server.tickets.insert(ticket.clone());
        let addr = server.addr.expect("bound before discovery is served");
        let url = format!(
            "ws://{addr}/ws/v2?fpid=493&aid=552564&device_id=7618{discovery:012}&access_key={key}&service_id={SERVICE_ID}&ticket={ticket}",
            discovery = server.discoveries,
            key = uuid::Uuid::new_v4().simple(),
        );
        json!({"URL": url, "ClientConfig": server.client_config})
    }
}

/// A running fake long-connection server for one fake open platform's app.
#[derive(Clone)]
pub struct FakeFeishuWs {
    server: Arc<Mutex<Server>>,
}

impl FakeFeishuWs {
    /// Starts on 127.0.0.1 and makes `platform` hand out its endpoints. The
    /// `ClientConfig` pings every second and reconnects within a second or two.
    pub async fn start(platform: &FakeFeishu) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let server = Arc::new(Mutex::new(Server {
            addr: Some(listener.local_addr()?),
            client_config: json!({
                "ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 1, "PingInterval": 1,
            }),
            ..Server::default()
        }));
        platform.serve_long_connection(Discovery(server.clone()));
        let accepting = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(accepting.clone(), stream));
            }
        });
        Ok(Self { server })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Server> {
        self.server.lock().expect("fake feishu ws lock")
    }

    /// Replaces the `ClientConfig` given at discovery and in pongs.
    pub fn set_client_config(&self, config: Value) {
        self.lock().client_config = config;
    }

    /// Every connection so far, oldest first.
    pub fn connections(&self) -> Vec<FeishuWsConnection> {
        self.lock()
            .connections
            .iter()
            .map(|connection| connection.info.clone())
            .collect()
    }

    pub fn open_connections(&self) -> usize {
        self.connections()
            .iter()
            .filter(|connection| connection.open)
            .count()
    }

    /// How many endpoints were handed out.
    pub fn discoveries(&self) -> usize {
        self.lock().discoveries
    }

    /// Upgrades refused for a missing, unknown or reused ticket.
    pub fn refused_handshakes(&self) -> usize {
        self.lock().refused_handshakes
    }

    /// Every ACK received, in arrival order.
    pub fn acks(&self) -> Vec<FeishuWsAck> {
        self.lock().acks.clone()
    }

    /// Closes every open connection abruptly (no close handshake), as a network fault.
    pub fn drop_connections(&self) {
        for connection in &self.lock().connections {
            let _gone = connection.outgoing.send(Outgoing::Drop);
        }
    }

    /// Pushes `event` to one open connection picked at random (Feishu's cluster mode),
    /// whole; returns the push's `message_id`.
    pub fn push_event(&self, event: &Value) -> anyhow::Result<String> {
        self.push(event, 1, Target::One)
    }

    /// Pushes `event` to one open connection in `chunks` frames, sent last chunk first.
    pub fn push_event_chunked(&self, event: &Value, chunks: usize) -> anyhow::Result<String> {
        self.push(event, chunks, Target::One)
    }

    /// Pushes the same frame of `event` to every open connection (what several
    /// replicas see when a push is repeated to each of them).
    pub fn push_event_to_all(&self, event: &Value) -> anyhow::Result<String> {
        self.push(event, 1, Target::All)
    }

    fn push(&self, event: &Value, chunks: usize, target: Target) -> anyhow::Result<String> {
        let payload = event.to_string().into_bytes();
        anyhow::ensure!(
            (1..=payload.len()).contains(&chunks),
            "cannot split {} bytes into {chunks} chunks",
            payload.len()
        );
        let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let mut server = self.lock();
        let open: Vec<usize> = (0..server.connections.len())
            .filter(|&index| server.connections[index].info.open)
            .collect();
        anyhow::ensure!(!open.is_empty(), "no open long connection to push to");
        let targets = match target {
            Target::One => vec![open[rand::random_range(0..open.len())]],
            Target::All => open,
        };
        let size = payload.len().div_ceil(chunks);
        let pieces: Vec<&[u8]> = payload.chunks(size).collect();
        let mut frames = Vec::new();
        for (seq, piece) in pieces.iter().enumerate().rev() {
            server.next_seq_id += 1;
            let frame = Frame {
                seq_id: server.next_seq_id,
                log_id: server.next_seq_id + 1_000_000,
                service: SERVICE_ID,
                method: 1,
                headers: vec![
                    header("type", "event"),
                    header("message_id", message_id.clone()),
                    header("sum", pieces.len().to_string()),
                    header("seq", seq.to_string()),
                    header("trace_id", format!("trace-{}", server.next_seq_id)),
                ],
                payload_encoding: None,
                payload_type: None,
                payload: Some(piece.to_vec()),
                log_id_new: Some(format!("{}_fake", server.next_seq_id)),
            };
            frames.push(frame.encode_to_vec());
        }
        for index in targets {
            for frame in &frames {
                let _gone = server.connections[index]
                    .outgoing
                    .send(Outgoing::Frame(frame.clone()));
            }
        }
        Ok(message_id)
    }
}

#[derive(Clone, Copy)]
enum Target {
    One,
    All,
}

/// Upgrades one TCP connection (when its ticket is fresh) and serves it until it ends.
async fn serve_connection(server: Arc<Mutex<Server>>, stream: TcpStream) {
    let mut device_id = String::new();
    let checked = server.clone();
    // The signature (and so the size of the refusal) is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check_ticket = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let query: Vec<(String, String)> = request
            .uri()
            .query()
            .map(|query| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let value = |name: &str| {
            query
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut server = checked.lock().expect("fake feishu ws lock");
        let fresh = value("ticket").is_some_and(|ticket| server.tickets.remove(&ticket));
        if !fresh {
            server.refused_handshakes += 1;
            return Err(refusal());
        }
        device_id = value("device_id").unwrap_or_default();
        Ok(response)
    };
    let upgraded = tokio_tungstenite::accept_hdr_async(stream, check_ticket).await;
    let Ok(mut socket) = upgraded else {
        return;
    };
    let (outgoing, mut queued) = mpsc::unbounded_channel();
    let id = {
        let mut server = server.lock().expect("fake feishu ws lock");
        let id = server.connections.len() as u64;
        server.connections.push(Connection {
            info: FeishuWsConnection {
                id,
                device_id,
                open: true,
                closed_by_client: false,
                pings: 0,
            },
            outgoing,
        });
        id
    };
    let mut closed_by_client = false;
    loop {
        tokio::select! {
            next = queued.recv() => match next {
                Some(Outgoing::Frame(bytes)) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Drop) | None => break,
            },
            received = socket.next() => match received {
                Some(Ok(Message::Binary(bytes))) => {
                    let pong = receive(&server, id, &bytes);
                    if let Some(pong) = pong
                        && socket.send(Message::Binary(pong.into())).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    closed_by_client = true;
                    break;
                }
                Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let mut server = server.lock().expect("fake feishu ws lock");
    let info = &mut server.connections[id as usize].info;
    info.open = false;
    info.closed_by_client = closed_by_client;
}

/// A refused upgrade as Feishu answers one: retryable (514, not the connection limit).
fn refusal() -> ErrorResponse {
    let mut refusal = ErrorResponse::new(Some("ticket invalid".into()));
    *refusal.status_mut() = StatusCode::FORBIDDEN;
    let headers = refusal.headers_mut();
    headers.insert("Handshake-Status", "514".parse().expect("header value"));
    headers.insert(
        "Handshake-Msg",
        "ticket invalid".parse().expect("header value"),
    );
    headers.insert(
        "Handshake-Autherrcode",
        "1000040351".parse().expect("header value"),
    );
    refusal
}

/// Records what a client sent; returns the pong to answer a ping with.
fn receive(server: &Arc<Mutex<Server>>, connection: u64, bytes: &[u8]) -> Option<Vec<u8>> {
    let frame = Frame::decode(bytes).ok()?;
    let mut server = server.lock().expect("fake feishu ws lock");
    match (frame.method, frame.header("type")) {
        (0, Some("ping")) => {
            server.connections[connection as usize].info.pings += 1;
            let pong = Frame {
                seq_id: 0,
                log_id: 0,
                service: frame.service,
                method: 0,
                headers: vec![header("type", "pong")],
                payload_encoding: None,
                payload_type: None,
                payload: Some(server.client_config.to_string().into_bytes()),
                log_id_new: None,
            };
            Some(pong.encode_to_vec())
        }
        (1, _) => {
            let code = frame
                .payload
                .as_deref()
                .and_then(|payload| serde_json::from_slice::<Value>(payload).ok())
                .and_then(|payload| payload["code"].as_i64());
            server.acks.push(FeishuWsAck {
                connection,
                message_id: frame.header("message_id").unwrap_or_default().to_owned(),
                seq: frame.header("seq").unwrap_or_default().to_owned(),
                seq_id: frame.seq_id,
                code,
                biz_rt: frame.header("biz_rt").map(str::to_owned),
            });
            None
        }
        _ => None,
    }
}
