//! A fake OpenAI-compatible provider: real HTTP, real SSE chunks, scriptable per test.
//!
//! Without a script it echoes the last user message (`echo: <text>`), streamed a word at
//! a time. Directives in the last user message choose other behaviour per request, so
//! concurrent tests and child processes can script it too:
//! `#fail=<status>`, `#hang` (never answers), `#stall` (one chunk, then silence),
//! `#drop` (one chunk, then the connection breaks), `#delay=<ms>`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde_json::{Value, json};

/// What the next request gets, overriding the default echo.
#[derive(Debug, Clone)]
pub enum Script {
    /// Stream this text.
    Reply(String),
    /// Answer with this HTTP status and an OpenAI-style error body.
    Fail {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    /// Accept the request and never answer.
    Hang,
    /// Stream this text as one chunk, then go silent.
    StallAfter(String),
    /// Stream this text as one chunk, then break the connection.
    DropAfter(String),
}

#[derive(Default)]
struct FakeState {
    scripts: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<Value>>,
    latency_ms: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running fake provider.
#[derive(Clone)]
pub struct FakeProvider {
    /// Base URL including `/v1`, as `OPENAI_BASE_URL` expects.
    pub base_url: String,
    pub addr: SocketAddr,
    state: Arc<FakeState>,
}

impl FakeProvider {
    /// Serves on 127.0.0.1 on a port chosen by the OS.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?).await
    }

    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/chat/completions", post(chat_completions))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            addr,
            state,
        })
    }

    /// Queues a script for the next request that arrives.
    pub fn push(&self, script: Script) {
        self.state.scripts.lock().expect("lock").push_back(script);
    }

    /// Delay before the first chunk of every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().expect("lock").len()
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<FakeState>);

impl InFlight {
    fn new(state: Arc<FakeState>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat_completions(
    State(state): State<Arc<FakeState>>,
    Json(request): Json<Value>,
) -> Response {
    state.requests.lock().expect("lock").push(request.clone());
    let guard = InFlight::new(state.clone());
    let last_user = last_user_text(&request);
    let mut delay = Duration::from_millis(state.latency_ms.load(Ordering::SeqCst));
    let script = state
        .scripts
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or_else(|| {
            let (script, directive_delay) = script_from_directives(&last_user);
            delay += directive_delay;
            script
        });
    tokio::time::sleep(delay).await;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let prompt_tokens = count_words_in_messages(&request);
    let streaming = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match script {
        Script::Fail { status, retry_after_secs } => failure(status, retry_after_secs),
        Script::Hang => {
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Script::Reply(text) if !streaming => Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": text.split_whitespace().count()},
        }))
        .into_response(),
        Script::Reply(text) => sse_response(reply_stream(model, text, prompt_tokens, guard)),
        Script::StallAfter(text) => {
            let first = stream::iter([Ok(chunk_bytes(&model, Some(&text), None))]);
            sse_response(first.chain(stream::pending()).boxed())
        }
        Script::DropAfter(text) => {
            let first = stream::iter([Ok(chunk_bytes(&model, Some(&text), None))]);
            let broken = stream::once(async { Err(std::io::Error::other("connection dropped by the fake")) });
            sse_response(first.chain(broken).boxed())
        }
    }
}

fn script_from_directives(text: &str) -> (Script, Duration) {
    let mut delay = Duration::ZERO;
    let mut script = Script::Reply(format!("echo: {text}"));
    for word in text.split_whitespace() {
        if let Some(status) = word
            .strip_prefix("#fail=")
            .and_then(|value| value.parse().ok())
        {
            script = Script::Fail {
                status,
                retry_after_secs: None,
            };
        } else if word == "#hang" {
            script = Script::Hang;
        } else if word == "#stall" {
            script = Script::StallAfter("partial ".into());
        } else if word == "#drop" {
            script = Script::DropAfter("partial ".into());
        } else if let Some(ms) = word
            .strip_prefix("#delay=")
            .and_then(|value| value.parse().ok())
        {
            delay = Duration::from_millis(ms);
        }
    }
    (script, delay)
}

fn reply_stream(
    model: String,
    text: String,
    prompt_tokens: usize,
    guard: InFlight,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let completion_tokens = words.len();
    let mut chunks: Vec<Bytes> = words
        .iter()
        .map(|word| chunk_bytes(&model, Some(word), None))
        .collect();
    chunks.push(chunk_bytes(&model, None, Some("stop")));
    let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model, "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}});
    chunks.push(Bytes::from(format!("data: {usage}\n\n")));
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream::iter(chunks.into_iter().map(Ok))
        .chain(stream::once(async move {
            drop(guard);
            Ok(Bytes::new())
        }))
        .boxed()
}

fn chunk_bytes(model: &str, content: Option<&str>, finish_reason: Option<&str>) -> Bytes {
    let delta = content.map_or_else(|| json!({}), |content| json!({"content": content}));
    let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
    Bytes::from(format!("data: {chunk}\n\n"))
}

fn sse_response(body: BoxStream<'static, Result<Bytes, std::io::Error>>) -> Response {
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn failure(status: u16, retry_after_secs: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": format!("fake provider failure {}", status.as_u16()), "type": "fake_error", "code": null}});
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn last_user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|message| message["role"] == "user")
        })
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn count_words_in_messages(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| message["content"].as_str())
                .map(|text| text.split_whitespace().count())
                .sum()
        })
        .unwrap_or(0)
}
