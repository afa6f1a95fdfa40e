//! Lifecycle states of turns, deliveries and messages, with their stored text forms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stored status text that names no known state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{input}'")]
pub struct StatusParseError {
    pub kind: &'static str,
    pub input: String,
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StatusParseError;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                match input {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(StatusParseError { kind: $kind, input: input.to_owned() }),
                }
            }
        }
    };
}

text_enum!(
    /// Where a turn is in its life. `queued` and `running` are live; the rest are final.
    TurnStatus, "turn status" {
        Queued => "queued",
        Running => "running",
        WaitingApproval => "waiting_approval",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl TurnStatus {
    /// A final turn never changes again.
    pub const fn is_final(&self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

text_enum!(
    /// Where a reply is in the outbox.
    DeliveryStatus, "delivery status" {
        Pending => "pending",
        Delivered => "delivered",
        Failed => "failed",
    }
);

text_enum!(
    /// Who wrote a history entry. `error` entries are replies that report a failure to the
    /// user; they are shown in the history but never sent back to the model.
    MessageRole, "message role" {
        User => "user",
        Assistant => "assistant",
        Error => "error",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_text() {
        for status in [
            TurnStatus::Queued,
            TurnStatus::Running,
            TurnStatus::WaitingApproval,
            TurnStatus::Done,
            TurnStatus::Failed,
            TurnStatus::Cancelled,
        ] {
            assert_eq!(status.as_str().parse::<TurnStatus>(), Ok(status));
        }
    }

    #[test]
    fn only_done_failed_and_cancelled_are_final() {
        assert!(!TurnStatus::Queued.is_final());
        assert!(!TurnStatus::Running.is_final());
        assert!(TurnStatus::Done.is_final());
        assert!(TurnStatus::Failed.is_final());
    }

    #[test]
    fn unknown_status_text_is_an_error() {
        assert!("finished".parse::<TurnStatus>().is_err());
    }
}
