//! What an API key may do: one role per key, ordered from least to most.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StatusParseError;

/// A key's role. Each role may do everything the roles before it may:
///
/// - `viewer`: read the org's sessions, turns, approvals, cron tasks, agents and tools;
/// - `member`: also chat (`/v1/messages`, the OpenAI door, MCP);
/// - `operator`: also decide approvals, manage cron tasks and read the audit;
/// - `admin`: also manage the org's keys (up to `admin`) and configuration;
/// - `owner`: also create and revoke `owner` keys;
/// - `platform`: the deployment's administrator, across orgs (orgs, quotas, runtime
///   diagnostics). Only `SABLE_ADMIN_KEY` or `sable admin key create --platform` make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Member,
    Operator,
    Admin,
    Owner,
    Platform,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Self; 6] = [
        Self::Viewer,
        Self::Member,
        Self::Operator,
        Self::Admin,
        Self::Owner,
        Self::Platform,
    ];

    /// The roles an org's keys may have (all but `platform`).
    pub const ORG_ROLES: [Self; 5] = [
        Self::Viewer,
        Self::Member,
        Self::Operator,
        Self::Admin,
        Self::Owner,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Owner => "owner",
            Self::Platform => "platform",
        }
    }

    /// True when a key of this role may do what `needed` may.
    pub fn allows(self, needed: Self) -> bool {
        self >= needed
    }

    /// True when this role may create or revoke a key of role `other`: `admin` manages
    /// keys up to `admin`, `owner` up to `owner`, and only the platform makes platform keys.
    pub fn may_manage(self, other: Self) -> bool {
        match self {
            Self::Platform => true,
            Self::Owner => other <= Self::Owner,
            Self::Admin => other <= Self::Admin,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = StatusParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == input)
            .ok_or_else(|| StatusParseError {
                kind: "role",
                input: input.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_and_order_least_first() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!(Role::Operator.allows(Role::Member));
        assert!(!Role::Member.allows(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn an_admin_manages_keys_up_to_admin_and_an_owner_up_to_owner() {
        assert!(Role::Admin.may_manage(Role::Admin));
        assert!(!Role::Admin.may_manage(Role::Owner));
        assert!(Role::Owner.may_manage(Role::Owner));
        assert!(!Role::Owner.may_manage(Role::Platform));
        assert!(!Role::Operator.may_manage(Role::Viewer));
    }
}
