//! Many orgs on one deployment, each with its own configuration: its own agents (a
//! hundred orgs, each answered by its own agent's prompt), its own provider key (sent on
//! its turns only, and shown in no answer, log line or span), and changes seen by the
//! next turn.

use anyhow::Context;
use futures::StreamExt;
use reqwest::StatusCode;
use sable_testkit::{OtlpReceiver, wait_for};
use serde_json::{Value, json};

use crate::support::{StackOptions, TURN_TIMEOUT, TestStack, read_json};

/// A stack whose roles can seal and open providers' keys.
async fn stack_with_secrets(extra: Vec<(&'static str, String)>) -> anyhow::Result<TestStack> {
    let mut env = vec![(
        "SABLE_SECRETS_KEY",
        sable_store::SecretsKey::generate_base64(),
    )];
    env.extend(extra);
    TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env,
        ..Default::default()
    })
    .await
}

/// An org made through the API with the platform key, and an admin key of it.
struct Org {
    key: String,
}

async fn create_org(stack: &TestStack, platform: &str, name: &str) -> anyhow::Result<Org> {
    let (status, org) = send(
        stack,
        platform,
        "POST",
        "/v1/orgs",
        Some(json!({"name": name})),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "create org: {status} {org}");
    let id = org["id"].as_str().context("org id")?.to_owned();
    let (status, key) = send(
        stack,
        platform,
        "POST",
        &format!("/v1/orgs/{id}/keys"),
        Some(json!({"name": "admin", "role": "admin"})),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "create key: {status} {key}");
    Ok(Org {
        key: key["key"].as_str().context("key")?.to_owned(),
    })
}

/// Sends one request with `key` to gateway 0; the answer's status and JSON body.
async fn send(
    stack: &TestStack,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut request = stack
        .http
        .request(method, stack.url(0, path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read_json(request.send().await?).await
}

/// Asks `agent` of the org and waits for the reply's text.
async fn ask(stack: &TestStack, key: &str, agent: &str, text: &str) -> anyhow::Result<String> {
    let (status, answer) = send(
        stack,
        key,
        "POST",
        "/v1/messages",
        Some(json!({"text": text, "agent": agent, "wait": true})),
    )
    .await?;
    let answer = if status == StatusCode::OK {
        answer
    } else {
        anyhow::ensure!(status == StatusCode::ACCEPTED, "ask: {status} {answer}");
        let turn_id = answer["turn_id"].as_str().context("turn id")?.to_owned();
        wait_for("the turn to finish", TURN_TIMEOUT, || {
            let path = format!("/v1/turns/{turn_id}");
            async move {
                let (status, turn) = send(stack, key, "GET", &path, None).await.ok()?;
                (status == StatusCode::OK && turn["status"] == "done").then_some(turn)
            }
        })
        .await?
    };
    answer["reply"]["text"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no reply in {answer}"))
}

#[tokio::test]
async fn a_hundred_orgs_on_one_deployment_are_each_answered_by_their_own_agent()
-> anyhow::Result<()> {
    let stack = stack_with_secrets(Vec::new()).await?;
    let platform = stack
        .sable(&["admin", "key", "create", "--platform"])
        .await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let orgs: Vec<(Org, String)> = futures::stream::iter(0..100)
        .map(|index| {
            let (stack, platform, run) = (&stack, &platform, &run);
            async move {
                let org = create_org(stack, platform, &format!("tenant-{index}")).await?;
                let marker = format!("MARKER-{index}-{run}");
                let (status, body) = send(
                    stack,
                    &org.key,
                    "PUT",
                    "/v1/agents/helper",
                    Some(json!({
                        "name": "Helper",
                        "prompt": format!("{marker}\nYou are the helper of tenant {index}."),
                    })),
                )
                .await?;
                anyhow::ensure!(status == StatusCode::CREATED, "put agent: {status} {body}");
                anyhow::Ok((org, marker))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;

    let replies: Vec<(String, String)> = futures::stream::iter(&orgs)
        .map(|(org, marker)| {
            let stack = &stack;
            async move {
                let reply = ask(stack, &org.key, "helper", "#system").await?;
                anyhow::Ok((marker.clone(), reply))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let wrong: Vec<String> = replies
        .iter()
        .filter(|(marker, reply)| *reply != format!("system: {marker}"))
        .map(|(marker, reply)| format!("{marker}: {reply}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of 100 orgs were answered by another prompt:\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );

    // Each org lists its own `helper` (and the deployment's agents); the stack's own org,
    // which configured nothing, has no `helper` and is still answered by its default.
    let (first, _) = &orgs[0];
    let (_, listed) = send(&stack, &first.key, "GET", "/v1/agents", None).await?;
    let ids: Vec<&str> = listed["agents"]
        .as_array()
        .context("agents")?
        .iter()
        .filter_map(|agent| agent["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"helper") && ids.contains(&"default"),
        "{listed}"
    );
    let (status, body) = send(&stack, &stack.key, "GET", "/v1/agents/helper", None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = stack
        .post_message(0, &json!({"text": "hello", "agent": "helper"}))
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_agent")),
        "{body}"
    );
    let default = ask(&stack, &stack.key, "default", "hello there").await?;
    assert_eq!(default, "echo: hello there");
    Ok(())
}

#[tokio::test]
async fn an_orgs_provider_key_goes_only_to_its_own_turns_and_is_shown_nowhere() -> anyhow::Result<()>
{
    let receiver = OtlpReceiver::start().await?;
    let stack = stack_with_secrets(vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("SABLE_CAPTURE_CONTENT", "full".into()),
    ])
    .await?;
    let platform = stack
        .sable(&["admin", "key", "create", "--platform"])
        .await?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let mut seen = Vec::new();
    let mut orgs = Vec::new();
    for name in ["alpha", "beta"] {
        let org = create_org(&stack, &platform, name).await?;
        let secret = format!("sk-{name}-{run}-0123456789abcdef");
        // Replaces the deployment's `openai` for this org only, key included.
        let (status, body) = send(
            &stack,
            &org.key,
            "PUT",
            "/v1/providers/openai",
            Some(json!({
                "kind": "openai",
                "base_url": stack.provider.base_url,
                "api_key": secret,
            })),
        )
        .await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        seen.push(body);
        orgs.push((name, org, secret));
    }

    for round in 0..3 {
        for (name, org, _) in &orgs {
            let reply = ask(&stack, &org.key, "default", &format!("from-{name}-{round}")).await?;
            assert_eq!(reply, format!("echo: from-{name}-{round}"));
        }
        let reply = ask(&stack, &stack.key, "default", &format!("from-acme-{round}")).await?;
        assert_eq!(reply, format!("echo: from-acme-{round}"));
    }

    let mut sent = 0;
    for (credential, request) in stack.provider.requests_with_credentials() {
        let text = request.to_string();
        let expected = if text.contains("from-alpha") {
            format!("Bearer {}", orgs[0].2)
        } else if text.contains("from-beta") {
            format!("Bearer {}", orgs[1].2)
        } else if text.contains("from-acme") {
            // The org that configured nothing: the deployment's key.
            "Bearer test-key".to_owned()
        } else {
            continue;
        };
        sent += 1;
        assert_eq!(credential.as_deref(), Some(expected.as_str()), "{text}");
    }
    assert_eq!(sent, 9, "every turn's provider call was recorded");

    for (_, org, _) in &orgs {
        seen.extend(readable_by(&stack, &org.key).await?);
    }
    let (_, providers) = send(&stack, &orgs[0].1.key, "GET", "/v1/providers", None).await?;
    let openai = providers["providers"]
        .as_array()
        .context("providers")?
        .iter()
        .find(|provider| provider["name"] == "openai")
        .context("openai")?;
    assert_eq!(
        (openai["source"].as_str(), openai["api_key_set"].as_bool()),
        (Some("org"), Some(true)),
        "{providers}"
    );
    // Spans of the turns have been exported (content capture is on: prompts are in them).
    wait_for("the turns' spans", TURN_TIMEOUT, || async {
        let spans = receiver.spans();
        (spans
            .iter()
            .filter(|span| span.name.starts_with("chat "))
            .count()
            >= 9)
            .then_some(())
    })
    .await?;
    let answers = serde_json::to_string(&seen)?;
    let spans = format!("{:?}", receiver.spans());
    let logs = stack.full_logs()?;
    for (name, _, secret) in &orgs {
        assert!(
            !answers.contains(secret.as_str()),
            "{name}'s key in an API answer"
        );
        assert!(!spans.contains(secret.as_str()), "{name}'s key in a span");
        assert!(
            !logs.contains(secret.as_str()),
            "{name}'s key in a log line"
        );
        // Not even the distinctive part of it.
        assert!(!logs.contains(run), "{name}'s key's part in a log line");
    }
    Ok(())
}

#[tokio::test]
async fn a_change_to_an_orgs_agent_is_seen_by_its_next_turn() -> anyhow::Result<()> {
    let stack = stack_with_secrets(Vec::new()).await?;
    let admin = stack.key_with_role("admin").await?;
    for version in 1..=3 {
        let (status, body) = send(
            &stack,
            &admin,
            "PUT",
            "/v1/agents/support",
            Some(json!({"prompt": format!("support prompt v{version}")})),
        )
        .await?;
        assert!(status.is_success(), "{status} {body}");
        // No wait, no restart: the very next turn runs with it.
        let reply = ask(&stack, &admin, "support", "#system").await?;
        assert_eq!(reply, format!("system: support prompt v{version}"));
    }
    let (status, body) = send(&stack, &admin, "DELETE", "/v1/agents/support", None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = stack
        .post_message_with_key(0, &admin, &json!({"text": "hi", "agent": "support"}))
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    Ok(())
}

/// What an admin of an org can read back: its providers (without their keys), audit,
/// sessions, settings, every session's messages and every turn.
async fn readable_by(stack: &TestStack, key: &str) -> anyhow::Result<Vec<Value>> {
    let mut seen = Vec::new();
    for path in [
        "/v1/providers",
        "/v1/audit",
        "/v1/sessions",
        "/v1/org-settings",
    ] {
        let (status, body) = send(stack, key, "GET", path, None).await?;
        anyhow::ensure!(status == StatusCode::OK, "{path}: {status} {body}");
        seen.push(body);
    }
    let (_, sessions) = send(stack, key, "GET", "/v1/sessions", None).await?;
    for session in sessions["sessions"].as_array().context("sessions")? {
        let id = session["id"].as_str().context("session id")?;
        let path = format!("/v1/sessions/{id}/messages");
        let (_, messages) = send(stack, key, "GET", &path, None).await?;
        for turn_id in messages["messages"]
            .as_array()
            .context("messages")?
            .iter()
            .filter_map(|message| message["turn_id"].as_str())
        {
            let path = format!("/v1/turns/{turn_id}");
            seen.push(send(stack, key, "GET", &path, None).await?.1);
        }
        seen.push(messages);
    }
    Ok(seen)
}
