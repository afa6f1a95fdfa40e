//! What the turn needs from outside the runtime, as narrow traits: the model client and
//! the agent's tools. The store and the bus are used as they are (`Store`, `Bus`): their
//! embedded backends (SQLite, the in-process bus) run anywhere, tests included.

use sable_llm::{CallReport, ChatRequest, DeltaSink, ModelClient, ProfileSpec, ToolSpec};
use sable_store::RunnableTurn;

use crate::{AgentDefinition, OrgConfig, SkillEntry};

/// Asks models for completions, by profile (with the profile's fallbacks).
#[async_trait::async_trait]
pub trait Models: Send + Sync {
    fn profile(&self, name: &str) -> Option<&ProfileSpec>;
    /// Calls the profile, streaming text to `on_delta`; every attempt is in the report.
    async fn complete(
        &self,
        profile: &str,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> CallReport;
}

#[async_trait::async_trait]
impl Models for ModelClient {
    fn profile(&self, name: &str) -> Option<&ProfileSpec> {
        ModelClient::profile(self, name)
    }

    async fn complete(
        &self,
        profile: &str,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> CallReport {
        ModelClient::complete(self, profile, request, on_delta).await
    }
}

/// Where a turn's tools come from.
#[async_trait::async_trait]
pub trait Capabilities: Send + Sync {
    /// The tools and skills `agent` may use in `turn`, as of now: the deployment's and
    /// those of the org's own MCP servers as `org` (the turn's configuration) has them.
    async fn for_turn(
        &self,
        turn: &RunnableTurn,
        agent: &AgentDefinition,
        org: &OrgConfig,
    ) -> Box<dyn Toolbox>;
}

/// The tools one turn may call.
#[async_trait::async_trait]
pub trait Toolbox: Send + Sync {
    /// The tools offered to the model.
    fn specs(&self) -> &[ToolSpec];
    /// The skills listed in the prompt.
    fn skills(&self) -> &[SkillEntry];
    /// True when the deployment has a tool of this name (offered or not).
    fn knows(&self, name: &str) -> bool;
    /// True unless a second run of the tool could do something twice (a tool the
    /// deployment does not know counts as idempotent: it never runs).
    fn is_idempotent(&self, name: &str) -> bool;
    /// True for tools that always wait for a person's approval.
    fn is_high_risk(&self, name: &str) -> bool;
    /// Runs one call; the text is what the model reads.
    async fn call(&self, name: &str, arguments: &str) -> Result<String, ToolFailure>;

    fn offers(&self, name: &str) -> bool {
        self.specs().iter().any(|spec| spec.name == name)
    }

    /// The `tool` label of a call's metrics, from a bounded set: the name when the
    /// deployment has the tool, `unknown` otherwise.
    fn metric_label<'a>(&self, name: &'a str) -> &'a str {
        if self.knows(name) { name } else { "unknown" }
    }
}

/// A tool call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFailure {
    /// A short, stable code for records and metrics (`unknown_tool`, `timeout`, …).
    pub code: &'static str,
    pub message: String,
}

impl ToolFailure {
    pub fn unknown(name: &str) -> Self {
        Self {
            code: "unknown_tool",
            message: format!("unknown tool '{name}'"),
        }
    }
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
