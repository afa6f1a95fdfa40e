//! Tool descriptors, the [`Tool`] trait, and the registry that validates and runs calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sable_core::{OrgId, SessionId, TurnId};
use sable_llm::ToolSpec;
use sable_store::Store;
use serde_json::Value;

/// Where a capability comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolSource {
    Builtin,
    Skill,
    Mcp,
}

/// How much harm a call can do; agents may require approval by tool name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolRisk {
    /// Reads only what the agent already has (the time, its own notes).
    Low,
    /// Reaches outside (the network) or changes the user's stored state.
    Medium,
    /// Runs code or changes things outside Sable.
    High,
}

/// What the registry and the model know about a tool.
#[derive(Debug, Clone)]
pub struct ToolDescriptor {
    pub name: String,
    pub description: String,
    /// The JSON schema of the arguments object.
    pub parameters: Value,
    pub source: ToolSource,
    pub risk: ToolRisk,
    /// True when running the call twice has the same effect as once; a call interrupted
    /// by a crash is only repeated when it is.
    pub idempotent: bool,
    pub timeout: Duration,
}

impl ToolDescriptor {
    /// The spec sent to the model.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.parameters.clone(),
        }
    }
}

/// Who is calling: the turn's org, session and user, and the store for tools that keep
/// state. Tools never see other orgs' data.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub store: Store,
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub turn_id: TurnId,
    /// The conversation's user, when the channel named one.
    pub user_id: Option<String>,
    pub agent_id: String,
    /// The skills this agent may use.
    pub allowed_skills: Arc<[String]>,
}

impl ToolContext {
    /// Who a change made by this call is audited as.
    pub fn actor(&self) -> sable_store::Actor {
        sable_store::Actor::agent(&self.agent_id, self.user_id.as_deref())
    }
}

/// A call that did not produce a result. The message goes back to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool '{0}'")]
    Unknown(String),
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("the call took longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The tool refused the call (a private address, a missing note, a forbidden skill).
    #[error("{0}")]
    Refused(String),
    /// The tool tried and failed (the store or the network).
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// A short, stable code for records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "unknown_tool",
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::Timeout(_) => "timeout",
            Self::Refused(_) => "refused",
            Self::Failed(_) => "failed",
        }
    }
}

/// One capability.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    fn descriptor(&self) -> &ToolDescriptor;

    /// Runs the call with arguments already validated against the schema; the text
    /// returned is what the model reads.
    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError>;
}

/// A tool and its compiled argument schema.
pub(crate) struct Registered {
    pub(crate) tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
}

impl Registered {
    /// Fails when the tool's schema is not a valid JSON schema.
    pub(crate) fn new(tool: Arc<dyn Tool>) -> Result<Self, String> {
        let descriptor = tool.descriptor();
        let validator = jsonschema::validator_for(&descriptor.parameters).map_err(|error| {
            format!(
                "tool '{}': invalid parameters schema: {error}",
                descriptor.name
            )
        })?;
        Ok(Self { tool, validator })
    }
}

/// Every tool of a deployment, by name: the builtin tools registered at start and, with
/// an MCP sidecar, the tools of its connected servers as of the turn
/// ([`ToolRegistry::for_turn`]).
#[derive(Default, Clone)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<Registered>>,
    mcp: Option<crate::McpCatalog>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    /// Adds a tool; fails when its name is taken or its schema is not a valid schema.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), String> {
        let descriptor = tool.descriptor();
        let name = descriptor.name.clone();
        if self.tools.contains_key(&name) {
            return Err(format!("two tools are named '{name}'"));
        }
        let entry = Registered::new(tool)?;
        self.tools.insert(name, Arc::new(entry));
        Ok(())
    }

    /// Offers the MCP sidecar's tools too, from [`ToolRegistry::for_turn`] on.
    pub fn set_mcp(&mut self, catalog: crate::McpCatalog) {
        self.mcp = Some(catalog);
    }

    pub fn mcp(&self) -> Option<&crate::McpCatalog> {
        self.mcp.as_ref()
    }

    /// The registry one turn uses: these tools plus the MCP tools of servers connected
    /// now (the sidecar's catalog, cached by revision): the shared servers' and those of
    /// `org`'s own servers, never another org's. Without a sidecar, a copy.
    pub async fn for_turn(&self, org: Option<&crate::OrgMcpServers>) -> ToolRegistry {
        let mut registry = self.clone();
        if let Some(catalog) = &self.mcp {
            for (name, entry) in catalog.current(org).await.iter() {
                registry
                    .tools
                    .entry(name.clone())
                    .or_insert_with(|| entry.clone());
            }
        }
        registry
    }

    /// Every tool an agent is offered: what `allowed` names (see
    /// [`ToolRegistry::resolve_allowed`]), plus `skill` when it has skills and
    /// `skill_script` when it may run their scripts.
    pub fn offered<'a>(
        &'a self,
        allowed: &[String],
        with_skills: bool,
        with_skill_scripts: bool,
    ) -> Vec<&'a str> {
        let mut names = self.resolve_allowed(allowed);
        for (wanted, name) in [(with_skills, "skill"), (with_skill_scripts, "skill_script")] {
            if wanted
                && !names.contains(&name)
                && let Some((name, _)) = self.tools.get_key_value(name)
            {
                names.push(name.as_str());
            }
        }
        names
    }

    /// The names an agent's `tools.allow` offers: exact names that exist, and for an
    /// entry ending in `*` (such as `mcp__time__*`) every tool it prefixes, in name order.
    pub fn resolve_allowed<'a>(&'a self, allowed: &[String]) -> Vec<&'a str> {
        let mut names: Vec<&str> = Vec::new();
        for entry in allowed {
            let matching: Vec<&str> = match entry.strip_suffix('*') {
                Some(prefix) => self
                    .tools
                    .keys()
                    .filter(|name| name.starts_with(prefix))
                    .map(String::as_str)
                    .collect(),
                None => self
                    .tools
                    .get_key_value(entry)
                    .map(|(name, _)| name.as_str())
                    .into_iter()
                    .collect(),
            };
            for name in matching {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    pub fn descriptor(&self, name: &str) -> Option<&ToolDescriptor> {
        self.tools.get(name).map(|entry| entry.tool.descriptor())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// The specs of the named tools that exist, in the order given.
    pub fn specs<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<ToolSpec> {
        names
            .into_iter()
            .filter_map(|name| self.descriptor(name))
            .map(ToolDescriptor::spec)
            .collect()
    }

    /// Parses and validates `arguments` (the JSON text the model wrote), then runs the
    /// call within the tool's timeout.
    pub async fn call(
        &self,
        context: &ToolContext,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        let entry = self
            .tools
            .get(name)
            .ok_or_else(|| ToolError::Unknown(name.to_owned()))?;
        let arguments = parse_arguments(arguments)?;
        if let Some(error) = entry.validator.iter_errors(&arguments).next() {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" at {at}")
            };
            return Err(ToolError::InvalidArguments(format!("{error}{at}")));
        }
        let timeout = entry.tool.descriptor().timeout;
        tokio::time::timeout(timeout, entry.tool.call(context, arguments))
            .await
            .map_err(|_| ToolError::Timeout(timeout))?
    }
}

/// Models send `""` for a call without arguments; that means `{}`.
fn parse_arguments(text: &str) -> Result<Value, ToolError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(text)
        .map_err(|error| ToolError::InvalidArguments(format!("not valid JSON: {error}")))
}
