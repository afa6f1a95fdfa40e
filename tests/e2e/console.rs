//! The web console in a real browser: `tests/e2e/console/browser.mjs` drives Debian's
//! headless Chromium through playwright-core (installed by `scripts/services.sh`) against
//! a real gateway and worker. It signs in, streams a reply, opens a turn's tool call,
//! approves a parked call from a second tab while the first shows the resumed turn
//! streaming (through `GET /v1/sessions/{id}/events`), creates and runs a cron task, filters and exports the audit,
//! checks that a member key sees no admin page and that another org's key sees none of
//! this org's data, and writes screenshots of every page at 1280 and 390 px into
//! `docs/console/`. What it did is then checked through the API.

use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use sable_testkit::workspace_root;
use serde_json::{Value, json};

use crate::support::{StackOptions, TestStack};

/// The test's agents: the default one, and `careful`, whose `memory` calls need approval.
fn agents_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sable-console-{}", uuid::Uuid::new_v4().simple()));
    for (id, toml) in [
        (
            "default",
            std::fs::read_to_string(workspace_root().join("agents/default/agent.toml"))?,
        ),
        (
            "careful",
            "name = \"Careful assistant\"\n[tools]\nallow = [\"memory\", \"time\"]\nrequire_approval = [\"memory\"]\n".to_owned(),
        ),
    ] {
        std::fs::create_dir_all(dir.join(id))?;
        std::fs::write(dir.join(id).join("agent.toml"), toml)?;
        std::fs::write(dir.join(id).join("AGENT.md"), format!("You are {id}."))?;
    }
    Ok(dir)
}

struct Keys {
    admin: String,
    member: String,
    other_org: String,
}

async fn keys(stack: &TestStack) -> anyhow::Result<Keys> {
    let admin = stack
        .sable(&[
            "admin",
            "key",
            "create",
            "--org",
            &stack.org_id,
            "--admin",
            "--name",
            "console admin",
        ])
        .await?;
    let other_org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    let other_org = stack
        .sable(&["admin", "key", "create", "--org", &other_org, "--admin"])
        .await?;
    let member = stack.key_with_role("member").await?;
    Ok(Keys {
        admin,
        member,
        other_org,
    })
}

/// Runs the browser script and returns what it printed.
async fn drive_browser(stack: &TestStack, keys: &Keys) -> anyhow::Result<Value> {
    let dir = workspace_root().join("tests/e2e/console");
    let shots = workspace_root().join("docs/console");
    std::fs::create_dir_all(&shots)?;
    let config = json!({
        "url": stack.gateways[0].url,
        "admin_key": keys.admin,
        "member_key": keys.member,
        "other_key": keys.other_org,
        "shots": shots,
    });
    let run = tokio::process::Command::new("node")
        .arg(dir.join("browser.mjs"))
        .arg(config.to_string())
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .context("the browser test ran over five minutes")?
        .context("node runs (scripts/services.sh installs it, Chromium and playwright-core)")?;
    crate::support::printed_json(stack, "the browser test", &output)
}

async fn get(stack: &TestStack, key: &str, path: &str) -> anyhow::Result<Value> {
    let response = stack
        .http
        .get(stack.url(0, path))
        .bearer_auth(key)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "{path}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_streams_approves_schedules_and_audits_in_chromium_and_keeps_orgs_apart()
-> anyhow::Result<()> {
    let agents = agents_dir()?;
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![("SABLE_AGENTS_DIR", agents.display().to_string())],
        ..StackOptions::default()
    })
    .await?;
    // A typewriter-slow stream, so the page shows part of a reply before the whole.
    stack.provider.set_chunk_gap(Duration::from_millis(150));
    let keys = keys(&stack).await?;
    let seen = drive_browser(&stack, &keys).await?;
    assert_what_the_browser_did(&stack, &keys, &seen).await?;
    assert_screenshots(&seen)
}

async fn assert_what_the_browser_did(
    stack: &TestStack,
    keys: &Keys,
    seen: &Value,
) -> anyhow::Result<()> {
    let text = |name: &str| seen[name].as_str().unwrap_or_default().to_owned();
    let tool_turn = get(
        stack,
        &keys.admin,
        &format!("/v1/turns/{}", text("tool_turn_id")),
    )
    .await?;
    assert_eq!(tool_turn["tool_calls"][0]["tool"], "time", "{tool_turn}");
    assert_eq!(tool_turn["session_id"], text("session_id"));
    let approvals = get(stack, &keys.admin, "/v1/approvals").await?;
    let approval = approvals["approvals"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|a| a["approval_id"] == text("approval_id"))
        })
        .cloned()
        .context("the approval the browser decided")?;
    assert_eq!(approval["status"], "approved", "{approval}");
    assert_eq!(approval["comment"], "fine by me", "{approval}");
    let approved_turn = get(
        stack,
        &keys.admin,
        &format!("/v1/turns/{}", text("approval_turn_id")),
    )
    .await?;
    assert_eq!(approved_turn["status"], "done", "{approved_turn}");
    let task = get(
        stack,
        &keys.admin,
        &format!("/v1/cron/tasks/{}", text("cron_task_id")),
    )
    .await?;
    assert_eq!(task["name"], "morning digest");
    assert_eq!(task["schedule"], "0 9 * * *");
    assert_eq!(task["enabled"], false, "paused in the browser: {task}");
    let runs = get(
        stack,
        &keys.admin,
        &format!("/v1/cron/tasks/{}/runs", text("cron_task_id")),
    )
    .await?;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
    assert!(
        seen["exported"].as_u64().is_some_and(|count| count >= 2),
        "{seen}"
    );
    Ok(())
}

/// Every page at both widths, written just now.
fn assert_screenshots(seen: &Value) -> anyhow::Result<()> {
    let pages = [
        "signin",
        "sessions",
        "session",
        "turn",
        "approvals",
        "cron",
        "cron-task",
        "audit",
        "agents",
        "runtime",
        "keys",
    ];
    let dir = workspace_root().join("docs/console");
    for page in pages {
        for width in [1280, 390] {
            let path = dir.join(format!("{page}-{width}.png"));
            let bytes =
                std::fs::read(&path).with_context(|| format!("{} exists", path.display()))?;
            assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", path.display());
            assert!(
                seen["screenshots"]
                    .as_array()
                    .is_some_and(|shots| shots.iter().any(|shot| shot.as_str() == path.to_str())),
                "{} was written by this run",
                path.display()
            );
        }
    }
    Ok(())
}
