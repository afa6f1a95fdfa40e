//! A fake OpenAI-compatible provider: real HTTP, real SSE chunks, scriptable per test.
//!
//! It speaks both OpenAI chat completions (`/v1/chat/completions`) and Anthropic
//! Messages (`/v1/messages`), sharing one script queue. Without a script it echoes the
//! last user message (`echo: <text>`), streamed a word at
//! a time. Directives in the last user message choose other behaviour per request, so
//! concurrent tests and child processes can script it too:
//! `#fail=<status>`, `#overflow` (context window exceeded), `#hang` (never answers), `#stall` (one chunk, then silence),
//! `#drop` (one chunk, then the connection breaks), `#delay=<ms>`, `#tool` (call the `time`
//! tool once, then echo after its result), `#tool=<name>` with optional `#args=<json>`
//! (JSON without spaces: call that tool once, then answer `tool said: <its result>`),
//! `#system` (answer `system: <the first line of the system prompt>`). Each request's
//! credential (`Authorization`, or Anthropic's `x-api-key`) is recorded with it.

use std::collections::{HashMap, VecDeque};
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
    /// Stream optional text, then these tool calls (several = parallel calls).
    ToolCalls {
        text: String,
        calls: Vec<FakeToolCall>,
    },
    /// Answer with this HTTP status and a provider-style error body.
    Fail {
        status: u16,
        retry_after_secs: Option<u64>,
    },
    /// Answer 400 saying the prompt does not fit the context window.
    ContextOverflow,
    /// Accept the request and never answer.
    Hang,
    /// Stream this text as one chunk, then go silent.
    StallAfter(String),
    /// Stream this text as one chunk, then break the connection.
    DropAfter(String),
}

/// A tool call the fake model makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

impl FakeToolCall {
    pub fn new(id: &str, name: &str, arguments: serde_json::Value) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: arguments.to_string(),
        }
    }
}

#[derive(Default)]
pub(crate) struct FakeState {
    scripts: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<Value>>,
    /// The credential each request presented, in the order of `requests`.
    credentials: Mutex<Vec<Option<String>>>,
    latency_ms: AtomicU64,
    /// Pause between streamed chunks of chat-completion answers (0: none).
    chunk_gap_ms: AtomicU64,
    failing_models: Mutex<HashMap<String, u16>>,
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
            .route("/v1/messages", post(crate::fake_anthropic::messages))
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

    /// Pause between the streamed chunks (words, tool-call pieces) of every OpenAI-style
    /// answer, for a slow, typewriter-like stream.
    pub fn set_chunk_gap(&self, gap: Duration) {
        self.state.chunk_gap_ms.store(
            u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Every request for `model` fails with `status` until [`FakeProvider::heal_model`].
    pub fn fail_model(&self, model: &str, status: u16) {
        self.state
            .failing_models
            .lock()
            .expect("lock")
            .insert(model.to_owned(), status);
    }

    pub fn heal_model(&self, model: &str) {
        self.state
            .failing_models
            .lock()
            .expect("lock")
            .remove(model);
    }

    /// The `model` of every request received so far, in order.
    pub fn requested_models(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|request| request["model"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Each request's credential (`Authorization` or `x-api-key`) with its body, in order.
    pub fn requests_with_credentials(&self) -> Vec<(Option<String>, Value)> {
        let requests = self.state.requests.lock().expect("lock").clone();
        let credentials = self.state.credentials.lock().expect("lock").clone();
        credentials.into_iter().zip(requests).collect()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().expect("lock").len()
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl FakeState {
    /// Records the request and decides what it gets: the next queued script, else the
    /// directives in the last user message, else an echo. Waits out the latency first.
    pub(crate) async fn next_script(
        &self,
        headers: &axum::http::HeaderMap,
        request: &Value,
        last_user: &str,
    ) -> Script {
        {
            // One lock order for both lists, so their entries stay paired.
            let mut requests = self.requests.lock().expect("lock");
            let credential = headers
                .get(header::AUTHORIZATION)
                .or_else(|| headers.get("x-api-key"))
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            self.credentials.lock().expect("lock").push(credential);
            requests.push(request.clone());
        }
        let mut delay = Duration::from_millis(self.latency_ms.load(Ordering::SeqCst));
        let model = request["model"].as_str().unwrap_or_default();
        if let Some(status) = self.failing_models.lock().expect("lock").get(model) {
            return Script::Fail {
                status: *status,
                retry_after_secs: None,
            };
        }
        let queued = self.scripts.lock().expect("lock").pop_front();
        let script = queued.unwrap_or_else(|| {
            let (script, directive_delay) =
                script_from_directives(last_user, answers_a_tool_call(request));
            delay += directive_delay;
            match last_tool_result(request) {
                Some(result)
                    if last_user
                        .split_whitespace()
                        .any(|word| word.starts_with("#tool=")) =>
                {
                    Script::Reply(format!("tool said: {result}"))
                }
                _ if last_user.split_whitespace().any(|word| word == "#system") => {
                    Script::Reply(format!("system: {}", first_system_line(request)))
                }
                _ => script,
            }
        });
        tokio::time::sleep(delay).await;
        script
    }
}

/// Counts a request in flight until dropped.
pub(crate) struct InFlight(Arc<FakeState>);

impl InFlight {
    pub(crate) fn new(state: Arc<FakeState>) -> Self {
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
    headers: axum::http::HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let guard = InFlight::new(state.clone());
    let script = state
        .next_script(&headers, &request, &last_user_text(&request))
        .await;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let prompt_tokens = count_words_in_messages(&request);
    let gap = Duration::from_millis(state.chunk_gap_ms.load(Ordering::SeqCst));
    let paced = |body: BoxStream<'static, Result<Bytes, std::io::Error>>| {
        if gap.is_zero() {
            return body;
        }
        body.then(move |chunk| async move {
            tokio::time::sleep(gap).await;
            chunk
        })
        .boxed()
    };
    match script {
        Script::Fail {
            status,
            retry_after_secs,
        } => failure(
            status,
            retry_after_secs,
            "fake provider failure",
            "server_error",
        ),
        Script::ContextOverflow => failure(
            400,
            None,
            "This model's maximum context length is 8192 tokens",
            "context_length_exceeded",
        ),
        Script::Hang => {
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Script::Reply(text) => sse_response(paced(reply_stream(
            &model,
            &text,
            &[],
            prompt_tokens,
            guard,
        ))),
        Script::ToolCalls { text, calls } => sse_response(paced(reply_stream(
            &model,
            &text,
            &calls,
            prompt_tokens,
            guard,
        ))),
        Script::StallAfter(text) => {
            let first = stream::iter([Ok(chunk_bytes(&model, json!({"content": text}), None))]);
            sse_response(first.chain(stream::pending()).boxed())
        }
        Script::DropAfter(text) => {
            let first = stream::iter([Ok(chunk_bytes(&model, json!({"content": text}), None))]);
            let broken = stream::once(async {
                // Let the server write the first chunk before the connection breaks.
                tokio::task::yield_now().await;
                Err(std::io::Error::other("connection dropped by the fake"))
            });
            sse_response(first.chain(broken).boxed())
        }
    }
}

/// True when the conversation ends with a tool result (OpenAI `role: tool`, or an
/// Anthropic user turn of `tool_result` blocks): the model's next step is to answer.
fn answers_a_tool_call(request: &Value) -> bool {
    let Some(last) = request["messages"]
        .as_array()
        .and_then(|messages| messages.last())
    else {
        return false;
    };
    last["role"] == "tool"
        || last["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|block| block["type"] == "tool_result"))
}

/// The content of the tool result the conversation ends with (OpenAI `role: tool`, or
/// an Anthropic `tool_result` block).
fn last_tool_result(request: &Value) -> Option<String> {
    let last = request["messages"].as_array()?.last()?;
    if last["role"] == "tool" {
        return last["content"].as_str().map(str::to_owned);
    }
    let block = last["content"]
        .as_array()?
        .iter()
        .find(|block| block["type"] == "tool_result")?;
    match &block["content"] {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|part| part["text"].as_str())
                .collect(),
        ),
        _ => None,
    }
}

pub(crate) fn script_from_directives(text: &str, after_tool: bool) -> (Script, Duration) {
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
        } else if let Some(name) = word.strip_prefix("#tool=").filter(|_| !after_tool) {
            let arguments = text
                .split_whitespace()
                .find_map(|word| word.strip_prefix("#args="))
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_else(|| json!({}));
            script = Script::ToolCalls {
                text: String::new(),
                calls: vec![FakeToolCall::new("call_directed", name, arguments)],
            };
        } else if word == "#tool" && !after_tool {
            script = Script::ToolCalls {
                text: String::new(),
                calls: vec![FakeToolCall::new("call_time", "time", json!({}))],
            };
        } else if word == "#overflow" {
            script = Script::ContextOverflow;
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
    model: &str,
    text: &str,
    calls: &[FakeToolCall],
    prompt_tokens: usize,
    guard: InFlight,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let mut chunks: Vec<Bytes> = words
        .iter()
        .map(|word| chunk_bytes(model, json!({"content": word}), None))
        .collect();
    for (index, call) in calls.iter().enumerate() {
        // The name first, then the arguments in two pieces, as real providers stream them.
        let (head, tail) = call.arguments.split_at(call.arguments.len() / 2);
        let opening = json!({"tool_calls": [{"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]});
        chunks.push(chunk_bytes(model, opening, None));
        for piece in [head, tail] {
            chunks.push(chunk_bytes(
                model,
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    let finish_reason = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    chunks.push(chunk_bytes(model, json!({}), Some(finish_reason)));
    let completion_tokens = words.len() + calls.len() * 10;
    let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model, "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": 0}}});
    chunks.push(Bytes::from(format!("data: {usage}\n\n")));
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    stream::iter(chunks.into_iter().map(Ok))
        .chain(stream::once(async move {
            drop(guard);
            Ok(Bytes::new())
        }))
        .boxed()
}

fn chunk_bytes(model: &str, delta: Value, finish_reason: Option<&str>) -> Bytes {
    let chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
    Bytes::from(format!("data: {chunk}\n\n"))
}

pub(crate) fn sse_response(body: BoxStream<'static, Result<Bytes, std::io::Error>>) -> Response {
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// An error answer in the shape both OpenAI and Anthropic use:
/// `{"type":"error","error":{"type","code","message"}}`.
pub(crate) fn failure(
    status: u16,
    retry_after_secs: Option<u64>,
    message: &str,
    code: &str,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"message": format!("{message} ({})", status.as_u16()), "type": code, "code": code}});
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The first line of the request's system prompt (OpenAI's system message, or
/// Anthropic's `system`, text or blocks).
fn first_system_line(request: &Value) -> String {
    let openai = request["messages"].as_array().and_then(|messages| {
        messages
            .iter()
            .find(|message| message["role"] == "system")
            .and_then(|message| message["content"].as_str())
    });
    let anthropic = match &request["system"] {
        Value::String(text) => Some(text.as_str()),
        Value::Array(blocks) => blocks.first().and_then(|block| block["text"].as_str()),
        _ => None,
    };
    openai
        .or(anthropic)
        .and_then(|text| text.lines().next())
        .unwrap_or_default()
        .to_owned()
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

pub(crate) fn count_words_in_messages(request: &Value) -> usize {
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
