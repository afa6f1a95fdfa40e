//! The OpenAI-compatible door end to end: the official `openai` Python SDK
//! (`tests/e2e/openai_client.py`, installed by `scripts/services.sh`) chats with an
//! agent through a real gateway and worker and the fake provider, streaming and not,
//! continuing sessions, with a tool round and usage; and the Responses API two-step via
//! `previous_response_id`, streaming. Idempotency and the audit are checked here too.

use anyhow::Context;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{StackOptions, TestStack};

/// Runs the SDK script against gateway 0 and returns what it printed.
async fn run_sdk_script(stack: &TestStack) -> anyhow::Result<Value> {
    let script = sable_testkit::workspace_root().join("tests/e2e/openai_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&stack.gateways[0].url)
        .arg(&stack.key)
        .output()
        .await
        .context("python3 runs (scripts/services.sh installs it and the openai SDK)")?;
    crate::support::printed_json(stack, "the SDK script", &output)
}

/// The OpenAI error object of an SDK exception's body (the SDK may unwrap `error`).
fn error_object(seen: &Value) -> &Value {
    let body = &seen["body"];
    body.get("error").unwrap_or(body)
}

fn turn_of(chat_id: &str) -> &str {
    chat_id
        .strip_prefix("chatcmpl-")
        .or_else(|| chat_id.strip_prefix("resp_"))
        .expect("an id that names its turn")
}

fn assert_usage_counted(usage: &Value, input: &str, output: &str) {
    let (input, output) = (usage[input].as_i64(), usage[output].as_i64());
    assert!(
        input.is_some_and(|tokens| tokens > 0) && output.is_some_and(|tokens| tokens > 0),
        "usage without counts: {usage}"
    );
    assert_eq!(
        usage["total_tokens"].as_i64(),
        Some(input.unwrap_or_default() + output.unwrap_or_default()),
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_sdk_chats_with_an_agent_and_continues_its_sessions()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..StackOptions::default()
    })
    .await?;
    let seen = run_sdk_script(&stack).await?;
    assert_chat_answers(&seen);
    assert_sessions_continue(&stack, &seen).await?;
    assert_a_tool_round(&stack, &seen).await?;
    assert_openai_errors(&seen);
    assert_responses(&stack, &seen).await?;
    assert_audited(&stack).await
}

/// Plain and streamed chat, usage counted, the wire stream ending `[DONE]`.
fn assert_chat_answers(seen: &Value) {
    assert!(
        seen["models"]["ids"]
            .as_array()
            .is_some_and(|ids| ids.contains(&json!("agent:default"))),
        "{}",
        seen["models"]
    );

    let plain = &seen["chat_plain"];
    assert_eq!(plain["text"], "echo: hello there", "{plain}");
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["finish_reason"], "stop");
    assert_usage_counted(&plain["usage"], "prompt_tokens", "completion_tokens");

    let streamed = &seen["chat_stream"];
    assert_eq!(
        streamed["text"], "echo: stream these words please",
        "{streamed}"
    );
    assert!(
        streamed["pieces"].as_u64().is_some_and(|pieces| pieces > 1),
        "not streamed piecewise: {streamed}"
    );
    assert_eq!(streamed["finish_reasons"], json!(["stop"]));
    assert_eq!(streamed["objects"], json!(["chat.completion.chunk"]));
    assert_usage_counted(&streamed["usage"], "prompt_tokens", "completion_tokens");
    assert_eq!(
        seen["chat_raw_stream"]["last_data"], "[DONE]",
        "{}",
        seen["chat_raw_stream"]
    );
}

async fn assert_sessions_continue(stack: &TestStack, seen: &Value) -> anyhow::Result<()> {
    // One session for the conversation header and the session header; each turn's text
    // is the request's last user message, the session holding the rest.
    let session = &seen["chat_session"];
    let sessions = session["sessions"].as_array().context("sessions")?;
    assert!(sessions.iter().all(|id| id == &sessions[0]), "{session}");
    assert_eq!(
        session["texts"],
        json!([
            "echo: my name is Ada",
            "echo: what is my name",
            "echo: third message"
        ])
    );
    let history_seen = stack.provider.requests().into_iter().find(|request| {
        request["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .is_some_and(|last| last["content"] == "what is my name")
    });
    let history = history_seen
        .context("the provider saw the second turn")?
        .to_string();
    assert!(
        history.contains("my name is Ada") && history.contains("echo: my name is Ada"),
        "history not carried: {history}"
    );
    assert!(
        !history.contains("ignored on a continued session"),
        "{history}"
    );
    assert_eq!(
        stack
            .scalar(&format!(
                "SELECT count(*) FROM turns WHERE session_id = '{}'",
                sessions[0].as_str().unwrap_or_default()
            ))
            .await?,
        3
    );

    // Stateless: a fresh session whose one turn carries the whole conversation.
    let stateless = &seen["chat_stateless"];
    let text = stateless["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("echo: This message carries a whole conversation"),
        "{text}"
    );
    assert!(
        text.contains("system: you are terse")
            && text.contains("assistant: first answer")
            && text.contains("user: second question"),
        "{text}"
    );
    assert_ne!(stateless["session"], sessions[0]);

    Ok(())
}

async fn assert_a_tool_round(stack: &TestStack, seen: &Value) -> anyhow::Result<()> {
    // A tool round on the server: the fake model calls `time`, the worker runs it.
    let tool = &seen["chat_tool"];
    assert!(
        tool["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("tool said: ")),
        "{tool}"
    );
    let (status, turn) = stack
        .get(
            0,
            &format!("/v1/turns/{}", tool["turn"].as_str().unwrap_or_default()),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{turn}");
    assert_eq!(turn["tool_calls"][0]["tool"], "time", "{turn}");
    assert_eq!(turn["tool_calls"][0]["status"], "ok", "{turn}");
    assert_eq!(
        tool["usage"]["completion_tokens"], turn["usage"]["output_tokens"],
        "usage is the turn's: {tool} {turn}"
    );

    Ok(())
}

fn assert_openai_errors(seen: &Value) {
    let errors = &seen["errors"];
    assert_eq!(errors["unknown_model"]["status"], 404, "{errors}");
    let unknown = error_object(&errors["unknown_model"]);
    assert_eq!(
        (&unknown["code"], &unknown["param"], &unknown["type"]),
        (
            &json!("model_not_found"),
            &json!("model"),
            &json!("invalid_request_error")
        )
    );
    assert_eq!(errors["client_tools"]["status"], 400, "{errors}");
    assert_eq!(error_object(&errors["client_tools"])["param"], "tools");
    assert_eq!(errors["bad_key"]["status"], 401, "{errors}");
    assert_eq!(error_object(&errors["bad_key"])["code"], "invalid_api_key");
}

async fn assert_responses(stack: &TestStack, seen: &Value) -> anyhow::Result<()> {
    // Responses: the second continues the first's session by previous_response_id.
    let responses = &seen["responses"];
    assert_eq!(
        responses["texts"],
        json!(["echo: remember the word cobalt", "echo: which word"]),
        "{responses}"
    );
    assert_eq!(responses["statuses"], json!(["completed", "completed"]));
    assert_eq!(responses["previous"], responses["ids"][0]);
    assert_eq!(responses["retrieved"], "echo: which word");
    assert_usage_counted(&responses["usage"], "input_tokens", "output_tokens");
    let mut response_sessions = Vec::new();
    for id in responses["ids"].as_array().context("ids")? {
        let (_, turn) = stack
            .get(
                0,
                &format!("/v1/turns/{}", turn_of(id.as_str().unwrap_or_default())),
            )
            .await?;
        response_sessions.push(turn["session_id"].clone());
    }
    assert_eq!(
        response_sessions[0], response_sessions[1],
        "{response_sessions:?}"
    );

    let stream = &seen["responses_stream"];
    let types = stream["types"].as_array().context("types")?;
    assert_eq!(types.first(), Some(&json!("response.created")), "{stream}");
    assert_eq!(types.last(), Some(&json!("response.completed")), "{stream}");
    assert!(
        stream["deltas"].as_u64().is_some_and(|deltas| deltas > 1),
        "{stream}"
    );
    assert_eq!(stream["text"], "echo: stream a response");
    assert_eq!(stream["completed"]["text"], "echo: stream a response");
    assert_usage_counted(
        &stream["completed"]["usage"],
        "input_tokens",
        "output_tokens",
    );
    let (_, streamed_turn) = stack
        .get(
            0,
            &format!(
                "/v1/turns/{}",
                turn_of(stream["completed"]["id"].as_str().unwrap_or_default())
            ),
        )
        .await?;
    assert_eq!(streamed_turn["session_id"], response_sessions[0]);

    Ok(())
}

async fn assert_audited(stack: &TestStack) -> anyhow::Result<()> {
    // Every turn was accepted through the one intake, audited with the key as actor.
    let accepted = stack
        .scalar("SELECT count(*) FROM audit_events WHERE action = 'message.accepted' AND actor LIKE 'key:%'")
        .await?;
    let turns = stack.scalar("SELECT count(*) FROM turns").await?;
    assert_eq!(accepted, turns, "one audited acceptance per turn");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_answers_with_the_first_turn() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..StackOptions::default()
    })
    .await?;
    let post = || {
        stack
            .http
            .post(stack.url(0, "/v1/chat/completions"))
            .bearer_auth(&stack.key)
            .header("Idempotency-Key", "openai-retry-1")
            .json(&json!({"model": "agent:default", "messages": [{"role": "user", "content": "once only"}]}))
            .send()
    };
    let first: Value = post().await?.error_for_status()?.json().await?;
    let second: Value = post().await?.error_for_status()?.json().await?;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "echo: once only"
    );
    assert_eq!(stack.scalar("SELECT count(*) FROM turns").await?, 1);

    // Bad input changes nothing and answers in OpenAI's shape.
    for (body, status, param) in [
        (
            json!({"model": "agent:default", "messages": []}),
            StatusCode::BAD_REQUEST,
            "messages",
        ),
        (
            json!({"model": "agent:default", "messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]}),
            StatusCode::BAD_REQUEST,
            "messages[0].role",
        ),
        (
            json!({"model": "agent:default", "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}),
            StatusCode::BAD_REQUEST,
            "frobnicate",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "model",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
            StatusCode::NOT_FOUND,
            "model",
        ),
    ] {
        let response = stack
            .http
            .post(stack.url(0, "/v1/chat/completions"))
            .bearer_auth(&stack.key)
            .json(&body)
            .send()
            .await?;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await?;
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty())
                && error["error"]["type"].is_string(),
            "{error}"
        );
    }
    let response = stack.http.post(stack.url(0, "/v1/responses")).bearer_auth(&stack.key)
        .json(&json!({"model": "agent:default", "input": "x", "previous_response_id": "resp_0190aaaa-0000-7000-8000-000000000000"})).send().await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.scalar("SELECT count(*) FROM turns").await?, 1);
    Ok(())
}

/// An agents folder of its own: `default`, and `careful`, whose `time` calls wait for a
/// person's approval.
fn agents_with_an_approval_gate() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("sable-openai-{}", uuid::Uuid::new_v4().simple()));
    for (relative, text) in [
        ("default/agent.toml", "[tools]\nallow = [\"time\"]\n"),
        ("default/AGENT.md", "You are default."),
        (
            "careful/agent.toml",
            "[tools]\nallow = [\"time\"]\nrequire_approval = [\"time\"]\n",
        ),
        ("careful/AGENT.md", "You ask before reading the clock."),
    ] {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(path, text)?;
    }
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_waiting_for_approval_answers_409_and_its_answer_lands_in_the_session()
-> anyhow::Result<()> {
    let agents = agents_with_an_approval_gate()?;
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![("SABLE_AGENTS_DIR", agents.display().to_string())],
        ..StackOptions::default()
    })
    .await?;
    let chat = |text: &str| {
        stack
            .http
            .post(stack.url(0, "/v1/chat/completions"))
            .bearer_auth(&stack.key)
            .header("X-Sable-Conversation", "gated-thread")
            .json(
                &json!({"model": "agent:careful", "messages": [{"role": "user", "content": text}]}),
            )
            .send()
    };
    let parked = chat("what time is it #tool=time").await?;
    assert_eq!(parked.status(), StatusCode::CONFLICT);
    assert_eq!(parked.headers()["x-should-retry"], "false");
    let turn_id = parked.headers()["x-sable-turn-id"].to_str()?.to_owned();
    let error: Value = parked.json().await?;
    assert_eq!(error["error"]["code"], "approval_required", "{error}");

    let approval =
        sable_testkit::wait_for("the approval", crate::support::TURN_TIMEOUT, || async {
            let (_, list) = stack.get(0, "/v1/approvals?status=pending").await.ok()?;
            list["approvals"]
                .as_array()?
                .iter()
                .find(|approval| approval["turn_id"] == turn_id.as_str())
                .cloned()
        })
        .await?;
    assert_eq!(approval["tool"], "time");
    let decided = stack
        .http
        .post(stack.url(
            0,
            &format!(
                "/v1/approvals/{}",
                approval["approval_id"].as_str().unwrap_or_default()
            ),
        ))
        .bearer_auth(&stack.key)
        .json(&json!({"decision": "approve"}))
        .send()
        .await?;
    assert_eq!(decided.status(), StatusCode::OK);
    let done = stack.wait_for_final_turn(&turn_id).await?;
    assert!(
        done["reply"]["text"]
            .as_str()
            .is_some_and(|text| text.starts_with("tool said: ")),
        "{done}"
    );

    let next = chat("thanks").await?;
    assert_eq!(next.status(), StatusCode::OK);
    let session = next.headers()["x-sable-session-id"].to_str()?.to_owned();
    let answer: Value = next.json().await?;
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: thanks");
    assert_eq!(done["session_id"], session.as_str());
    Ok(())
}
