//! Typed provider errors: the kind decides what the caller does next.

use std::time::Duration;

/// What kind of failure a provider call met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// 429: slow down, maybe after `retry_after`.
    RateLimited,
    /// 401/403: the key is wrong; retrying cannot help.
    Auth,
    /// 5xx or overloaded.
    Server,
    /// No answer in time (connect, first byte, between chunks or in total).
    Timeout,
    /// The prompt does not fit the model's window.
    ContextOverflow,
    /// The provider refused the request as malformed.
    InvalidRequest,
    /// The provider could not be reached, or the connection broke.
    Unreachable,
    /// The provider answered something that is not the protocol.
    Protocol,
}

impl ProviderErrorKind {
    /// The stable error code recorded on a failed turn.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::RateLimited => "provider_rate_limited",
            Self::Auth => "provider_auth",
            Self::Server => "provider_server_error",
            Self::Timeout => "provider_timeout",
            Self::ContextOverflow => "provider_context_overflow",
            Self::InvalidRequest => "provider_invalid_request",
            Self::Unreachable => "provider_unreachable",
            Self::Protocol => "provider_protocol_error",
        }
    }
}

/// A failed provider call. The message never contains prompt or completion text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Whether some text was already streamed to the user before the failure.
    pub partial_output: bool,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            partial_output: false,
        }
    }

    /// Marks whether text had already reached the user when this happened.
    pub fn partial(mut self, partial_output: bool) -> Self {
        self.partial_output = partial_output;
        self
    }

    pub fn code(&self) -> &'static str {
        if self.partial_output {
            return "provider_partial_output";
        }
        self.kind.code()
    }
}
