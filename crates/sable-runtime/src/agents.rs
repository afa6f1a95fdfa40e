//! The agent catalog: `agents/<id>/agent.toml` plus `agents/<id>/AGENT.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sable_core::AgentId;
use serde::{Deserialize, Serialize};

/// An agent folder that could not be loaded; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One agent, ready to use.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDefinition {
    pub id: AgentId,
    pub name: String,
    /// One line for listings (`GET /v1/agents`); empty when the file gives none.
    pub description: String,
    pub system_prompt: String,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// How many of the newest history messages the model sees.
    pub history_messages: u32,
    /// The model profile (from `config/models.toml`) the agent uses by default.
    pub profile: String,
    /// Rules that pick another profile for some turns, first match wins.
    pub routes: Vec<RouteRule>,
    /// The tools the model is offered, by registry name.
    pub tools: Vec<String>,
    /// Tools whose calls wait for a person's approval.
    pub approval_required: Vec<String>,
    /// The skills the agent may use (listed in its prompt, loadable with `skill`).
    pub skills: Vec<String>,
    /// Whether the agent may run skills' scripts (each run still needs approval).
    pub allow_skill_scripts: bool,
    /// Model rounds that may end in tool calls, per turn.
    pub max_tool_rounds: u32,
    /// A tool result longer than this is cut, with a note saying so.
    pub max_tool_result_chars: usize,
}

impl AgentDefinition {
    /// True when `tools.allow` offers `tool`: by its exact name, or by an entry ending in
    /// `*` that prefixes it (`mcp__time__*`).
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.tools
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => tool.starts_with(prefix),
                None => entry == tool,
            })
    }
}

/// A routing rule: turns whose message is at most `max_input_chars` long use `profile`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    pub profile: String,
    pub max_input_chars: Option<usize>,
}

/// An agent as written: `agent.toml` (with the prompt in `AGENT.md`) or, for an org's own
/// agents, the JSON body of `PUT /v1/agents/{id}` (with the prompt in `prompt`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The system prompt (an agent folder keeps it in `AGENT.md` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub tools: ToolsSection,
    #[serde(default)]
    pub skills: SkillsSection,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsSection {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub require_approval: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillsSection {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub allow_scripts: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub routes: Vec<RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default = "default_history_messages")]
    pub history_messages: u32,
    #[serde(default = "default_max_tool_rounds")]
    pub max_tool_rounds: u32,
    #[serde(default = "default_max_tool_result_chars")]
    pub max_tool_result_chars: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            history_messages: default_history_messages(),
            max_tool_rounds: default_max_tool_rounds(),
            max_tool_result_chars: default_max_tool_result_chars(),
        }
    }
}

fn default_history_messages() -> u32 {
    40
}

fn default_max_tool_rounds() -> u32 {
    8
}

fn default_max_tool_result_chars() -> usize {
    16_000
}

/// The longest prompt an org's agent may have, in bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

impl AgentSpec {
    /// The agent `id` this spec describes, with `prompt` as its system prompt; the error
    /// names the field (`limits.history_messages must be at least 1`).
    pub fn into_definition(self, id: AgentId, prompt: &str) -> Result<AgentDefinition, String> {
        if self.limits.history_messages == 0 {
            return Err("limits.history_messages must be at least 1".into());
        }
        if self.limits.max_tool_result_chars < 100 {
            return Err("limits.max_tool_result_chars must be at least 100".into());
        }
        if let Some(temperature) = self.model.temperature
            && !(0.0..=2.0).contains(&temperature)
        {
            return Err("model.temperature must be between 0 and 2".into());
        }
        Ok(AgentDefinition {
            name: self.name.unwrap_or_else(|| id.as_str().to_owned()),
            description: self.description.unwrap_or_default(),
            id,
            system_prompt: prompt.trim().to_owned(),
            max_output_tokens: self.model.max_output_tokens,
            temperature: self.model.temperature,
            history_messages: self.limits.history_messages,
            profile: self.model.profile.unwrap_or_else(|| "default".to_owned()),
            routes: self.model.routes,
            tools: self.tools.allow,
            approval_required: self.tools.require_approval,
            skills: self.skills.allow,
            allow_skill_scripts: self.skills.allow_scripts,
            max_tool_rounds: self.limits.max_tool_rounds,
            max_tool_result_chars: self.limits.max_tool_result_chars,
        })
    }

    /// Reads an org's agent spec from its JSON body (a non-empty `prompt` included); the
    /// error names the faulty field.
    pub fn parse_json(json: &str) -> Result<Self, String> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let spec: Self = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|error| field_error(&error))?;
        let prompt = spec.prompt.as_deref().unwrap_or_default();
        if prompt.trim().is_empty() {
            return Err("prompt: an agent needs a non-empty prompt".into());
        }
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(format!("prompt: longer than {MAX_PROMPT_BYTES} bytes"));
        }
        Ok(spec)
    }

    /// Reads an org's agent from its JSON body; the error names the faulty field.
    pub fn from_json(id: AgentId, json: &str) -> Result<AgentDefinition, String> {
        let spec = Self::parse_json(json)?;
        let prompt = spec.prompt.clone().unwrap_or_default();
        spec.into_definition(id, &prompt)
    }
}

impl From<&AgentDefinition> for AgentSpec {
    /// The spec that defines `agent` (an agent folder's, as the API shows it).
    fn from(agent: &AgentDefinition) -> Self {
        Self {
            name: Some(agent.name.clone()),
            description: Some(agent.description.clone()),
            prompt: Some(agent.system_prompt.clone()),
            model: ModelSection {
                profile: Some(agent.profile.clone()),
                max_output_tokens: agent.max_output_tokens,
                temperature: agent.temperature,
                routes: agent.routes.clone(),
            },
            limits: LimitsSection {
                history_messages: agent.history_messages,
                max_tool_rounds: agent.max_tool_rounds,
                max_tool_result_chars: agent.max_tool_result_chars,
            },
            tools: ToolsSection {
                allow: agent.tools.clone(),
                require_approval: agent.approval_required.clone(),
            },
            skills: SkillsSection {
                allow: agent.skills.clone(),
                allow_scripts: agent.allow_skill_scripts,
            },
        }
    }
}

/// `path: message` for a JSON body that does not deserialise.
pub fn field_error(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    let inner = error.inner().to_string();
    // serde_json appends the position; the field path says more.
    let message = inner
        .split(" at line ")
        .next()
        .unwrap_or(inner.as_str())
        .to_owned();
    if path == "." || path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// Every agent of a deployment, by id.
#[derive(Debug, Clone, Default)]
pub struct AgentCatalog {
    agents: BTreeMap<String, Arc<AgentDefinition>>,
}

impl AgentCatalog {
    /// Loads every folder of `dir` that holds an `agent.toml`.
    pub fn load(dir: &Path) -> Result<Self, AgentError> {
        let entries = std::fs::read_dir(dir).map_err(|source| AgentError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut agents = BTreeMap::new();
        for entry in entries {
            let folder = entry
                .map_err(|source| AgentError::Read {
                    path: dir.to_owned(),
                    source,
                })?
                .path();
            if folder.join("agent.toml").is_file() {
                let agent = load_agent(&folder)?;
                agents.insert(agent.id.as_str().to_owned(), Arc::new(agent));
            }
        }
        Ok(Self { agents })
    }

    pub fn from_definitions(definitions: impl IntoIterator<Item = AgentDefinition>) -> Self {
        let agents = definitions
            .into_iter()
            .map(|agent| (agent.id.as_str().to_owned(), Arc::new(agent)))
            .collect();
        Self { agents }
    }

    /// A catalog of already shared definitions (an org's layered over the files').
    pub fn from_shared(definitions: impl IntoIterator<Item = Arc<AgentDefinition>>) -> Self {
        let agents = definitions
            .into_iter()
            .map(|agent| (agent.id.as_str().to_owned(), agent))
            .collect();
        Self { agents }
    }

    pub fn get(&self, id: &str) -> Option<Arc<AgentDefinition>> {
        self.agents.get(id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.agents.contains_key(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    /// The longest history any agent reads (`limits.history_messages`), so one read at
    /// a turn's start serves whichever agent answers it.
    pub fn max_history_messages(&self) -> u32 {
        self.agents
            .values()
            .map(|agent| agent.history_messages)
            .max()
            .unwrap_or(1)
    }

    /// Fails naming the agent and field when an agent uses a profile `exists` rejects.
    pub fn check_profiles(&self, exists: impl Fn(&str) -> bool) -> Result<(), AgentError> {
        for agent in self.agents.values() {
            let path = PathBuf::from(format!("agents/{}/agent.toml", agent.id));
            if !exists(&agent.profile) {
                return Err(AgentError::Invalid {
                    path,
                    message: format!("model.profile: no model profile named '{}'", agent.profile),
                });
            }
            if let Some(route) = agent.routes.iter().find(|route| !exists(&route.profile)) {
                return Err(AgentError::Invalid {
                    path,
                    message: format!("model.routes: no model profile named '{}'", route.profile),
                });
            }
        }
        Ok(())
    }

    /// Fails naming the agent and field when an agent names a tool `tool_exists` rejects
    /// or a skill `skill_exists` rejects, or asks approval for a tool it is not given.
    pub fn check_capabilities(
        &self,
        tool_exists: impl Fn(&str) -> bool,
        skill_exists: impl Fn(&str) -> bool,
    ) -> Result<(), AgentError> {
        for agent in self.agents.values() {
            let invalid = |message: String| AgentError::Invalid {
                path: PathBuf::from(format!("agents/{}/agent.toml", agent.id)),
                message,
            };
            if let Some(tool) = agent.tools.iter().find(|tool| !tool_exists(tool)) {
                return Err(invalid(format!("tools.allow: no tool named '{tool}'")));
            }
            if let Some(tool) = agent
                .approval_required
                .iter()
                .find(|tool| !agent.allows_tool(tool))
            {
                return Err(invalid(format!(
                    "tools.require_approval: '{tool}' is not in tools.allow"
                )));
            }
            if let Some(skill) = agent.skills.iter().find(|skill| !skill_exists(skill)) {
                return Err(invalid(format!("skills.allow: no skill named '{skill}'")));
            }
        }
        Ok(())
    }
}

fn load_agent(folder: &Path) -> Result<AgentDefinition, AgentError> {
    let toml_path = folder.join("agent.toml");
    let invalid = |path: &Path, message: String| AgentError::Invalid {
        path: path.to_owned(),
        message,
    };
    let folder_name = folder
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let id = AgentId::parse(folder_name)
        .map_err(|error| invalid(folder, format!("folder name is not an agent id: {error}")))?;
    let text = std::fs::read_to_string(&toml_path).map_err(|source| AgentError::Read {
        path: toml_path.clone(),
        source,
    })?;
    let spec: AgentSpec =
        toml::from_str(&text).map_err(|error| invalid(&toml_path, error.to_string()))?;
    if spec.prompt.is_some() {
        return Err(invalid(
            &toml_path,
            "prompt: an agent folder keeps its prompt in AGENT.md".into(),
        ));
    }
    let prompt_path = folder.join("AGENT.md");
    let system_prompt =
        std::fs::read_to_string(&prompt_path).map_err(|source| AgentError::Read {
            path: prompt_path,
            source,
        })?;
    spec.into_definition(id, &system_prompt)
        .map_err(|message| invalid(&toml_path, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_agent(root: &Path, id: &str, toml: &str, prompt: &str) {
        let folder = root.join(id);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("agent.toml"), toml).unwrap();
        std::fs::write(folder.join("AGENT.md"), prompt).unwrap();
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sable-agents-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_shipped_default_agent_loads() {
        let catalog =
            AgentCatalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../agents"))
                .unwrap();
        let agent = catalog.get("default").expect("default agent");
        assert!(!agent.system_prompt.is_empty());
    }

    #[test]
    fn an_agent_folder_gives_its_prompt_and_limits() {
        let dir = scratch_dir("ok");
        write_agent(
            &dir,
            "helper",
            "name = \"Helper\"\n[limits]\nhistory_messages = 6\n",
            "You help.\n",
        );
        let agent = AgentCatalog::load(&dir).unwrap().get("helper").unwrap();
        assert_eq!(
            (
                agent.name.as_str(),
                agent.system_prompt.as_str(),
                agent.history_messages
            ),
            ("Helper", "You help.", 6)
        );
    }

    #[test]
    fn an_unknown_field_fails_naming_the_file_and_field() {
        let dir = scratch_dir("bad");
        write_agent(&dir, "broken", "modle = 1\n", "x");
        let error = AgentCatalog::load(&dir).unwrap_err().to_string();
        assert!(
            error.contains("broken/agent.toml") && error.contains("modle"),
            "{error}"
        );
    }
}
