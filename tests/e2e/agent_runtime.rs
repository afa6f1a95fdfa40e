//! The agent runtime seen through turns: tool rounds run concurrently and are persisted,
//! the round limit and repeat detection, approvals (approve, deny, expiry, a worker
//! restart while parked, session scope), skills, the context budget, and bindings
//! recorded on the turn. The fake model is scripted; tools, store and services are real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use sable_testkit::{FakeToolCall, Script, eventually, workspace_root};
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::support::{StackOptions, TURN_TIMEOUT, TestStack};

/// A deployment's config folder of the test's own: agents, skills, bindings, models.
struct Config {
    dir: std::path::PathBuf,
}

impl Config {
    fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("sable-runtime-{}", uuid::Uuid::new_v4().simple()));
        let config = Self { dir };
        config.agent(
            "default",
            &std::fs::read_to_string(workspace_root().join("agents/default/agent.toml"))?,
        )?;
        config.write("models.toml", MODELS)?;
        config.write("bindings.toml", "")?;
        config.skill(
            "weather",
            "Forecasts for a city",
            "# Weather\nCall http_fetch on the forecast API.",
        )?;
        config.skill("secret", "Internal runbook", "# Do not show")?;
        Ok(config)
    }

    fn write(&self, relative: &str, text: &str) -> anyhow::Result<()> {
        let path = self.dir.join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(path, text)?;
        Ok(())
    }

    fn agent(&self, id: &str, agent_toml: &str) -> anyhow::Result<()> {
        self.write(&format!("agents/{id}/agent.toml"), agent_toml)?;
        self.write(&format!("agents/{id}/AGENT.md"), &format!("You are {id}."))
    }

    fn skill(&self, name: &str, description: &str, body: &str) -> anyhow::Result<()> {
        self.write(
            &format!("skills/{name}/SKILL.md"),
            &format!("---\nname: {name}\ndescription: {description}\n---\n{body}\n"),
        )
    }

    fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        let mut env = vec![
            ("SABLE_AGENTS_DIR", path("agents")),
            ("SABLE_SKILLS_DIR", path("skills")),
            ("SABLE_BINDINGS_FILE", path("bindings.toml")),
            ("SABLE_MODELS_FILE", path("models.toml")),
        ];
        env.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
        env
    }
}

const MODELS: &str = r#"
[retry]
max_retries = 0

[profiles.default]
provider = "openai"
model = "fake-model"

[profiles.tiny]
provider = "openai"
model = "tiny-model"
context_window = 600
"#;

async fn start(config: &Config, extra: &[(&'static str, &str)]) -> anyhow::Result<TestStack> {
    TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: config.env(extra),
        ..Default::default()
    })
    .await
}

/// A stack whose config adds one agent.
async fn stack_with_agent(
    id: &str,
    agent_toml: &str,
    extra: &[(&'static str, &str)],
) -> anyhow::Result<TestStack> {
    let config = Config::new()?;
    config.agent(id, agent_toml)?;
    start(&config, extra).await
}

fn call(id: &str, name: &str, arguments: Value) -> FakeToolCall {
    FakeToolCall::new(id, name, arguments)
}

async fn send(stack: &TestStack, body: Value) -> anyhow::Result<Value> {
    let (status, accepted) = stack.post_message(0, &body).await?;
    anyhow::ensure!(status == StatusCode::ACCEPTED, "{status}: {accepted}");
    Ok(accepted)
}

async fn turn(stack: &TestStack, turn_id: &str) -> anyhow::Result<Value> {
    Ok(stack.get(0, &format!("/v1/turns/{turn_id}")).await?.1)
}

/// Waits until the turn is parked and returns its pending approval.
async fn pending_approval(stack: &TestStack, turn_id: &str) -> anyhow::Result<Value> {
    sable_testkit::wait_for("the turn to wait for approval", TURN_TIMEOUT, || async {
        let (_, list) = stack.get(0, "/v1/approvals?status=pending").await.ok()?;
        list["approvals"]
            .as_array()?
            .iter()
            .find(|approval| approval["turn_id"] == turn_id)
            .cloned()
    })
    .await
}

async fn decide(
    stack: &TestStack,
    approval_id: &str,
    body: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = stack
        .http
        .post(stack.url(0, &format!("/v1/approvals/{approval_id}")))
        .bearer_auth(&stack.key)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

/// The tool messages of a provider request, as (content) in order.
fn tool_results(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|message| message["role"] == "tool")
        .map(|message| message["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A local web server that `http_fetch` may reach (the stack allows 127.0.0.1/32): `/a`
/// and `/b` answer only once both are being requested at the same time, proving the
/// calls ran concurrently; a lone request gets 409 after two seconds.
async fn rendezvous_server() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let barrier = Arc::new(Barrier::new(2));
    let hits = Arc::new(AtomicUsize::new(0));
    let page = |name: &'static str| {
        let (barrier, hits) = (barrier.clone(), hits.clone());
        axum::routing::get(move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            match tokio::time::timeout(Duration::from_secs(2), barrier.wait()).await {
                Ok(_) => (
                    StatusCode::OK,
                    format!("<html><body><p>page {name} says hello</p></body></html>"),
                ),
                Err(_) => (StatusCode::CONFLICT, "alone".to_owned()),
            }
        })
    };
    let app = axum::Router::new()
        .route("/a", page("a"))
        .route("/b", page("b"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, hits))
}

#[tokio::test]
async fn parallel_tool_calls_run_concurrently_are_persisted_and_the_answer_is_delivered()
-> anyhow::Result<()> {
    let config = Config::new()?;
    config.agent("tooler", "[tools]\nallow = [\"time\", \"http_fetch\"]\n")?;
    let stack = start(&config, &[("SABLE_HTTP_FETCH_ALLOW", "[\"127.0.0.1/32\"]")]).await?;
    let (site, hits) = rendezvous_server().await?;
    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![
            call("c1", "time", json!({"timezone": "Europe/Paris"})),
            call("c2", "http_fetch", json!({"url": format!("{site}/a")})),
            call("c3", "http_fetch", json!({"url": format!("{site}/b")})),
        ],
    });
    stack
        .provider
        .push(Script::Reply("It is late and both pages say hello.".into()));

    let (status, answer) = stack
        .post_message(0, &json!({"text": "what time is it, and what do the pages say?", "agent": "tooler", "wait": true}))
        .await?;

    assert_eq!(status, StatusCode::OK, "{answer}\n{}", stack.logs());
    assert_eq!(
        answer["reply"]["text"],
        "It is late and both pages say hello."
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let turn = turn(&stack, answer["turn_id"].as_str().unwrap()).await?;
    let calls = turn["tool_calls"].as_array().expect("tool calls");
    assert_eq!(calls.len(), 3, "{turn}");
    for call in calls {
        assert_eq!(call["status"], "ok", "{call}");
        assert_eq!(call["round"], 1);
        assert!(
            call["started_at"].is_string() && call["duration_ms"].is_i64(),
            "{call}"
        );
    }
    let steps: Vec<&str> = turn["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["step"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        steps,
        [
            "queued",
            "started",
            "provider_call",
            "tool_call",
            "tool_call",
            "tool_call",
            "provider_call",
            "finished"
        ],
        "{turn}"
    );
    assert!(
        calls[0]["result"]
            .as_str()
            .unwrap()
            .contains("Europe/Paris"),
        "{turn}"
    );
    // The model saw every result, in call order, before answering.
    let requests = stack.provider.requests();
    let results = tool_results(requests.last().unwrap());
    assert_eq!(results.len(), 3);
    assert!(
        results[1].contains("page a says hello") && results[2].contains("page b says hello"),
        "{results:?}"
    );
    assert_eq!(
        stack
            .scalar(&format!(
                "SELECT count(*) FROM deliveries WHERE turn_id = '{}'",
                answer["turn_id"].as_str().unwrap()
            ))
            .await?,
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_model_that_keeps_calling_tools_stops_at_the_round_limit_and_a_repeated_call_sooner()
-> anyhow::Result<()> {
    let stack = stack_with_agent(
        "looper",
        "[tools]\nallow = [\"time\"]\n[limits]\nmax_tool_rounds = 3\n",
        &[],
    )
    .await?;
    for zone in ["UTC", "Asia/Tokyo", "Europe/Paris", "America/Lima"] {
        stack.provider.push(Script::ToolCalls {
            text: String::new(),
            calls: vec![call(zone, "time", json!({"timezone": zone}))],
        });
    }
    let (_, answer) = stack
        .post_message(0, &json!({"text": "loop", "agent": "looper", "wait": true}))
        .await?;
    let limited = turn(&stack, answer["turn_id"].as_str().unwrap()).await?;
    assert_eq!(limited["status"], "failed", "{limited}");
    assert_eq!(limited["error"]["code"], "tool_round_limit");
    assert!(
        answer["reply"]["text"]
            .as_str()
            .unwrap()
            .contains("3 rounds of tool calls"),
        "{answer}"
    );
    assert_eq!(limited["tool_calls"].as_array().unwrap().len(), 3);

    assert_eq!(stack.provider.request_count(), 4);
    let before = stack.provider.request_count();
    for _ in 0..3 {
        stack.provider.push(Script::ToolCalls {
            text: String::new(),
            calls: vec![call("same", "time", json!({"timezone": "UTC"}))],
        });
    }
    let (_, answer) = stack
        .post_message(
            0,
            &json!({"text": "repeat", "agent": "looper", "wait": true}),
        )
        .await?;
    let repeated = turn(&stack, answer["turn_id"].as_str().unwrap()).await?;
    assert_eq!(
        repeated["error"]["code"], "tool_call_repeated",
        "{repeated}"
    );
    assert_eq!(
        repeated["tool_calls"].as_array().unwrap().len(),
        2,
        "the third identical call never ran"
    );
    assert_eq!(stack.provider.request_count() - before, 3);
    Ok(())
}

#[tokio::test]
async fn an_approved_call_runs_exactly_once_after_a_worker_restart_and_session_scope_skips_the_next_approval()
-> anyhow::Result<()> {
    let mut stack = stack_with_agent(
        "careful",
        "[tools]\nallow = [\"memory\"]\nrequire_approval = [\"memory\"]\n",
        &[],
    )
    .await?;
    stack.provider.push(Script::ToolCalls {
        text: "Let me note that.".into(),
        calls: vec![call(
            "m1",
            "memory",
            json!({"action": "append", "text": "likes green tea"}),
        )],
    });
    stack.provider.push(Script::Reply("Noted.".into()));
    let conversation = json!({"id": "chat-1", "user_id": "ada"});
    let accepted = send(&stack, json!({"text": "remember I like green tea", "agent": "careful", "conversation": conversation})).await?;
    let turn_id = accepted["turn_id"].as_str().unwrap();
    let approval = pending_approval(&stack, turn_id).await?;
    assert_eq!(approval["tool"], "memory");
    assert_eq!(approval["arguments"]["text"], "likes green tea");
    assert_eq!(turn(&stack, turn_id).await?["status"], "waiting_approval");
    assert_eq!(stack.scalar("SELECT count(*) FROM memory_notes").await?, 0);

    // A worker restart while parked changes nothing: no worker holds the turn.
    stack.workers.remove(0).kill().await;
    stack.spawn_worker().await?;
    assert_eq!(turn(&stack, turn_id).await?["status"], "waiting_approval");

    let approval_id = approval["approval_id"].as_str().unwrap();
    let (status, decided) = decide(
        &stack,
        approval_id,
        json!({"decision": "approve", "scope": "session"}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let done = stack.wait_for_final_turn(turn_id).await?;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["reply"]["text"], "Noted.");
    assert_eq!(done["tool_calls"][0]["status"], "ok", "{done}");
    assert_eq!(done["tool_calls"][0]["approval"]["status"], "approved");
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM memory_notes WHERE content = 'likes green tea'")
            .await?,
        1
    );
    eventually("the reply to be delivered", TURN_TIMEOUT, || async {
        stack
            .scalar(&format!("SELECT count(*) FROM deliveries WHERE turn_id = '{turn_id}' AND status = 'delivered'"))
            .await
            .is_ok_and(|count| count == 1)
    })
    .await?;
    // Deciding twice is refused and changes nothing.
    let again = decide(&stack, approval_id, json!({"decision": "deny"})).await?;
    crate::support::assert_error(&again, StatusCode::CONFLICT, "conflict");

    // Approved for the session: the next call of the tool in this session just runs.
    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![call("m2", "memory", json!({"action": "get"}))],
    });
    stack
        .provider
        .push(Script::Reply("You like green tea.".into()));
    let (_, answer) = stack
        .post_message(0, &json!({"text": "what do I like?", "agent": "careful", "conversation": conversation, "wait": true}))
        .await?;
    assert_eq!(answer["reply"]["text"], "You like green tea.", "{answer}");
    assert_eq!(stack.scalar("SELECT count(*) FROM approvals").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_denied_call_is_reported_to_the_model_and_an_unanswered_one_expires_as_a_denial()
-> anyhow::Result<()> {
    let stack = stack_with_agent(
        "careful",
        "[tools]\nallow = [\"memory\"]\nrequire_approval = [\"memory\"]\n",
        &[("SABLE_APPROVAL_TTL_MS", "1500")],
    )
    .await?;

    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![call("m1", "memory", json!({"action": "delete"}))],
    });
    stack
        .provider
        .push(Script::Reply("Understood, I will keep your notes.".into()));
    let accepted = send(&stack, json!({"text": "forget me", "agent": "careful"})).await?;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let approval = pending_approval(&stack, &turn_id).await?;
    let (status, _) = decide(
        &stack,
        approval["approval_id"].as_str().unwrap(),
        json!({"decision": "deny", "comment": "not today"}),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let denied = stack.wait_for_final_turn(&turn_id).await?;
    assert_eq!(
        denied["reply"]["text"],
        "Understood, I will keep your notes."
    );
    assert_eq!(denied["tool_calls"][0]["status"], "denied");
    let told = tool_results(stack.provider.requests().last().unwrap());
    assert!(
        told[0].contains("denied") && told[0].contains("not today"),
        "{told:?}"
    );

    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![call("m2", "memory", json!({"action": "delete"}))],
    });
    stack
        .provider
        .push(Script::Reply("Nobody approved it in time.".into()));
    let accepted = send(
        &stack,
        json!({"text": "forget me again", "agent": "careful"}),
    )
    .await?;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    let expired = stack.wait_for_final_turn(&turn_id).await?;
    assert_eq!(
        expired["reply"]["text"], "Nobody approved it in time.",
        "{expired}"
    );
    assert_eq!(expired["tool_calls"][0]["approval"]["status"], "expired");
    let told = tool_results(stack.provider.requests().last().unwrap());
    assert!(told[0].contains("not approved in time"), "{told:?}");
    Ok(())
}

#[tokio::test]
async fn the_prompt_lists_only_allowed_skills_and_only_those_can_be_loaded() -> anyhow::Result<()> {
    let stack = stack_with_agent("skilled", "[skills]\nallow = [\"weather\"]\n", &[]).await?;
    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![
            call("s1", "skill", json!({"name": "weather"})),
            call("s2", "skill", json!({"name": "secret"})),
            call("s3", "skill", json!({"title": "weather"})),
        ],
    });
    stack.provider.push(Script::Reply("ok".into()));
    let (status, answer) = stack
        .post_message(
            0,
            &json!({"text": "weather?", "agent": "skilled", "wait": true}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let requests = stack.provider.requests();
    let prompt: String = requests[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|message| message["role"] == "system")
        .map(|message| message["content"].as_str().unwrap_or_default())
        .collect();
    assert!(
        prompt.contains("- weather: Forecasts for a city"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("secret") && !prompt.contains("Call http_fetch"),
        "{prompt}"
    );
    let results = tool_results(&requests[1]);
    assert!(
        results[0].contains("Call http_fetch on the forecast API"),
        "{results:?}"
    );
    assert!(
        results[1].contains("no skill named 'secret' is available"),
        "{results:?}"
    );
    // A call that does not match the tool's schema comes back as an error, not a crash.
    assert!(
        results[2].starts_with("error (invalid_arguments)"),
        "{results:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_session_past_its_budget_is_compacted_and_every_request_fits_the_window()
-> anyhow::Result<()> {
    let stack = stack_with_agent(
        "budget",
        "[model]\nprofile = \"tiny\"\nmax_output_tokens = 100\n",
        &[],
    )
    .await?;
    let mut session_id = None::<String>;
    for index in 0..6 {
        let text = format!(
            "message {index} {}",
            "lorem ipsum dolor sit amet ".repeat(12)
        );
        let mut body = json!({"text": text, "agent": "budget", "wait": true});
        if let Some(session) = &session_id {
            body["session_id"] = json!(session);
        }
        let (status, answer) = stack.post_message(0, &body).await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "done", "{answer}");
        session_id = answer["session_id"].as_str().map(str::to_owned);
    }
    // The fake saw every request; none exceeded the window (600) by the documented
    // estimate of three bytes a token.
    for request in stack.provider.requests() {
        let bytes: usize = request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["content"].as_str().unwrap_or_default().len() + 12)
            .sum();
        assert!(
            bytes / 3 <= 600,
            "a request of ~{} tokens: {request}",
            bytes / 3
        );
    }
    let session = session_id.unwrap();
    let summaries = stack
        .scalar(&format!(
            "SELECT count(*) FROM sessions WHERE id = '{session}' AND summary IS NOT NULL"
        ))
        .await?;
    assert_eq!(summaries, 1);
    assert!(
        stack
            .scalar("SELECT count(*) FROM provider_calls WHERE purpose = 'compaction'")
            .await?
            >= 1
    );
    assert_eq!(
        stack
            .scalar(&format!(
                "SELECT count(*) FROM messages WHERE session_id = '{session}'"
            ))
            .await?,
        12,
        "every message is kept"
    );
    Ok(())
}

#[tokio::test]
async fn bindings_choose_the_agent_and_the_turn_records_the_rule() -> anyhow::Result<()> {
    let config = Config::new()?;
    config.agent("support", "")?;
    config.agent("vip", "")?;
    config.write(
        "bindings.toml",
        "[[binding]]\nagent = \"support\"\nchannel = \"api\"\n\n[[binding]]\nagent = \"vip\"\nuser = \"ada\"\n",
    )?;
    let stack = start(&config, &[]).await?;
    let cases = [
        (
            json!({"text": "hi", "wait": true}),
            "support",
            "binding[0] (channel = \"api\")",
        ),
        (
            json!({"text": "hi", "conversation": {"id": "c1", "user_id": "ada"}, "wait": true}),
            "vip",
            "binding[1] (user = \"ada\")",
        ),
        (
            json!({"text": "hi", "agent": "default", "wait": true}),
            "default",
            "explicit request",
        ),
    ];
    for (body, agent, rule) in cases {
        let (_, answer) = stack.post_message(0, &body).await?;
        let turn = turn(&stack, answer["turn_id"].as_str().unwrap()).await?;
        assert_eq!(
            (turn["agent"].as_str(), turn["binding_rule"].as_str()),
            (Some(agent), Some(rule)),
            "{body}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_agent_naming_an_unknown_tool_fails_start_up_naming_the_file_and_field()
-> anyhow::Result<()> {
    let config = Config::new()?;
    config.agent("broken", "[tools]\nallow = [\"time\", \"teleport\"]\n")?;
    let stack = TestStack::start(StackOptions {
        env: config.env(&[]),
        ..Default::default()
    })
    .await?;
    let error = stack
        .sable(&["worker"])
        .await
        .expect_err("the worker must refuse to start");
    let message = format!("{error:#}");
    assert!(
        message.contains("agents/broken/agent.toml")
            && message.contains("tools.allow: no tool named 'teleport'"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn the_session_tool_starts_a_new_session_for_the_conversation_and_memory_follows_the_user()
-> anyhow::Result<()> {
    let stack = stack_with_agent(
        "keeper",
        "[tools]\nallow = [\"session\", \"memory\"]\n",
        &[],
    )
    .await?;
    let conversation = json!({"id": "chat-9", "user_id": "grace"});
    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![
            call(
                "n1",
                "memory",
                json!({"action": "replace", "text": "prefers short answers"}),
            ),
            call("n2", "session", json!({"action": "new"})),
        ],
    });
    stack.provider.push(Script::Reply("Fresh start.".into()));
    let (_, first) = stack
        .post_message(0, &json!({"text": "start over", "agent": "keeper", "conversation": conversation, "wait": true}))
        .await?;
    assert_eq!(first["reply"]["text"], "Fresh start.", "{first}");

    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![call("n3", "memory", json!({"action": "get"}))],
    });
    stack.provider.push(Script::Reply("ok".into()));
    let (_, second) = stack
        .post_message(0, &json!({"text": "hello again", "agent": "keeper", "conversation": conversation, "wait": true}))
        .await?;
    assert_ne!(
        second["session_id"], first["session_id"],
        "the conversation moved to a new session"
    );
    let told = tool_results(stack.provider.requests().last().unwrap());
    assert_eq!(
        told,
        ["prefers short answers"],
        "notes belong to the user, not the session"
    );
    Ok(())
}

/// A local site whose `/hang` counts its requests and never answers.
async fn hanging_server() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hang",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, hits))
}

#[tokio::test]
async fn a_turn_resumed_after_a_crash_mid_tool_keeps_finished_calls_and_does_not_repeat_an_unsafe_one()
-> anyhow::Result<()> {
    let mut stack = stack_with_agent(
        "tooler",
        "[tools]\nallow = [\"time\", \"http_fetch\"]\n",
        &[("SABLE_HTTP_FETCH_ALLOW", "[\"127.0.0.1/32\"]")],
    )
    .await?;
    let (site, hits) = hanging_server().await?;
    stack.provider.push(Script::ToolCalls {
        text: String::new(),
        calls: vec![
            call("t1", "time", json!({})),
            call("f1", "http_fetch", json!({"url": format!("{site}/hang")})),
        ],
    });
    stack
        .provider
        .push(Script::Reply("The page did not answer.".into()));
    let accepted = send(&stack, json!({"text": "fetch it", "agent": "tooler"})).await?;
    let turn_id = accepted["turn_id"].as_str().unwrap().to_owned();
    eventually("the fetch to be in flight", TURN_TIMEOUT, || async {
        hits.load(Ordering::SeqCst) == 1
    })
    .await?;
    // The round's calls run at once: the clock's result may be written just after the
    // fetch reached the site.
    let before = sable_testkit::wait_for("the clock's result recorded", TURN_TIMEOUT, || async {
        let before = turn(&stack, &turn_id).await.ok()?;
        (before["tool_calls"][0]["status"] == "ok").then_some(before)
    })
    .await?;
    assert_eq!(before["tool_calls"][1]["status"], "running", "{before}");

    stack.workers.remove(0).kill().await;
    stack.spawn_worker().await?;
    let done = stack.wait_for_final_turn(&turn_id).await?;

    assert_eq!(done["reply"]["text"], "The page did not answer.", "{done}");
    assert_eq!(done["attempt"], 2);
    let calls = done["tool_calls"].as_array().unwrap();
    assert_eq!(
        calls[0], before["tool_calls"][0],
        "the finished call is kept as it was"
    );
    assert_eq!(calls[1]["status"], "error");
    assert_eq!(calls[1]["error_code"], "interrupted");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the unsafe call was not repeated"
    );
    assert_eq!(
        stack.provider.request_count(),
        2,
        "round 1 was not asked again"
    );
    assert_eq!(
        stack
            .scalar(&format!(
                "SELECT count(*) FROM deliveries WHERE turn_id = '{turn_id}'"
            ))
            .await?,
        1
    );
    Ok(())
}
