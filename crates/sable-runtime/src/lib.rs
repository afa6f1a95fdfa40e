//! The agent runtime: which agent answers, what it is told, and how a turn's model call
//! is assembled from the session's history.
//!
//! Depends on `sable-core` and `sable-llm`; knows nothing of NATS, HTTP or SQL, so the
//! same turn logic runs under any bus and store.

mod agents;
mod bindings;
mod context;

pub use agents::{AgentCatalog, AgentDefinition, AgentError, RouteRule};
pub use bindings::{BindingRequest, BindingRule, Bindings, BoundAgent};
pub use context::{
    RouteDecision, SUMMARY_HEADING, SkillEntry, build_chat_request, build_summary_request,
    choose_profile, estimate_tokens, input_budget, skill_index,
};
