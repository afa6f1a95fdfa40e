//! `skill` loads the body of a skill the agent may use; `skill_script` runs one of its
//! scripts, confined: a fresh working directory, a scrubbed environment, a timeout, and
//! (as a high-risk tool) a person's approval for every run.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{builtin, text_argument};
use crate::{SkillCatalog, Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk};

/// Output of a script beyond this is cut.
const MAX_SCRIPT_OUTPUT: usize = 64 * 1024;

pub struct SkillTool {
    descriptor: ToolDescriptor,
    skills: Arc<SkillCatalog>,
}

impl SkillTool {
    pub fn new(skills: Arc<SkillCatalog>) -> Self {
        Self {
            descriptor: builtin(
                "skill",
                "Loads the full instructions of one of your skills, by name.",
                json!({
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                    "additionalProperties": false
                }),
                ToolRisk::Low,
                true,
                Duration::from_secs(2),
            ),
            skills,
        }
    }
}

/// The skill, if it exists and this agent may use it; both cases read the same to the
/// model, so a forbidden skill's existence is not revealed.
fn allowed_skill(
    skills: &SkillCatalog,
    context: &ToolContext,
    name: &str,
) -> Result<Arc<crate::Skill>, ToolError> {
    skills
        .get(name)
        .filter(|_| context.allowed_skills.iter().any(|allowed| allowed == name))
        .ok_or_else(|| ToolError::Refused(format!("no skill named '{name}' is available to you")))
}

#[async_trait::async_trait]
impl Tool for SkillTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let skill = allowed_skill(&self.skills, context, text_argument(&arguments, "name")?)?;
        Ok(skill.body.clone())
    }
}

pub struct SkillScript {
    descriptor: ToolDescriptor,
    skills: Arc<SkillCatalog>,
}

impl SkillScript {
    pub fn new(skills: Arc<SkillCatalog>) -> Self {
        Self {
            descriptor: builtin(
                "skill_script",
                "Runs a script shipped with one of your skills (from its scripts/ folder) and returns its output.",
                json!({
                    "type": "object",
                    "properties": {
                        "skill": {"type": "string"},
                        "script": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"},
                        "args": {"type": "array", "items": {"type": "string"}, "maxItems": 32}
                    },
                    "required": ["skill", "script"],
                    "additionalProperties": false
                }),
                ToolRisk::High,
                false,
                Duration::from_secs(30),
            ),
            skills,
        }
    }
}

#[async_trait::async_trait]
impl Tool for SkillScript {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let skill = allowed_skill(&self.skills, context, text_argument(&arguments, "skill")?)?;
        let script_name = text_argument(&arguments, "script")?;
        let script = skill.dir.join("scripts").join(script_name);
        if !script.is_file() {
            return Err(ToolError::Refused(format!(
                "skill '{}' has no script '{script_name}'",
                skill.name
            )));
        }
        let args: Vec<String> = arguments["args"]
            .as_array()
            .map(|args| {
                args.iter()
                    .filter_map(|arg| arg.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let workdir = std::env::temp_dir().join(format!("sable-skill-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&workdir)
            .map_err(|error| ToolError::Failed(format!("no working directory: {error}")))?;
        let result = run_confined(&script, &args, &workdir).await;
        let _ = std::fs::remove_dir_all(&workdir);
        result
    }
}

/// Runs the script in `workdir` with only `PATH`, `HOME` and `LANG` set; the child is
/// killed if the call is dropped (the registry's timeout).
async fn run_confined(
    script: &std::path::Path,
    args: &[String],
    workdir: &std::path::Path,
) -> Result<String, ToolError> {
    let mut child = tokio::process::Command::new(script)
        .args(args)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", workdir)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| ToolError::Failed(format!("the script could not start: {error}")))?;
    let mut output = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout
            .take(MAX_SCRIPT_OUTPUT as u64)
            .read_to_end(&mut output)
            .await;
    }
    let status = child
        .wait()
        .await
        .map_err(|error| ToolError::Failed(error.to_string()))?;
    let text = String::from_utf8_lossy(&output).into_owned();
    if status.success() {
        Ok(text)
    } else {
        Err(ToolError::Failed(format!(
            "the script exited with {status}: {text}"
        )))
    }
}
