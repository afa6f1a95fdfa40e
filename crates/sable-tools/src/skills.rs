//! Skills: `skills/<name>/SKILL.md`, a Markdown body under a YAML front matter with
//! `name`, `description`, optional `allowed-tools` and `metadata`. The prompt lists only
//! names and descriptions; the body is loaded on demand by the `skill` tool. A skill's
//! optional scripts live in `skills/<name>/scripts/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// One skill, ready to use.
#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    pub name: String,
    pub description: String,
    /// Tools the skill expects to use (informational; the agent's own list governs).
    pub allowed_tools: Vec<String>,
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub body: String,
    /// The skill's folder (scripts run from `scripts/` inside it).
    pub dir: PathBuf,
}

/// A skill folder that could not be loaded; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SkillError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: String,
    description: String,
    #[serde(default, rename = "allowed-tools")]
    allowed_tools: AllowedTools,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    license: Option<String>,
}

/// `allowed-tools` is a list, or one space-separated string.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum AllowedTools {
    #[default]
    None,
    List(Vec<String>),
    Line(String),
}

/// Every skill of a deployment, by name.
#[derive(Debug, Clone, Default)]
pub struct SkillCatalog {
    skills: BTreeMap<String, Arc<Skill>>,
}

impl SkillCatalog {
    /// Loads every folder of `dir` that holds a `SKILL.md`; a missing `dir` means none.
    pub fn load(dir: &Path) -> Result<Self, SkillError> {
        let error = |path: &Path, message: String| SkillError {
            path: path.to_owned(),
            message,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(io) if io.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(io) => return Err(error(dir, io.to_string())),
        };
        let mut skills = BTreeMap::new();
        for entry in entries {
            let folder = entry.map_err(|io| error(dir, io.to_string()))?.path();
            let file = folder.join("SKILL.md");
            if !file.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(|io| error(&file, io.to_string()))?;
            let skill = parse_skill(&text, &folder).map_err(|message| error(&file, message))?;
            let folder_name = folder
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            if skill.name != folder_name {
                return Err(error(
                    &file,
                    format!(
                        "name '{}' must match the folder name '{folder_name}'",
                        skill.name
                    ),
                ));
            }
            skills.insert(skill.name.clone(), Arc::new(skill));
        }
        Ok(Self { skills })
    }

    pub fn from_skills(skills: impl IntoIterator<Item = Skill>) -> Self {
        Self {
            skills: skills
                .into_iter()
                .map(|skill| (skill.name.clone(), Arc::new(skill)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Skill>> {
        self.skills.get(name).cloned()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.skills.contains_key(name)
    }
}

/// Splits the front matter from the body and checks the required fields.
fn parse_skill(text: &str, dir: &Path) -> Result<Skill, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or("must start with a YAML front matter between '---' lines")?;
    let end = rest
        .find("\n---")
        .ok_or("the front matter has no closing '---' line")?;
    let (yaml, body) = (&rest[..end], &rest[end + 4..]);
    let body = body.split_once('\n').map_or("", |(_, body)| body);
    let front: FrontMatter =
        serde_yaml_ng::from_str(yaml).map_err(|error| format!("front matter: {error}"))?;
    let valid_name = !front.name.is_empty()
        && front.name.len() <= 64
        && front
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err("name: 1 to 64 lowercase letters, digits or hyphens".into());
    }
    if front.description.trim().is_empty() {
        return Err("description: must not be empty".into());
    }
    let _ = front.license;
    let allowed_tools = match front.allowed_tools {
        AllowedTools::None => Vec::new(),
        AllowedTools::List(tools) => tools,
        AllowedTools::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
    };
    Ok(Skill {
        name: front.name,
        description: front.description.trim().to_owned(),
        allowed_tools,
        metadata: front.metadata,
        body: body.trim().to_owned(),
        dir: dir.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_and_body_are_split() {
        let skill = parse_skill(
            "---\nname: weather\ndescription: Forecasts for a city\nallowed-tools: http_fetch time\nmetadata:\n  owner: ops\n---\n# Weather\nAsk the API.\n",
            Path::new("skills/weather"),
        )
        .unwrap();
        assert_eq!(skill.name, "weather");
        assert_eq!(skill.description, "Forecasts for a city");
        assert_eq!(skill.allowed_tools, ["http_fetch", "time"]);
        assert_eq!(skill.metadata["owner"], "ops");
        assert_eq!(skill.body, "# Weather\nAsk the API.");
    }

    #[test]
    fn missing_front_matter_or_fields_are_named() {
        let dir = Path::new("skills/x");
        assert!(
            parse_skill("# no front matter", dir)
                .unwrap_err()
                .contains("front matter")
        );
        let error = parse_skill("---\nname: x\n---\nbody", dir).unwrap_err();
        assert!(error.contains("description"), "{error}");
        let error = parse_skill("---\nname: Bad Name\ndescription: d\n---\n", dir).unwrap_err();
        assert!(error.starts_with("name:"), "{error}");
    }
}
