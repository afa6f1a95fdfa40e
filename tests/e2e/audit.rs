//! The audit trail seen through the API and `sable admin audit`: a turn with a failover,
//! a tool round and an approval leaves every step on record with its actor and trace and
//! none of its content; only admin keys read it, each org only its own, page by page
//! without repeats while events keep arriving; an edit made behind the database's back
//! is named by `sable admin audit verify`.

use std::collections::{BTreeMap, HashSet};

use reqwest::StatusCode;
use sable_testkit::{FakeToolCall, Script, workspace_root};
use serde_json::{Value, json};

use crate::provider_layer::MODELS_WITH_FALLBACK;
use crate::support::{StackOptions, TURN_TIMEOUT, TestStack, assert_error, run_sable};

/// Seal every 100 ms so a test sees sequence numbers within moments.
const FAST_SEALING: (&str, &str) = ("SABLE_AUDIT_SEAL_INTERVAL_MS", "100");

/// Agents `default` and `careful` (whose `memory` calls need approval) and a models file
/// whose default profile fails over to `backup`.
fn config() -> anyhow::Result<Vec<(&'static str, String)>> {
    let dir = std::env::temp_dir().join(format!("sable-audit-{}", uuid::Uuid::new_v4().simple()));
    for (agent, toml) in [
        (
            "default",
            std::fs::read_to_string(workspace_root().join("agents/default/agent.toml"))?,
        ),
        (
            "careful",
            "[tools]\nallow = [\"memory\"]\nrequire_approval = [\"memory\"]\n".to_owned(),
        ),
    ] {
        let folder = dir.join("agents").join(agent);
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join("agent.toml"), toml)?;
        std::fs::write(folder.join("AGENT.md"), format!("You are {agent}."))?;
    }
    std::fs::write(dir.join("models.toml"), MODELS_WITH_FALLBACK)?;
    Ok(vec![
        ("SABLE_AGENTS_DIR", dir.join("agents").display().to_string()),
        (
            "SABLE_MODELS_FILE",
            dir.join("models.toml").display().to_string(),
        ),
        (FAST_SEALING.0, FAST_SEALING.1.to_owned()),
    ])
}

async fn start(env: Vec<(&'static str, String)>) -> anyhow::Result<TestStack> {
    TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env,
        ..Default::default()
    })
    .await
}

async fn get(stack: &TestStack, path: &str, key: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = stack
        .http
        .get(stack.url(0, path))
        .bearer_auth(key)
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

/// An admin key of the stack's org named `name`, and its id.
async fn admin_key(stack: &TestStack, name: &str) -> anyhow::Result<(String, String)> {
    let key = stack
        .sable(&[
            "admin",
            "key",
            "create",
            "--org",
            &stack.org_id,
            "--admin",
            "--name",
            name,
        ])
        .await?;
    let (id,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM api_keys WHERE name = $1")
        .bind(name)
        .fetch_one(stack.database.store.pool())
        .await?;
    Ok((key, id.to_string()))
}

/// Every event of the org the key sees under `query`, following `next_cursor`.
async fn every_event(stack: &TestStack, key: &str, query: &str) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/audit?{query}&limit=100&cursor={cursor}"),
            None => format!("/v1/audit?{query}&limit=100"),
        };
        let (status, page) = get(stack, &path, key).await?;
        anyhow::ensure!(status == StatusCode::OK, "{status}: {page}");
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(events),
        }
    }
}

fn count_by_action(events: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts
            .entry(event["action"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// Runs one turn of `careful` whose default profile fails over, whose `memory` call waits
/// for approval and is approved by `key` (with a request id); returns the ended turn and
/// the approval's id.
async fn an_approved_turn_after_a_failover(
    stack: &TestStack,
    key: &str,
) -> anyhow::Result<(Value, String)> {
    stack.provider.fail_model("fake-model", 503);
    stack.provider.push(Script::ToolCalls {
        text: "Let me note that.".into(),
        calls: vec![FakeToolCall::new(
            "m1",
            "memory",
            json!({"action": "append", "text": "likes oolong tea"}),
        )],
    });
    stack
        .provider
        .push(Script::Reply("Noted, a quiet reply.".into()));
    let (status, accepted) = stack
        .post_message_with_key(
            0,
            key,
            &json!({"text": "remember my private preference", "agent": "careful",
                    "conversation": {"id": "chat-7", "user_id": "ada"}}),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::ACCEPTED, "{status}: {accepted}");
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let approval = sable_testkit::wait_for("the approval", TURN_TIMEOUT, || async {
        let (_, list) = get(stack, "/v1/approvals?status=pending", key).await.ok()?;
        list["approvals"].as_array()?.first().cloned()
    })
    .await?;
    let approval_id = approval["approval_id"].as_str().unwrap().to_owned();
    let decided = stack
        .http
        .post(stack.url(0, &format!("/v1/approvals/{approval_id}")))
        .bearer_auth(key)
        .header("x-request-id", "req-approve-1")
        .json(&json!({"decision": "approve"}))
        .send()
        .await?;
    anyhow::ensure!(decided.status() == StatusCode::OK, "decision refused");
    let turn = stack.wait_for_final_turn(&turn_id).await?;
    anyhow::ensure!(turn["status"] == "done", "{turn}");
    Ok((turn, approval_id))
}

#[tokio::test]
async fn a_turn_with_a_failover_a_tool_round_and_an_approval_is_audited_step_by_step_without_its_content()
-> anyhow::Result<()> {
    let stack = start(config()?).await?;
    let (key, key_id) = admin_key(&stack, "auditor").await?;
    let (turn, approval_id) = an_approved_turn_after_a_failover(&stack, &key).await?;
    let turn_id = turn["turn_id"].as_str().unwrap().to_owned();
    // Every event of the turn, sealed.
    let events = sable_testkit::wait_for("the turn's events sealed", TURN_TIMEOUT, || async {
        let events = every_event(&stack, &key, &format!("turn_id={turn_id}"))
            .await
            .ok()?;
        let finished = events
            .iter()
            .any(|event| event["action"] == "turn.finished");
        (finished && events.iter().all(|event| event["seq"].is_i64())).then_some(events)
    })
    .await?;
    let counts = count_by_action(&events);
    let provider_calls = turn["provider_calls"].as_array().unwrap().len();
    assert!(
        provider_calls >= 5,
        "three failures, the fallback, the answer: {turn}"
    );
    let expected: BTreeMap<String, usize> = [
        ("message.accepted", 1),
        ("turn.started", 2),
        ("provider.call", provider_calls),
        ("tool.started", 1),
        ("approval.requested", 1),
        ("approval.granted", 1),
        ("tool.completed", 1),
        ("turn.finished", 1),
    ]
    .into_iter()
    .map(|(action, count)| (action.to_owned(), count))
    .collect();
    assert_eq!(counts, expected, "{events:#?}");

    let by = |action: &str| {
        events
            .iter()
            .find(|event| event["action"] == action)
            .unwrap_or_else(|| panic!("no {action}"))
    };
    let actor = format!("key:{key_id}");
    assert_eq!(by("message.accepted")["actor"], actor);
    assert_eq!(by("message.accepted")["actor_name"], "auditor");
    assert_eq!(by("message.accepted")["details"]["channel"], "api");
    let granted = by("approval.granted");
    assert_eq!(granted["actor"], actor);
    assert_eq!(granted["request_id"], "req-approve-1");
    assert_eq!(
        granted["subject"],
        json!({"kind": "approval", "id": approval_id})
    );
    assert_eq!(by("turn.started")["actor"], "system");
    let tool = by("tool.completed");
    assert_eq!(tool["subject"], json!({"kind": "tool", "id": "memory"}));
    assert_eq!(tool["outcome"], "ok");
    assert_eq!(tool["details"]["source"], "builtin");
    let failovers: Vec<&Value> = events
        .iter()
        .filter(|event| event["action"] == "provider.call" && event["outcome"] == "error")
        .collect();
    assert_eq!(failovers.len(), 3, "{failovers:#?}");
    assert!(
        events
            .iter()
            .any(|event| event["details"]["failover_reason"] == "provider_server_error"),
        "the failover reason is on record"
    );
    assert!(
        events.iter().any(|event| event["action"] == "provider.call"
            && event["outcome"] == "ok"
            && event["subject"]["id"] == "backup"),
        "the fallback answered"
    );
    let trace_id = turn["trace_id"].as_str().expect("the turn's trace id");
    for event in &events {
        assert_eq!(event["trace_id"], trace_id, "{event}");
        assert_eq!(event["session_id"], turn["session_id"], "{event}");
    }
    // Capture is off: nothing of the prompt, the tool's arguments or the reply.
    let text = serde_json::to_string(&events)?;
    for content in ["private preference", "oolong", "quiet reply", "Let me note"] {
        assert!(!text.contains(content), "{content} leaked into the audit");
    }
    Ok(())
}

#[tokio::test]
async fn only_operators_and_above_read_the_audit_each_org_its_own_and_pages_repeat_nothing_while_events_arrive()
-> anyhow::Result<()> {
    let stack = start(vec![(FAST_SEALING.0, FAST_SEALING.1.to_owned())]).await?;
    let (key, _) = admin_key(&stack, "auditor").await?;
    refusals(&stack, &key).await?;

    let other_org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    let other_key = stack
        .sable(&["admin", "key", "create", "--org", &other_org, "--admin"])
        .await?;
    for text in ["one", "two", "three", "four", "five", "six", "seven"] {
        stack
            .post_message_with_key(0, &key, &json!({"text": text}))
            .await?;
        stack
            .post_message_with_key(0, &other_key, &json!({"text": text}))
            .await?;
    }
    let present: HashSet<String> = every_event(&stack, &key, "action=message.accepted")
        .await?
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(present.len(), 7);

    // Three at a time, with a new message between pages.
    let mut seen = Vec::new();
    let mut path = "/v1/audit?action=message.accepted&limit=3".to_owned();
    loop {
        let (status, page) = get(&stack, &path, &key).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["id"].as_str().unwrap().to_owned()),
        );
        stack
            .post_message_with_key(0, &key, &json!({"text": "meanwhile"}))
            .await?;
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/audit?action=message.accepted&limit=3&cursor={cursor}")
            }
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event came twice: {seen:?}");
    assert!(
        present.is_subset(&unique),
        "an event that was there was skipped"
    );

    // The other org sees its own seven acceptances and nothing of this org's.
    let theirs = every_event(&stack, &other_key, "action=message.accepted").await?;
    assert_eq!(theirs.len(), 7);
    assert!(
        theirs
            .iter()
            .all(|event| !present.contains(event["id"].as_str().unwrap()))
    );

    // The export streams the same events as NDJSON.
    let exported = export_ids(&stack, &key, "action=message.accepted").await?;
    assert!(present.is_subset(&exported));
    Ok(())
}

#[tokio::test]
async fn sable_admin_audit_verify_names_the_first_sequence_number_an_owner_edited()
-> anyhow::Result<()> {
    let stack = start(vec![(FAST_SEALING.0, FAST_SEALING.1.to_owned())]).await?;
    for text in ["a", "b", "c", "d"] {
        let (_, answer) = stack
            .post_message(0, &json!({"text": text, "wait": true}))
            .await?;
        assert_eq!(answer["status"], "done", "{answer}");
    }
    let env = stack.env();
    let verify = ["admin", "audit", "verify", "--org", stack.org_id.as_str()];
    let intact = sable_testkit::wait_for("every event sealed", TURN_TIMEOUT, || async {
        let output = run_sable(&verify, &env).await.ok()?;
        output.contains("; 0 not sealed yet").then_some(output)
    })
    .await?;
    assert!(intact.starts_with("intact: "), "{intact}");

    // The table's owner turns the trigger off and rewrites the outcome of event 5.
    let owner = stack.database.owner_pool().await?;
    let mut tx = owner.begin().await?;
    sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        .execute(&mut *tx)
        .await?;
    let edited = sqlx::query(
        "UPDATE audit_events SET outcome = 'error' WHERE id = \
         (SELECT e.id FROM audit_events e JOIN orgs o ON o.id = e.org_id WHERE o.name = 'acme' \
          ORDER BY e.xid, e.id OFFSET 4 LIMIT 1)",
    )
    .execute(&mut *tx)
    .await?;
    assert_eq!(edited.rows_affected(), 1);
    sqlx::query("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let broken = tokio::process::Command::new(crate::support::sable_binary())
        .args(verify)
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .current_dir(workspace_root())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert!(!broken.status.success(), "verify fails on a broken chain");
    assert!(
        stdout.contains("broken at seq 5"),
        "stdout: {stdout} stderr: {}",
        String::from_utf8_lossy(&broken.stderr)
    );
    Ok(())
}

/// A member key is refused (the audit is for operators and above), and so is each
/// malformed filter.
async fn refusals(stack: &TestStack, key: &str) -> anyhow::Result<()> {
    let member = stack.key_with_role("member").await?;
    assert_error(
        &get(stack, "/v1/audit", &member).await?,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &get(stack, "/v1/audit/export", &member).await?,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    for bad in [
        "/v1/audit?limit=0",
        "/v1/audit?cursor=nonsense",
        "/v1/audit?since=yesterday",
        "/v1/audit?outcome=maybe",
        "/v1/audit?turn_id=7",
    ] {
        let answer = get(stack, bad, key).await?;
        assert_error(
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }

    Ok(())
}

/// The ids of the events `GET /v1/audit/export` streams under `query`.
async fn export_ids(stack: &TestStack, key: &str, query: &str) -> anyhow::Result<HashSet<String>> {
    let export = stack
        .http
        .get(stack.url(0, &format!("/v1/audit/export?{query}")))
        .bearer_auth(key)
        .send()
        .await?;
    assert_eq!(export.status(), StatusCode::OK);
    assert_eq!(
        export.headers()["content-type"].to_str()?,
        "application/x-ndjson"
    );
    Ok(export
        .text()
        .await?
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("one JSON object per line");
            event["id"].as_str().unwrap().to_owned()
        })
        .collect())
}
