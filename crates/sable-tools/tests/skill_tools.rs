//! `skill` and `skill_script` against a real skills folder: only allowed skills load, and
//! a script runs in a fresh directory with a scrubbed environment, within its timeout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sable_core::{OrgId, SessionId, TurnId};
use sable_store::{Store, StoreOptions};
use sable_tools::{SkillCatalog, ToolContext, ToolError, ToolRegistry, builtin_tools};
use serde_json::json;

fn skills_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sable-skills-{}", uuid::Uuid::now_v7()));
    write(
        &dir.join("probe/SKILL.md"),
        "---\nname: probe\ndescription: Looks around\n---\nRun env.sh.\n",
    );
    write(
        &dir.join("probe/scripts/env.sh"),
        "#!/bin/sh\necho \"cwd=$(pwd)\"\nenv | sort\necho \"args=$*\"\n",
    );
    std::fs::set_permissions(
        dir.join("probe/scripts/env.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(
        &dir.join("hidden/SKILL.md"),
        "---\nname: hidden\ndescription: Not for you\n---\nsecret body\n",
    );
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn registry(dir: &Path) -> ToolRegistry {
    let skills = Arc::new(SkillCatalog::load(dir).unwrap());
    let mut registry = ToolRegistry::default();
    for tool in builtin_tools(skills) {
        registry.register(tool).unwrap();
    }
    registry
}

fn context(allowed: &[&str]) -> ToolContext {
    ToolContext {
        store: Store::connect_lazy("sqlite::memory:", &StoreOptions::default()).unwrap(),
        org_id: OrgId::new(),
        session_id: SessionId::new(),
        turn_id: TurnId::new(),
        user_id: None,
        agent_id: "agent".into(),
        allowed_skills: allowed
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()
            .into(),
    }
}

#[tokio::test]
async fn only_allowed_skills_load() {
    let registry = registry(&skills_dir());
    let context = context(&["probe"]);
    let body = registry
        .call(&context, "skill", r#"{"name":"probe"}"#)
        .await
        .unwrap();
    assert_eq!(body, "Run env.sh.");
    let refused = registry
        .call(&context, "skill", r#"{"name":"hidden"}"#)
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        ToolError::Refused("no skill named 'hidden' is available to you".into())
    );
}

#[tokio::test]
async fn a_script_runs_confined_with_a_scrubbed_environment() {
    // cargo gives the test process CARGO_* variables; the script must see none of them.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let registry = registry(&skills_dir());
    let allowed = context(&["probe"]);
    let output = registry
        .call(
            &allowed,
            "skill_script",
            &json!({"skill": "probe", "script": "env.sh", "args": ["one", "two"]}).to_string(),
        )
        .await
        .unwrap();
    let cwd = output
        .lines()
        .find_map(|line| line.strip_prefix("cwd="))
        .unwrap();
    assert!(
        cwd.contains("sable-skill-") && !Path::new(cwd).exists(),
        "a fresh directory, removed after: {output}"
    );
    assert!(!output.contains("CARGO_"), "{output}");
    assert!(
        output.contains("PATH=/usr/local/bin:/usr/bin:/bin") && output.contains("args=one two"),
        "{output}"
    );

    let escape = registry
        .call(
            &allowed,
            "skill_script",
            r#"{"skill": "probe", "script": "../SKILL.md"}"#,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(escape, ToolError::InvalidArguments(_)),
        "{escape:?}"
    );
    let forbidden = registry
        .call(
            &context(&[]),
            "skill_script",
            r#"{"skill": "probe", "script": "env.sh"}"#,
        )
        .await
        .unwrap_err();
    assert!(matches!(forbidden, ToolError::Refused(_)), "{forbidden:?}");
}
