//! LLM provider adapters: streaming chat completions normalised into one model, with
//! typed errors, retries, failover between model profiles, and per-call accounting.
//!
//! Owns every provider wire format (OpenAI-compatible chat completions, Anthropic
//! Messages); nothing provider-specific leaks out of this crate. Depends on `sable-core`
//! only. One pooled HTTP client per provider, never one per call.

mod anthropic;
mod catalog;
mod client;
mod echo;
mod error;
mod http;
mod model;
mod openai;
mod span;

pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use catalog::{
    CatalogError, CatalogSpec, ModelsFile, ProfileSpec, ProviderKind, ProviderSpec, ProvidersFile,
    RetrySpec,
};
pub use client::{CallAttempt, CallReport, ModelClient};
pub use echo::{ECHO_MODEL, EchoProvider};
pub use error::{ProviderError, ProviderErrorKind};
pub use http::ProviderTimeouts;
pub use model::{
    ChatMessage, ChatProvider, ChatRequest, Completion, DeltaSink, ProviderFuture, TokenUsage,
    ToolCall, ToolSpec,
};
pub use openai::{OpenAiConfig, OpenAiProvider};

/// Installs the process-wide rustls crypto provider (ring) if none is installed yet.
/// reqwest is built without one so that every TLS user in the process shares ring.
pub fn install_crypto_provider() {
    // An error means another provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
