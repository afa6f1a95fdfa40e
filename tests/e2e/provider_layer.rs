//! The provider layer seen through a turn: failover and routing recorded on the turn,
//! compaction after a context overflow, and non-retryable failures shown as they are.

use std::path::PathBuf;

use reqwest::StatusCode;
use sable_testkit::Script;
use serde_json::{Value, json};

use crate::support::{StackOptions, TestStack};

/// Writes a models file and an agents folder of the test's own, returning their env.
fn custom_config(
    models_toml: &str,
    extra_agent: Option<(&str, &str)>,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let dir = std::env::temp_dir().join(format!("sable-config-{}", uuid::Uuid::new_v4().simple()));
    let agents = dir.join("agents");
    copy_dir(
        &sable_testkit::workspace_root().join("agents/default"),
        &agents.join("default"),
    )?;
    if let Some((id, agent_toml)) = extra_agent {
        std::fs::create_dir_all(agents.join(id))?;
        std::fs::write(agents.join(id).join("agent.toml"), agent_toml)?;
        std::fs::write(agents.join(id).join("AGENT.md"), "You route.")?;
    }
    std::fs::write(dir.join("models.toml"), models_toml)?;
    Ok(vec![
        (
            "SABLE_MODELS_FILE",
            dir.join("models.toml").display().to_string(),
        ),
        ("SABLE_AGENTS_DIR", agents.display().to_string()),
    ])
}

fn copy_dir(from: &PathBuf, to: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

/// A default profile that fails over to `backup` (shared with the audit tests).
pub(crate) const MODELS_WITH_FALLBACK: &str = r#"
[retry]
max_retries = 2
base_delay_ms = 10
max_delay_ms = 50
cooldown_ms = 60000

[profiles.default]
provider = "openai"
model = "fake-model"
fallbacks = ["backup"]

[profiles.backup]
provider = "openai"
model = "backup-model"

[profiles.cheap]
provider = "openai"
model = "cheap-model"
"#;

/// Two fields of each provider call of a turn, in call order.
fn call_fields<'a>(turn: &'a Value, first: &str, second: &str) -> Vec<(&'a str, &'a str)> {
    let calls = turn["provider_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    calls
        .iter()
        .map(|call| {
            (
                call[first].as_str().unwrap_or_default(),
                call[second].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

async fn turn_of(stack: &TestStack, answer: &Value) -> anyhow::Result<Value> {
    Ok(stack
        .get(
            0,
            &format!("/v1/turns/{}", answer["turn_id"].as_str().unwrap()),
        )
        .await?
        .1)
}

#[tokio::test]
async fn a_failing_primary_fails_over_and_the_turn_records_why() -> anyhow::Result<()> {
    let env = custom_config(MODELS_WITH_FALLBACK, None)?;
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env,
        ..Default::default()
    })
    .await?;
    stack.provider.fail_model("fake-model", 503);

    let (status, answer) = stack
        .post_message(0, &json!({"text": "are you there?", "wait": true}))
        .await?;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"]["text"], "echo: are you there?");
    let turn = turn_of(&stack, &answer).await?;
    let calls = call_fields(&turn, "profile", "outcome");
    assert_eq!(
        calls,
        [
            ("default", "provider_server_error"),
            ("default", "provider_server_error"),
            ("default", "provider_server_error"),
            ("backup", "ok")
        ]
    );
    assert_eq!(
        turn["provider_calls"][2]["failover_reason"],
        "provider_server_error"
    );
    assert!(
        turn["usage"]["input_tokens"].as_i64().unwrap() > 0,
        "{turn}"
    );
    assert!(
        turn["provider_calls"][3]["time_to_first_token_ms"].is_i64(),
        "{turn}"
    );
    Ok(())
}

#[tokio::test]
async fn an_agent_route_picks_the_cheap_profile_for_short_messages_and_says_why()
-> anyhow::Result<()> {
    let agent = "[model]\nprofile = \"default\"\n[[model.routes]]\nprofile = \"cheap\"\nmax_input_chars = 20\n";
    let env = custom_config(MODELS_WITH_FALLBACK, Some(("router", agent)))?;
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env,
        ..Default::default()
    })
    .await?;

    let (_, short) = stack
        .post_message(0, &json!({"text": "hi", "agent": "router", "wait": true}))
        .await?;
    let (_, long) = stack.post_message(0, &json!({"text": "a message well over twenty characters", "agent": "router", "wait": true})).await?;

    let short_turn = turn_of(&stack, &short).await?;
    let long_turn = turn_of(&stack, &long).await?;
    assert_eq!(short_turn["model"]["profile"], "cheap");
    assert_eq!(
        short_turn["model"]["route_reason"],
        "route 1: message of 2 <= 20 chars"
    );
    assert_eq!(long_turn["model"]["profile"], "default");
    assert_eq!(
        stack.provider.requested_models(),
        ["cheap-model", "fake-model"]
    );
    Ok(())
}

#[tokio::test]
async fn a_context_overflow_compacts_the_session_and_retries_once() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let conversation = json!({"id": "long-chat"});
    for text in ["my name is Ada", "I like tea", "I live in Leeds"] {
        stack
            .post_message(
                0,
                &json!({"text": text, "conversation": conversation, "wait": true}),
            )
            .await?;
    }
    stack.provider.push(Script::ContextOverflow);

    let (_, answer) = stack
        .post_message(
            0,
            &json!({"text": "what do you know?", "conversation": conversation, "wait": true}),
        )
        .await?;

    assert_eq!(answer["status"], "done", "{answer}");
    let turn = turn_of(&stack, &answer).await?;
    let purposes = call_fields(&turn, "purpose", "outcome");
    assert_eq!(
        purposes,
        [
            ("answer", "provider_context_overflow"),
            ("compaction", "ok"),
            ("answer", "ok")
        ]
    );
    let summary: (Option<String>,) =
        sqlx::query_as("SELECT summary FROM sessions WHERE conversation_key = 'long-chat'")
            .fetch_one(stack.database.store.pool())
            .await?;
    assert!(
        summary
            .0
            .as_deref()
            .is_some_and(|summary| summary.contains("my name is Ada")),
        "{summary:?}"
    );
    let retried = stack.provider.requests().pop().unwrap();
    let sent: Vec<&str> = retried["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent.len(),
        3,
        "system prompt, summary, the new message: {sent:?}"
    );
    assert!(sent[1].starts_with("Summary of the earlier conversation:"));
    assert_eq!(sent[2], "what do you know?");
    let session_id = answer["session_id"].as_str().unwrap();
    let (_, history) = stack
        .get(0, &format!("/v1/sessions/{session_id}/messages"))
        .await?;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        8,
        "compaction deleted history"
    );
    Ok(())
}

#[tokio::test]
async fn a_rejected_key_fails_the_turn_at_once_with_a_clear_error() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;

    let (_, answer) = stack
        .post_message(0, &json!({"text": "hello #fail=401", "wait": true}))
        .await?;

    assert_eq!(answer["status"], "failed");
    assert_eq!(answer["error"]["code"], "provider_auth");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("401"),
        "{answer}"
    );
    assert_eq!(stack.provider.request_count(), 1, "no retry, no failover");
    Ok(())
}

#[tokio::test]
async fn a_stream_broken_after_text_fails_the_turn_without_asking_another_provider()
-> anyhow::Result<()> {
    let env = custom_config(MODELS_WITH_FALLBACK, None)?;
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env,
        ..Default::default()
    })
    .await?;

    let (_, answer) = stack
        .post_message(0, &json!({"text": "tell me #drop", "wait": true}))
        .await?;

    assert_eq!(answer["status"], "failed", "{answer}");
    assert_eq!(answer["error"]["code"], "provider_partial_output");
    assert_eq!(
        stack.provider.requested_models(),
        ["fake-model"],
        "no retry and no failover after text was streamed"
    );
    Ok(())
}
