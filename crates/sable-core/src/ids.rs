//! UUID-backed identifiers, one newtype per kind of row so they cannot be mixed up.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An identifier that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid {kind} id")]
pub struct IdParseError {
    pub kind: &'static str,
    pub input: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7), so rows inserted together stay close in indexes.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(input).map(Self).map_err(|_| IdParseError {
                    kind: $kind,
                    input: input.chars().take(64).collect(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// An organisation: the unit of tenancy. Every row carries one.
    OrgId, "org"
);
uuid_id!(
    /// An API key's public id (the secret is never stored).
    ApiKeyId, "api key"
);
uuid_id!(
    /// A conversation with one agent; turns in it run one at a time.
    SessionId, "session"
);
uuid_id!(
    /// One inbound message and the agent's work to answer it.
    TurnId, "turn"
);
uuid_id!(
    /// One entry of a session's append-only history.
    MessageId, "message"
);
uuid_id!(
    /// One reply waiting in the outbox to be sent to its channel.
    DeliveryId, "delivery"
);
uuid_id!(
    /// A scheduled task of the cron service.
    CronTaskId, "cron task"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = TurnId::new();
        assert_eq!(id.to_string().parse::<TurnId>(), Ok(id));
    }

    #[test]
    fn a_malformed_id_names_its_kind_and_input() {
        let error = "not-a-uuid".parse::<SessionId>().unwrap_err();
        assert_eq!(error.to_string(), "'not-a-uuid' is not a valid session id");
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let first = MessageId::new();
        let second = MessageId::new();
        assert!(first < second);
    }
}
