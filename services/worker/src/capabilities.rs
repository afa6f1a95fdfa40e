//! The worker's tools for the runtime's turns: the tool registry (builtin tools and the
//! MCP sidecar's catalog) and the skills catalog, behind `sable_runtime::turn`'s traits.

use std::sync::Arc;

use sable_llm::ToolSpec;
use sable_runtime::turn::{Capabilities, ToolFailure, Toolbox};
use sable_runtime::{AgentDefinition, OrgConfig, SkillEntry};
use sable_store::{RunnableTurn, Store};
use sable_tools::{OrgMcpServers, SkillCatalog, ToolContext, ToolRegistry, ToolRisk};

/// Builds each turn's toolbox from the registry as of the turn's start.
pub(crate) struct WorkerCapabilities {
    pub tools: ToolRegistry,
    pub skills: Arc<SkillCatalog>,
    pub store: Store,
}

#[async_trait::async_trait]
impl Capabilities for WorkerCapabilities {
    async fn for_turn(
        &self,
        turn: &RunnableTurn,
        agent: &AgentDefinition,
        org: &OrgConfig,
    ) -> Box<dyn Toolbox> {
        // The builtin tools and the MCP tools of servers connected when the turn started:
        // the shared ones and the org's own at the turn's configuration version.
        let registry = self
            .tools
            .for_turn(org_mcp_servers(turn, org).as_ref())
            .await;
        let names = registry.offered(
            &agent.tools,
            !agent.skills.is_empty(),
            agent.allow_skill_scripts,
        );
        let specs = registry.specs(names);
        let skills = agent
            .skills
            .iter()
            .filter_map(|name| self.skills.get(name))
            .map(|skill| SkillEntry {
                name: skill.name.clone(),
                description: skill.description.clone(),
            })
            .collect();
        Box::new(TurnTools {
            specs,
            skills,
            registry,
            org_tool_prefixes: org
                .mcp_servers
                .iter()
                .map(|server| format!("mcp__{}__", server.name))
                .collect(),
            context: ToolContext {
                store: self.store.clone(),
                org_id: turn.org_id,
                session_id: turn.session_id,
                turn_id: turn.id,
                user_id: turn.user_id.clone(),
                agent_id: agent.id.as_str().to_owned(),
                allowed_skills: agent.skills.to_vec().into(),
            },
        })
    }
}

/// The org's own MCP servers for the sidecar; `None` for an org that configured nothing
/// (it can have none to close either).
pub(crate) fn org_mcp_servers(turn: &RunnableTurn, org: &OrgConfig) -> Option<OrgMcpServers> {
    (org.version > 0).then(|| OrgMcpServers {
        org_id: turn.org_id,
        config_version: org.version,
        servers: org.mcp_servers.clone(),
    })
}

/// The tools offered to one turn's agent and what it takes to run them.
struct TurnTools {
    specs: Vec<ToolSpec>,
    skills: Vec<SkillEntry>,
    registry: ToolRegistry,
    /// `mcp__<server>__` of each of the org's own MCP servers.
    org_tool_prefixes: Vec<String>,
    context: ToolContext,
}

#[async_trait::async_trait]
impl Toolbox for TurnTools {
    fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    fn skills(&self) -> &[SkillEntry] {
        &self.skills
    }

    fn knows(&self, name: &str) -> bool {
        self.registry.descriptor(name).is_some()
    }

    fn is_idempotent(&self, name: &str) -> bool {
        self.registry
            .descriptor(name)
            .is_none_or(|descriptor| descriptor.idempotent)
    }

    fn is_high_risk(&self, name: &str) -> bool {
        self.registry
            .descriptor(name)
            .is_some_and(|descriptor| descriptor.risk == ToolRisk::High)
    }

    /// An org's own MCP tools share one label: their names are the org's to choose, so
    /// they would grow the series without bound across orgs.
    fn metric_label<'a>(&self, name: &'a str) -> &'a str {
        if !self.knows(name) {
            "unknown"
        } else if self
            .org_tool_prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
        {
            "mcp__(org)"
        } else {
            name
        }
    }

    async fn call(&self, name: &str, arguments: &str) -> Result<String, ToolFailure> {
        self.registry
            .call(&self.context, name, arguments)
            .await
            .map_err(|error| ToolFailure {
                code: error.code(),
                message: error.to_string(),
            })
    }
}
