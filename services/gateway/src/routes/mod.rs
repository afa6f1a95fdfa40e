//! One module per resource, each exporting its router.

pub(crate) mod agents;
pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod cron;
pub(crate) mod diagnostics;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod mcp;
pub(crate) mod mcp_servers;
pub(crate) mod messages;
pub(crate) mod metrics;
pub(crate) mod openai;
pub(crate) mod org_config;
pub(crate) mod orgs;
pub(crate) mod quotas;
pub(crate) mod session_events;
pub(crate) mod sessions;
pub(crate) mod tools;
pub(crate) mod turns;
