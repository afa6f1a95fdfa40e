//! The OpenAI-compatible `/chat/completions` adapter, streaming over SSE.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::StatusCode;
use sable_core::Secret;
use serde::Deserialize;
use serde_json::json;

use crate::{ChatRequest, Completion, ProviderError, ProviderErrorKind, TokenUsage};

/// Where and how to reach an OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub connect_timeout: Duration,
    /// Longest silence allowed between two chunks (and before the first).
    pub idle_timeout: Duration,
    /// Longest a whole call may take.
    pub total_timeout: Duration,
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
}

#[derive(Deserialize)]
struct UsageBody {
    prompt_tokens: u64,
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    code: Option<serde_json::Value>,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, ProviderError> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|error| {
                ProviderError::new(
                    ProviderErrorKind::Unreachable,
                    format!("HTTP client: {error}"),
                )
            })?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            http,
            config,
            endpoint,
        })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// Streams one completion, calling `on_delta` with each piece of text as it arrives.
    pub async fn stream_chat(
        &self,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        let mut streamed_any = false;
        let call = self.stream_chat_inner(request, on_delta, &mut streamed_any);
        match tokio::time::timeout(self.config.total_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError {
                partial_output: streamed_any,
                ..ProviderError::new(
                    ProviderErrorKind::Timeout,
                    format!("no complete answer within {:?}", self.config.total_timeout),
                )
            }),
        }
    }

    async fn stream_chat_inner(
        &self,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(&str) + Send),
        streamed_any: &mut bool,
    ) -> Result<Completion, ProviderError> {
        let response = self.send(request).await?;
        let mut events = response.bytes_stream().eventsource();
        let mut completion = Completion {
            text: String::new(),
            usage: None,
            finish_reason: None,
            model: None,
        };
        loop {
            let next = tokio::time::timeout(self.config.idle_timeout, events.next()).await;
            let event = match next {
                Err(_) => {
                    return Err(self.mid_stream_error(
                        ProviderErrorKind::Timeout,
                        "provider went silent mid-stream",
                        *streamed_any,
                    ));
                }
                Ok(None) => {
                    return Err(self.mid_stream_error(
                        ProviderErrorKind::Unreachable,
                        "stream ended without [DONE]",
                        *streamed_any,
                    ));
                }
                Ok(Some(Err(error))) => {
                    return Err(self.mid_stream_error(
                        ProviderErrorKind::Unreachable,
                        &format!("stream broke: {error}"),
                        *streamed_any,
                    ));
                }
                Ok(Some(Ok(event))) => event,
            };
            if event.data.trim() == "[DONE]" {
                return Ok(completion);
            }
            let chunk: ChunkBody = serde_json::from_str(&event.data).map_err(|error| {
                self.mid_stream_error(
                    ProviderErrorKind::Protocol,
                    &format!("undecodable chunk: {error}"),
                    *streamed_any,
                )
            })?;
            apply_chunk(&mut completion, chunk, on_delta, streamed_any);
        }
    }

    async fn send(&self, request: &ChatRequest) -> Result<reqwest::Response, ProviderError> {
        let mut body = json!({
            "model": self.config.model,
            "messages": request.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(max_tokens) = request.max_output_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = json!(temperature);
        }
        let mut builder = self.http.post(&self.endpoint).json(&body);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let sent = tokio::time::timeout(self.config.idle_timeout, builder.send()).await;
        let response = match sent {
            Err(_) => {
                return Err(ProviderError::new(
                    ProviderErrorKind::Timeout,
                    "no response headers in time",
                ));
            }
            Ok(Err(error)) if error.is_timeout() => {
                return Err(ProviderError::new(
                    ProviderErrorKind::Timeout,
                    "connect timed out",
                ));
            }
            Ok(Err(error)) => {
                return Err(ProviderError::new(
                    ProviderErrorKind::Unreachable,
                    format!("request failed: {}", error_chain(&error)),
                ));
            }
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_from_response(response).await)
    }

    fn mid_stream_error(
        &self,
        kind: ProviderErrorKind,
        message: &str,
        streamed_any: bool,
    ) -> ProviderError {
        ProviderError {
            partial_output: streamed_any,
            ..ProviderError::new(kind, message)
        }
    }
}

fn apply_chunk(
    completion: &mut Completion,
    chunk: ChunkBody,
    on_delta: &mut (dyn FnMut(&str) + Send),
    streamed_any: &mut bool,
) {
    if let Some(model) = chunk.model {
        completion.model.get_or_insert(model);
    }
    if let Some(usage) = chunk.usage {
        completion.usage = Some(TokenUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        });
    }
    for choice in chunk.choices {
        if let Some(text) = choice
            .delta
            .and_then(|delta| delta.content)
            .filter(|text| !text.is_empty())
        {
            *streamed_any = true;
            on_delta(&text);
            completion.text.push_str(&text);
        }
        if let Some(reason) = choice.finish_reason {
            completion.finish_reason = Some(reason);
        }
    }
}

/// Maps a non-2xx answer to a typed error. Only the provider's own error message is
/// kept (it names the problem, not the prompt).
async fn error_from_response(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    let detail: Option<ErrorBody> = serde_json::from_str::<ErrorEnvelope>(&body)
        .ok()
        .map(|envelope| envelope.error);
    let provider_message = detail
        .as_ref()
        .and_then(|detail| detail.message.clone())
        .unwrap_or_default();
    let overflow = detail
        .as_ref()
        .and_then(|detail| detail.code.as_ref())
        .is_some_and(|code| code.as_str() == Some("context_length_exceeded"));
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderErrorKind::RateLimited,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderErrorKind::Auth,
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE if overflow => {
            ProviderErrorKind::ContextOverflow
        }
        status if status.is_server_error() => ProviderErrorKind::Server,
        _ => ProviderErrorKind::InvalidRequest,
    };
    let message: String = format!(
        "provider answered HTTP {}: {provider_message}",
        status.as_u16()
    )
    .chars()
    .take(500)
    .collect();
    ProviderError {
        retry_after,
        ..ProviderError::new(kind, message.trim_end_matches(": ").to_owned())
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
