//! The OpenAI-compatible `/chat/completions` adapter, streaming over SSE, with tool
//! calls (several per answer) and usage (`stream_options.include_usage`).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use sable_core::Secret;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{
    ProviderTimeouts, SseEvents, StreamingCall, build_client, send, stream_within_total,
};
use crate::model::{
    ChatMessage, ChatProvider, ChatRequest, Completion, DeltaSink, ProviderFuture, TokenUsage,
    ToolCall,
};
use crate::{ProviderError, ProviderErrorKind};

/// Where and how to reach an OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Extra headers sent with every request (e.g. an organisation id).
    pub headers: Vec<(String, String)>,
    pub timeouts: ProviderTimeouts,
}

/// An OpenAI-compatible provider with one pooled HTTP client.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    http: reqwest::Client,
    config: OpenAiConfig,
    endpoint: String,
}

#[derive(Deserialize)]
struct ChunkBody {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<UsageBody>,
    model: Option<String>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<DeltaBody>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaBody {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: usize,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct UsageBody {
    prompt_tokens: u64,
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

/// A completion being assembled from chunks.
#[derive(Default)]
struct Assembly {
    completion: Completion,
    tool_calls: BTreeMap<usize, ToolCall>,
    streamed_text: bool,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, ProviderError> {
        let http = build_client(&config.timeouts)?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
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
        let mut builder = self
            .http
            .post(&self.endpoint)
            .json(&request_body(model, request));
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
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
                    "stream ended without [DONE]",
                )
                .partial(assembly.streamed_text));
            };
            if event.data.trim() == "[DONE]" {
                return Ok(assembly.finish());
            }
            let chunk: ChunkBody = serde_json::from_str(&event.data).map_err(|error| {
                ProviderError::new(
                    ProviderErrorKind::Protocol,
                    format!("undecodable chunk: {error}"),
                )
                .partial(assembly.streamed_text)
            })?;
            assembly.apply(chunk, on_delta);
        }
    }
}

impl ChatProvider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        "openai"
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

impl StreamingCall for OpenAiProvider {
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
    fn apply(&mut self, chunk: ChunkBody, on_delta: DeltaSink<'_>) {
        if let Some(model) = chunk.model {
            self.completion.model.get_or_insert(model);
        }
        if let Some(usage) = chunk.usage {
            self.completion.usage = Some(TokenUsage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                cached_input_tokens: usage
                    .prompt_tokens_details
                    .and_then(|details| details.cached_tokens)
                    .unwrap_or(0),
            });
        }
        for choice in chunk.choices {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                    self.streamed_text = true;
                    on_delta(&text);
                    self.completion.text.push_str(&text);
                }
                for call in delta.tool_calls {
                    let entry = self
                        .tool_calls
                        .entry(call.index)
                        .or_insert_with(|| ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                    if let Some(id) = call.id {
                        entry.id = id;
                    }
                    if let Some(function) = call.function {
                        entry
                            .name
                            .push_str(function.name.as_deref().unwrap_or_default());
                        entry
                            .arguments
                            .push_str(function.arguments.as_deref().unwrap_or_default());
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.completion.finish_reason = Some(reason);
            }
        }
    }

    fn finish(mut self) -> Completion {
        self.completion.tool_calls = self.tool_calls.into_values().collect();
        self.completion
    }
}

fn request_body(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| json!({"type": "function", "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}))
            .collect();
        body["tools"] = json!(tools);
    }
    if let Some(max_tokens) = request.max_output_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

fn message_json(message: &ChatMessage) -> Value {
    match message {
        ChatMessage::System { content } => json!({"role": "system", "content": content}),
        ChatMessage::User { content } => json!({"role": "user", "content": content}),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } if tool_calls.is_empty() => json!({"role": "assistant", "content": content}),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            let calls: Vec<Value> = tool_calls
                .iter()
                .map(|call| json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
                .collect();
            let content = if content.is_empty() {
                Value::Null
            } else {
                json!(content)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        ChatMessage::Tool {
            tool_call_id,
            content,
            ..
        } => json!({"role": "tool", "tool_call_id": tool_call_id, "content": content}),
    }
}
