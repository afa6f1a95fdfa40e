//! Validated user inputs: each is parsed once at the edge and trusted afterwards.

use std::fmt;

use serde::Serialize;

/// Why an input was refused. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InputError {
    pub field: &'static str,
    pub reason: String,
}

impl InputError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Up to this many bytes of message text are accepted.
pub const MAX_MESSAGE_TEXT_BYTES: usize = 200 * 1024;

/// The text of an inbound message: not blank, not oversized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(text: String) -> Result<Self, InputError> {
        if text.trim().is_empty() {
            return Err(InputError::new("text", "must not be empty"));
        }
        if text.contains('\0') {
            return Err(InputError::new("text", "must not contain NUL characters"));
        }
        if text.len() > MAX_MESSAGE_TEXT_BYTES {
            return Err(InputError::new(
                "text",
                format!("must be at most {MAX_MESSAGE_TEXT_BYTES} bytes"),
            ));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Declares a short, printable key: 1..=max bytes, no control characters.
macro_rules! bounded_key {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: String) -> Result<Self, InputError> {
                if value.is_empty() || value.len() > $max {
                    return Err(InputError::new($field, format!("must be 1 to {} bytes", $max)));
                }
                if value.chars().any(char::is_control) {
                    return Err(InputError::new($field, "must not contain control characters"));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_key!(
    /// A client's key that makes a retried request return the original turn.
    IdempotencyKey, "idempotency_key", 200
);
bounded_key!(
    /// A channel's own name for a conversation (a Feishu chat id, a client's thread id…).
    ConversationKey, "conversation.id", 200
);

/// An agent's id: the name of its folder under `agents/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    pub fn parse(value: impl Into<String>) -> Result<Self, InputError> {
        let value = value.into();
        let well_formed = !value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_".contains(&byte)
            });
        if well_formed {
            Ok(Self(value))
        } else {
            Err(InputError::new(
                "agent",
                "must be 1 to 64 characters of a-z, 0-9, '-' and '_'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a message came from and where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The HTTP API: replies are read by the caller (wait, SSE or polling).
    Api,
    /// Messages posted through the HTTP API whose replies are pushed (POSTed) to the
    /// gateway's configured webhook URL, with the delivery id as `Idempotency-Key`.
    Webhook,
    /// Feishu / Lark chats: messages arrive as the app's events, replies go back through
    /// the open platform's reply API.
    Feishu,
}

impl Channel {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Webhook => "webhook",
            Self::Feishu => "feishu",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "api" => Some(Self::Api),
            "webhook" => Some(Self::Webhook),
            "feishu" => Some(Self::Feishu),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_text_is_refused() {
        assert_eq!(MessageText::parse("  \n".into()).unwrap_err().field, "text");
    }

    #[test]
    fn text_with_nul_is_refused() {
        assert!(MessageText::parse("a\0b".into()).is_err());
    }

    #[test]
    fn oversized_text_is_refused() {
        let text = "x".repeat(MAX_MESSAGE_TEXT_BYTES + 1);
        assert!(MessageText::parse(text).is_err());
    }

    #[test]
    fn keys_refuse_empty_long_and_control_characters() {
        assert!(IdempotencyKey::parse(String::new()).is_err());
        assert!(IdempotencyKey::parse("k".repeat(201)).is_err());
        assert!(IdempotencyKey::parse("a\u{0}b".into()).is_err());
        assert!(IdempotencyKey::parse("order-42".into()).is_ok());
    }

    #[test]
    fn channels_round_trip_through_their_names() {
        for channel in [Channel::Api, Channel::Webhook, Channel::Feishu] {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
        assert_eq!(Channel::parse("slack"), None);
    }

    #[test]
    fn agent_ids_are_folder_safe() {
        assert!(AgentId::parse("default").is_ok());
        assert!(AgentId::parse("support-bot_2").is_ok());
        assert!(AgentId::parse("../etc").is_err());
        assert!(AgentId::parse("Upper").is_err());
        assert!(AgentId::parse("").is_err());
    }
}
