//! The Anthropic Messages adapter (`POST /v1/messages`), streaming over SSE, with tool
//! calls as `tool_use` blocks (several per answer) and usage including prompt-cache reads.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use eventsource_stream::Event;
use sable_core::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::http::{
    ProviderTimeouts, SseEvents, StreamingCall, build_client, send, stream_within_total,
};
use crate::model::{
    ChatMessage, ChatProvider, ChatRequest, Completion, DeltaSink, ProviderFuture, TokenUsage,
    ToolCall,
};
use crate::{ProviderError, ProviderErrorKind};

/// The API version this adapter speaks.
const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; used when the request sets no limit.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Where and how to reach an Anthropic-compatible provider.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Without the version, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Extra headers sent with every request (e.g. `anthropic-beta`).
    pub headers: Vec<(String, String)>,
    pub timeouts: ProviderTimeouts,
}

/// An Anthropic provider with one pooled HTTP client.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    http: reqwest::Client,
    config: AnthropicConfig,
    endpoint: String,
}

#[derive(Deserialize)]
struct MessageStartEvent {
    message: MessageStartBody,
}

#[derive(Deserialize)]
struct MessageStartBody {
    model: Option<String>,
    usage: Option<UsageBody>,
}

/// Usage as Anthropic reports it. `message_start` carries the input side and
/// `message_delta` the (cumulative) output side, so each field present replaces the last.
#[derive(Deserialize, Default)]
struct UsageBody {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct BlockStartEvent {
    index: usize,
    content_block: BlockStart,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockStart {
    ToolUse {
        id: String,
        name: String,
    },
    /// Text (its first piece arrives as a delta) and kinds this adapter does not use.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct BlockDeltaEvent {
    index: usize,
    delta: BlockDelta,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking, signatures and whatever comes later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaEvent {
    delta: MessageDeltaBody,
    usage: Option<UsageBody>,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorEventBody,
}

#[derive(Deserialize)]
struct ErrorEventBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// A completion being assembled from events.
#[derive(Default)]
struct Assembly {
    completion: Completion,
    /// `tool_use` blocks by block index, so calls keep the order the model wrote them in.
    tool_calls: BTreeMap<usize, ToolCall>,
    usage: Option<UsageBody>,
    streamed_text: bool,
}

/// Whether the stream goes on after an event.
enum Progress {
    More,
    Finished,
}

impl AnthropicProvider {
    pub fn new(config: AnthropicConfig) -> Result<Self, ProviderError> {
        let http = build_client(&config.timeouts)?;
        let endpoint = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
        Ok(Self {
            http,
            config,
            endpoint,
        })
    }

    async fn call_once(
        &self,
        model: &str,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<Completion, ProviderError> {
        // `json` also sets `content-type: application/json`.
        let mut builder = self
            .http
            .post(&self.endpoint)
            .header("anthropic-version", API_VERSION)
            .json(&request_body(model, request));
        if let Some(key) = &self.config.api_key {
            builder = builder.header("x-api-key", key.expose());
        }
        for (name, value) in &self.config.headers {
            builder = builder.header(name, value);
        }
        let response = send(builder, &self.config.timeouts).await?;
        let mut events = SseEvents::new(response, self.config.timeouts);
        let mut assembly = Assembly::default();
        loop {
            let Some(event) = events.next(assembly.streamed_text).await? else {
                return Err(ProviderError::new(
                    ProviderErrorKind::Unreachable,
                    "stream ended without message_stop",
                )
                .partial(assembly.streamed_text));
            };
            if let Progress::Finished = assembly.apply(&event, on_delta)? {
                return Ok(assembly.finish());
            }
        }
    }
}

impl ChatProvider for AnthropicProvider {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn stream_chat<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> ProviderFuture<'a> {
        stream_within_total(self, model, request, on_delta)
    }
}

impl StreamingCall for AnthropicProvider {
    fn total_timeout(&self) -> Duration {
        self.config.timeouts.total
    }

    fn call<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> impl Future<Output = Result<Completion, ProviderError>> + Send + 'a {
        self.call_once(model, request, on_delta)
    }
}

impl Assembly {
    /// Applies one streaming event; unknown events are skipped, as Anthropic asks.
    fn apply(&mut self, event: &Event, on_delta: DeltaSink<'_>) -> Result<Progress, ProviderError> {
        match event.event.as_str() {
            "message_start" => self.start_message(self.decode(&event.data)?),
            "content_block_start" => self.start_block(self.decode(&event.data)?),
            "content_block_delta" => self.apply_block_delta(self.decode(&event.data)?, on_delta),
            "message_delta" => self.apply_message_delta(self.decode(&event.data)?),
            "message_stop" => return Ok(Progress::Finished),
            "error" => return Err(self.stream_error(self.decode(&event.data)?)),
            _ => {}
        }
        Ok(Progress::More)
    }

    fn decode<T: DeserializeOwned>(&self, data: &str) -> Result<T, ProviderError> {
        serde_json::from_str(data).map_err(|error| {
            ProviderError::new(
                ProviderErrorKind::Protocol,
                format!("undecodable event: {error}"),
            )
            .partial(self.streamed_text)
        })
    }

    fn start_message(&mut self, event: MessageStartEvent) {
        if let Some(model) = event.message.model {
            self.completion.model.get_or_insert(model);
        }
        if let Some(usage) = event.message.usage {
            self.merge_usage(usage);
        }
    }

    fn start_block(&mut self, event: BlockStartEvent) {
        if let BlockStart::ToolUse { id, name } = event.content_block {
            self.tool_calls.insert(
                event.index,
                ToolCall {
                    id,
                    name,
                    arguments: String::new(),
                },
            );
        }
    }

    fn apply_block_delta(&mut self, event: BlockDeltaEvent, on_delta: DeltaSink<'_>) {
        match event.delta {
            BlockDelta::TextDelta { text } if !text.is_empty() => {
                self.streamed_text = true;
                on_delta(&text);
                self.completion.text.push_str(&text);
            }
            BlockDelta::InputJsonDelta { partial_json } => {
                if let Some(call) = self.tool_calls.get_mut(&event.index) {
                    call.arguments.push_str(&partial_json);
                }
            }
            BlockDelta::TextDelta { .. } | BlockDelta::Other => {}
        }
    }

    fn apply_message_delta(&mut self, event: MessageDeltaEvent) {
        if let Some(reason) = event.delta.stop_reason {
            self.completion.finish_reason = Some(normalise_stop_reason(reason));
        }
        if let Some(usage) = event.usage {
            self.merge_usage(usage);
        }
    }

    fn merge_usage(&mut self, update: UsageBody) {
        let usage = self.usage.get_or_insert_with(UsageBody::default);
        usage.input_tokens = update.input_tokens.or(usage.input_tokens);
        usage.output_tokens = update.output_tokens.or(usage.output_tokens);
        usage.cache_read_input_tokens = update
            .cache_read_input_tokens
            .or(usage.cache_read_input_tokens);
        usage.cache_creation_input_tokens = update
            .cache_creation_input_tokens
            .or(usage.cache_creation_input_tokens);
    }

    fn stream_error(&self, event: ErrorEvent) -> ProviderError {
        let kind = match event.error.kind.as_deref().unwrap_or_default() {
            "rate_limit_error" => ProviderErrorKind::RateLimited,
            "authentication_error" | "permission_error" => ProviderErrorKind::Auth,
            "invalid_request_error" => ProviderErrorKind::InvalidRequest,
            _ => ProviderErrorKind::Server,
        };
        let message: String = event
            .error
            .message
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect();
        ProviderError::new(kind, format!("provider failed mid-stream: {message}"))
            .partial(self.streamed_text)
    }

    fn finish(mut self) -> Completion {
        self.completion.usage = self.usage.map(token_usage);
        self.completion.tool_calls = self
            .tool_calls
            .into_values()
            .map(|mut call| {
                // A tool without parameters streams no input at all.
                if call.arguments.trim().is_empty() {
                    call.arguments = "{}".to_owned();
                }
                call
            })
            .collect();
        self.completion
    }
}

/// Anthropic's `input_tokens` leaves out cache reads and writes; ours counts every
/// input token, with the cache reads also reported on their own.
fn token_usage(usage: UsageBody) -> TokenUsage {
    let cached = usage.cache_read_input_tokens.unwrap_or(0);
    TokenUsage {
        input_tokens: usage.input_tokens.unwrap_or(0)
            + cached
            + usage.cache_creation_input_tokens.unwrap_or(0),
        output_tokens: usage.output_tokens.unwrap_or(0),
        cached_input_tokens: cached,
    }
}

fn normalise_stop_reason(reason: String) -> String {
    match reason.as_str() {
        "end_turn" | "stop_sequence" => "stop".to_owned(),
        "max_tokens" => "length".to_owned(),
        "tool_use" => "tool_calls".to_owned(),
        _ => reason,
    }
}

fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "stream": true,
        "messages": messages_json(&request.messages),
    });
    if let Some(system) = system_prompt(&request.messages) {
        body["system"] = json!(system);
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters}))
            .collect();
        body["tools"] = json!(tools);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

/// Anthropic takes the system prompt apart from the conversation.
fn system_prompt(messages: &[ChatMessage]) -> Option<String> {
    let parts: Vec<&str> = messages
        .iter()
        .filter_map(|message| match message {
            ChatMessage::System { content } if !content.is_empty() => Some(content.as_str()),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// The conversation as `user`/`assistant` messages of content blocks. Consecutive tool
/// results become one user message, since Anthropic wants every result of one turn's
/// calls in the message right after it.
fn messages_json(messages: &[ChatMessage]) -> Vec<Value> {
    let mut wire: Vec<Value> = Vec::new();
    let mut previous_was_tool = false;
    for message in messages {
        let is_tool = matches!(message, ChatMessage::Tool { .. });
        let blocks = content_blocks(message);
        if is_tool && previous_was_tool {
            if let Some(Value::Array(content)) = wire.last_mut().map(|last| &mut last["content"]) {
                content.extend(blocks);
            }
        } else if !blocks.is_empty() {
            // Anthropic refuses empty content, so a message with nothing to say is left out.
            let role = if matches!(message, ChatMessage::Assistant { .. }) {
                "assistant"
            } else {
                "user"
            };
            wire.push(json!({"role": role, "content": blocks}));
        }
        previous_was_tool = is_tool;
    }
    wire
}

fn content_blocks(message: &ChatMessage) -> Vec<Value> {
    match message {
        ChatMessage::System { .. } => Vec::new(),
        ChatMessage::User { content } => text_block(content).into_iter().collect(),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => text_block(content)
            .into_iter()
            .chain(tool_calls.iter().map(tool_use_block))
            .collect(),
        ChatMessage::Tool {
            tool_call_id,
            content,
            is_error,
        } => {
            vec![
                json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content, "is_error": is_error}),
            ]
        }
    }
}

/// A text block, or none for empty text (which Anthropic refuses).
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Anthropic wants the input as a JSON object; arguments that are not one become `{}`.
fn tool_use_block(call: &ToolCall) -> Value {
    let input = serde_json::from_str::<Value>(&call.arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: Value) -> Event {
        Event {
            event: name.to_owned(),
            data: data.to_string(),
            id: String::new(),
            retry: None,
        }
    }

    fn apply_all(events: &[Event]) -> Result<Completion, ProviderError> {
        let mut assembly = Assembly::default();
        let mut ignore = |_: &str| {};
        for event in events {
            if let Progress::Finished = assembly.apply(event, &mut ignore)? {
                return Ok(assembly.finish());
            }
        }
        Err(ProviderError::new(
            ProviderErrorKind::Unreachable,
            "no message_stop",
        ))
    }

    #[test]
    fn cache_reads_and_writes_count_as_input_and_reads_also_as_cached() -> Result<(), ProviderError>
    {
        let usage = json!({"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5});
        let completion = apply_all(&[
            event(
                "message_start",
                json!({"type": "message_start", "message": {"model": "claude", "usage": usage}}),
            ),
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ])?;
        assert_eq!(
            completion.usage,
            Some(TokenUsage {
                input_tokens: 115,
                output_tokens: 7,
                cached_input_tokens: 100
            })
        );
        assert_eq!(completion.finish_reason.as_deref(), Some("length"));
        Ok(())
    }

    #[test]
    fn an_overloaded_error_event_after_text_is_a_server_error_with_partial_output() {
        let result = apply_all(&[
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ]);
        let error = result.expect_err("the error event fails the call");
        assert_eq!(error.kind, ProviderErrorKind::Server);
        assert!(error.partial_output);
    }

    #[test]
    fn a_tool_without_input_gets_an_empty_object_as_arguments() -> Result<(), ProviderError> {
        let block = json!({"type": "tool_use", "id": "toolu_1", "name": "time", "input": {}});
        let completion = apply_all(&[
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": block}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ])?;
        assert_eq!(
            completion.tool_calls,
            vec![ToolCall {
                id: "toolu_1".into(),
                name: "time".into(),
                arguments: "{}".into()
            }]
        );
        Ok(())
    }

    #[test]
    fn the_system_prompt_goes_top_level_and_unparsable_arguments_become_an_empty_input() {
        let call = ToolCall {
            id: "toolu_1".into(),
            name: "time".into(),
            arguments: "not json".into(),
        };
        let request = ChatRequest {
            messages: vec![
                ChatMessage::system("Be brief."),
                ChatMessage::user("time?"),
                ChatMessage::Assistant {
                    content: String::new(),
                    tool_calls: vec![call],
                },
                ChatMessage::Tool {
                    tool_call_id: "toolu_1".into(),
                    content: "12:00".into(),
                    is_error: false,
                },
            ],
            ..ChatRequest::default()
        };
        let body = request_body("claude", &request);
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "tool_use", "id": "toolu_1", "name": "time", "input": {}}])
        );
        assert_eq!(body["messages"][2]["content"][0]["type"], "tool_result");
    }
}
