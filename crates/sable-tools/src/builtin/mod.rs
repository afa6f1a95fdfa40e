//! The builtin tools: `time`, `memory`, `session`, `automation`, `skill` and `skill_script`
//! (`http_fetch` lives in its own module).

mod automation;
mod memory;
mod session;
mod skill;
mod time;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use automation::Automation;
pub use memory::Memory;
pub use session::SessionTool;
pub use skill::{SkillScript, SkillTool};
pub use time::Time;

use crate::{ToolDescriptor, ToolError, ToolRisk, ToolSource};

fn builtin(
    name: &str,
    description: &str,
    parameters: Value,
    risk: ToolRisk,
    idempotent: bool,
    timeout: Duration,
) -> ToolDescriptor {
    ToolDescriptor {
        name: name.to_owned(),
        description: description.to_owned(),
        parameters,
        source: ToolSource::Builtin,
        risk,
        idempotent,
        timeout,
    }
}

/// A required string argument (the schema already checked it is there).
fn text_argument<'a>(arguments: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    arguments[name]
        .as_str()
        .ok_or_else(|| ToolError::InvalidArguments(format!("'{name}' is required")))
}

/// A store failure, as the model reads it (no internals).
fn store_failed(error: &sable_store::StoreError) -> ToolError {
    tracing::warn!(%error, "a tool's store call failed");
    ToolError::Failed("the store is unavailable; try again later".into())
}

/// Every builtin tool except `http_fetch` (it needs its configuration).
pub fn builtin_tools(skills: Arc<crate::SkillCatalog>) -> Vec<Arc<dyn crate::Tool>> {
    vec![
        Arc::new(Time::new()),
        Arc::new(Memory::new()),
        Arc::new(SessionTool::new()),
        Arc::new(Automation::new()),
        Arc::new(SkillTool::new(skills.clone())),
        Arc::new(SkillScript::new(skills)),
    ]
}
