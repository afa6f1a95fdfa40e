//! The fake's Anthropic Messages endpoint (`POST /v1/messages`, streaming events).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde_json::{Value, json};

use crate::fake_provider::{FakeState, FakeToolCall, InFlight, Script, failure, sse_response};

/// How a scripted stream ends once its events are sent.
enum Ending {
    /// The stream closes normally.
    Complete,
    /// The connection stays open and nothing more comes.
    Silence,
    /// The connection breaks.
    Break,
}

pub(crate) async fn messages(
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
    let input_tokens = count_words(&request);
    match script {
        Script::Fail {
            status,
            retry_after_secs,
        } => failure(
            status,
            retry_after_secs,
            "fake provider failure",
            error_type(status),
        ),
        Script::ContextOverflow => failure(
            400,
            None,
            "prompt is too long: 250000 tokens > 200000 maximum",
            "invalid_request_error",
        ),
        Script::Hang => {
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Script::Reply(text) => sse_response(reply_stream(&model, &text, &[], input_tokens, guard)),
        Script::ToolCalls { text, calls } => {
            sse_response(reply_stream(&model, &text, &calls, input_tokens, guard))
        }
        Script::StallAfter(text) => sse_response(event_stream(
            partial_events(&model, &text, input_tokens),
            Ending::Silence,
            guard,
        )),
        Script::DropAfter(text) => sse_response(event_stream(
            partial_events(&model, &text, input_tokens),
            Ending::Break,
            guard,
        )),
    }
}

/// A whole answer: optional text streamed a word at a time, then each tool call as a
/// `tool_use` block whose input arrives in two pieces, as the real API streams it.
fn reply_stream(
    model: &str,
    text: &str,
    calls: &[FakeToolCall],
    input_tokens: usize,
    guard: InFlight,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let mut events = opening_events(model, input_tokens);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if !words.is_empty() {
        events.extend(text_block_events(0, &words));
    }
    let first_tool_index = usize::from(!words.is_empty());
    for (offset, call) in calls.iter().enumerate() {
        events.extend(tool_use_block_events(first_tool_index + offset, call));
    }
    let stop_reason = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let output_tokens = words.len() + calls.len() * 10;
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    event_stream(events, Ending::Complete, guard)
}

/// The start of an answer and one text delta, for scripts that fail mid-stream.
fn partial_events(model: &str, text: &str, input_tokens: usize) -> Vec<Bytes> {
    let mut events = opening_events(model, input_tokens);
    events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    events.push(text_delta(0, text));
    events
}

fn opening_events(model: &str, input_tokens: usize) -> Vec<Bytes> {
    let message = json!({"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model,
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}});
    vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": message}),
        ),
        event("ping", json!({"type": "ping"})),
    ]
}

fn text_block_events(index: usize, words: &[&str]) -> Vec<Bytes> {
    let mut events = vec![event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    )];
    events.extend(words.iter().map(|word| text_delta(index, word)));
    events.push(block_stop(index));
    events
}

fn tool_use_block_events(index: usize, call: &FakeToolCall) -> Vec<Bytes> {
    let block = json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}});
    let mut events = vec![event(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )];
    let split = call
        .arguments
        .char_indices()
        .nth(call.arguments.chars().count() / 2)
        .map_or(call.arguments.len(), |(at, _)| at);
    let (head, tail) = call.arguments.split_at(split);
    for piece in [head, tail] {
        let delta = json!({"type": "input_json_delta", "partial_json": piece});
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
    }
    events.push(block_stop(index));
    events
}

fn text_delta(index: usize, text: &str) -> Bytes {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
    )
}

fn block_stop(index: usize) -> Bytes {
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The events, then the ending. The guard travels with the stream, so the request counts
/// as in flight until the stream ends or the client hangs up.
fn event_stream(
    events: Vec<Bytes>,
    ending: Ending,
    guard: InFlight,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let tail = match ending {
        Ending::Complete => stream::empty().boxed(),
        Ending::Silence => stream::pending().boxed(),
        Ending::Break => stream::once(async {
            // A turn of the runtime first lets the server flush what came before; an
            // error polled straight after would discard it with the connection.
            tokio::task::yield_now().await;
            Err(std::io::Error::other("connection dropped by the fake"))
        })
        .boxed(),
    };
    let release = stream::once(async move {
        drop(guard);
        Ok(Bytes::new())
    });
    stream::iter(events.into_iter().map(Ok))
        .chain(tail)
        .chain(release)
        .boxed()
}

/// The error `type` Anthropic uses for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The text blocks of the last user message that has any text (tool results alone do not
/// count), where the directives live.
fn last_user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .filter(|message| message["role"] == "user")
        .map(|message| text_of(&message["content"]))
        .find(|text| !text.is_empty())
        .unwrap_or_default()
}

/// Content is either a string or an array of blocks; this joins the text blocks.
fn text_of(content: &Value) -> String {
    if let Some(text) = content.as_str() {
        return text.to_owned();
    }
    let texts: Vec<&str> = content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|block| block["type"] == "text")
        .filter_map(|block| block["text"].as_str())
        .collect();
    texts.join(" ")
}

/// Input tokens, counted as words: the top-level system prompt, message text and tool
/// results.
fn count_words(request: &Value) -> usize {
    let messages = request["messages"].as_array().into_iter().flatten();
    words_in(&request["system"])
        + messages
            .map(|message| words_in(&message["content"]))
            .sum::<usize>()
}

fn words_in(content: &Value) -> usize {
    let tool_results: usize = content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|block| block["type"] == "tool_result")
        .map(|block| words_in(&block["content"]))
        .sum();
    text_of(content).split_whitespace().count() + tool_results
}
