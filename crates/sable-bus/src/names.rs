//! Stream, consumer and subject names, all derived from one prefix.

use std::fmt;

use sable_core::{OrgId, SessionId};

/// A prefix that is not a single lowercase NATS token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NATS prefix '{0}' must be 1 to 32 characters of a-z, 0-9, '-' and '_'")]
pub struct InvalidPrefix(pub String);

/// Every name on the bus. With prefix `sable`: streams `SABLE_TURNS` and
/// `SABLE_DELIVERIES`, subjects `sable.turns.<org>`, `sable.deliveries.<channel>` and
/// `sable.events.<org>.<session>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusNames {
    prefix: String,
}

impl BusNames {
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"-_".contains(&byte)
            });
        if valid {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(InvalidPrefix(prefix.to_owned()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream_name(&self, suffix: &str) -> String {
        format!(
            "{}_{suffix}",
            self.prefix.to_ascii_uppercase().replace('-', "_")
        )
    }

    pub fn turns_stream(&self) -> String {
        self.stream_name("TURNS")
    }

    pub fn deliveries_stream(&self) -> String {
        self.stream_name("DELIVERIES")
    }

    pub fn turns_subject(&self, org_id: &impl fmt::Display) -> String {
        format!("{}.turns.{org_id}", self.prefix)
    }

    pub fn turns_wildcard(&self) -> String {
        format!("{}.turns.>", self.prefix)
    }

    pub fn deliveries_subject(&self, channel: &str) -> String {
        format!("{}.deliveries.{channel}", self.prefix)
    }

    pub fn deliveries_wildcard(&self) -> String {
        format!("{}.deliveries.>", self.prefix)
    }

    pub fn events_subject(&self, org_id: OrgId, session_id: SessionId) -> String {
        format!("{}.events.{org_id}.{session_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_prefix_gives_the_documented_names() {
        let names = BusNames::new("sable").unwrap();
        assert_eq!(names.turns_stream(), "SABLE_TURNS");
        assert_eq!(names.deliveries_stream(), "SABLE_DELIVERIES");
        assert_eq!(names.turns_subject(&"o1"), "sable.turns.o1");
        assert_eq!(names.deliveries_subject("api"), "sable.deliveries.api");
    }

    #[test]
    fn a_test_prefix_isolates_streams_and_subjects() {
        let names = BusNames::new("t-42").unwrap();
        assert_eq!(names.turns_stream(), "T_42_TURNS");
        assert_eq!(names.turns_wildcard(), "t-42.turns.>");
    }

    #[test]
    fn prefixes_that_would_break_subjects_are_refused() {
        for bad in ["", "a.b", "has space", "UPPER", "x>"] {
            assert!(BusNames::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
