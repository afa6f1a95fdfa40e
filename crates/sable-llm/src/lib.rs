//! LLM provider adapters: streaming chat completions normalised into one model.
//!
//! Owns every provider wire format; nothing provider-specific leaks out of this crate.
//! Depends on `sable-core` only. One HTTP client per provider, pooled and reused.

mod error;
mod openai;

use serde::Serialize;

pub use error::{ProviderError, ProviderErrorKind};
pub use openai::{OpenAiConfig, OpenAiProvider};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// A request for one completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// Tokens one call consumed, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub usage: Option<TokenUsage>,
    pub finish_reason: Option<String>,
    pub model: Option<String>,
}

/// Installs the process-wide rustls crypto provider (ring) if none is installed yet.
/// reqwest is built without one so that every TLS user in the process shares ring.
pub fn install_crypto_provider() {
    // An error means another provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
