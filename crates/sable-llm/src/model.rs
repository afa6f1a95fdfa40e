//! The provider-neutral conversation and completion model every adapter maps to.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use crate::ProviderError;

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: String,
    },
    /// What the model said before: text, tool calls, or both.
    Assistant {
        content: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, answering the call with `tool_call_id`.
    Tool {
        tool_call_id: String,
        content: String,
        is_error: bool,
    },
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self::System {
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::User {
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::Assistant {
            content: content.into(),
            tool_calls: Vec::new(),
        }
    }

    /// The text of the message (for tool results, the result).
    pub fn text(&self) -> &str {
        match self {
            Self::System { content }
            | Self::User { content }
            | Self::Assistant { content, .. }
            | Self::Tool { content, .. } => content,
        }
    }
}

/// A call the model asked for. `arguments` is the JSON text the model produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A tool the model may call, with the JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A request for one completion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// Tokens one call consumed, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a subset of `input_tokens`).
    pub cached_input_tokens: u64,
}

impl TokenUsage {
    pub fn add(&mut self, other: TokenUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
    }
}

/// A finished completion: text, tool calls (possibly several, to run in parallel), usage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<TokenUsage>,
    /// Normalised: `stop`, `length`, `tool_calls`, or the provider's own word.
    pub finish_reason: Option<String>,
    pub model: Option<String>,
}

/// Called with each piece of text as it streams in.
pub type DeltaSink<'a> = &'a mut (dyn FnMut(&str) + Send);

/// A boxed future, so adapters can live behind `dyn ChatProvider`.
pub type ProviderFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Completion, ProviderError>> + Send + 'a>>;

/// One provider protocol. Implementations own one pooled HTTP client each.
pub trait ChatProvider: Send + Sync + std::fmt::Debug {
    /// The protocol, e.g. `openai` or `anthropic` (recorded with each call).
    fn kind(&self) -> &'static str;

    /// Streams one completion from `model`, calling `on_delta` with text as it arrives.
    fn stream_chat<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> ProviderFuture<'a>;
}
