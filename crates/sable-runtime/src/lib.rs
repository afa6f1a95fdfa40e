//! The agent runtime: which agent answers, what it is told, how a turn's model call is
//! assembled from the session's history, the intake every producer of turns shares
//! (`TurnIntake`: bindings, then the store's transaction, then the wake-up), and the turn
//! itself (`turn::run_turn`: the agent loop with its tool rounds, approvals, compaction
//! and ending), run by the worker under its lease.
//!
//! Depends on `sable-core`, `sable-llm`, and the `StoreBackend` / `BusBackend` handles
//! (`sable-store`, `sable-bus`) with `sable-telemetry` for the enqueue span; knows nothing
//! of NATS, HTTP or SQL themselves, so the same logic runs under any bus and store.

mod agents;
mod bindings;
mod change_feed;
mod context;
mod intake;
mod mcp_servers;
mod org_config;
pub mod turn;

pub use agents::{
    AgentCatalog, AgentDefinition, AgentError, AgentSpec, MAX_PROMPT_BYTES, RouteRule,
};
pub use bindings::{BindingRequest, BindingRule, Bindings, BoundAgent};
pub use change_feed::{CHANGE_POLL, ChangeFeed, TRUST_FOR};
pub use context::{
    RouteDecision, SUMMARY_HEADING, SkillEntry, build_chat_request, build_summary_request,
    choose_profile, estimate_tokens, input_budget, skill_index,
};
pub use intake::{Inbound, IntakeError, IntakeRouting, TurnIntake};
pub use mcp_servers::{
    MAX_MCP_HEADERS, McpServerSpec, SharedMcpServer, check_mcp_headers, check_mcp_server_name,
    mcp_headers_context, parse_mcp_server,
};
pub use org_config::{
    OrgConfig, OrgConfigBase, OrgConfigError, OrgConfigs, OrgSettingsSpec, SETTINGS_ITEM,
    item_label, parse_profile, parse_provider, parse_settings, provider_key_context,
};
