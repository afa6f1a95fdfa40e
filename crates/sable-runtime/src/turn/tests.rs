//! The agent loop, run for real on a SQLite store and the in-process bus, with a scripted
//! model and fake tools in place of the outside services: no Postgres, no NATS.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sable_bus::Bus;
use sable_core::{AgentId, Channel, MessageRole, MessageText, OrgId, SessionId, TurnStatus};
use sable_llm::{
    CallAttempt, CallReport, ChatMessage, ChatRequest, Completion, DeltaSink, ProfileSpec,
    ProviderError, ProviderErrorKind, TokenUsage, ToolCall, ToolSpec,
};
use sable_proto::v1::turn_event::Kind;
use sable_store::{
    ApprovalDecision, BegunTurn, NewMessage, NextTurn, SessionTarget, SqliteStore, Store,
    StoreOptions, TurnRecord,
};

use super::{Capabilities, Lease, Models, ToolFailure, Toolbox, TurnEnv, TurnSettings, run_turn};
use crate::{AgentCatalog, AgentDefinition, SkillEntry};

const WORKER: &str = "worker-1";

/// What the scripted model answers next.
enum Reply {
    Text(&'static str),
    Calls(Vec<(&'static str, &'static str)>),
    /// The provider says the request did not fit the window.
    Overflow,
}

/// A model that answers from a script and keeps every request it was sent.
struct ScriptedModel {
    profile: ProfileSpec,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl ScriptedModel {
    fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Models for ScriptedModel {
    fn profile(&self, name: &str) -> Option<&ProfileSpec> {
        (name == "default").then_some(&self.profile)
    }

    async fn complete(
        &self,
        profile: &str,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> CallReport {
        self.requests.lock().unwrap().push(request.clone());
        let reply = self.script.lock().unwrap().pop_front();
        let result = match reply {
            Some(Reply::Text(text)) => {
                on_delta(text);
                Ok(completion(text, Vec::new()))
            }
            Some(Reply::Calls(calls)) => {
                let calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(index, (name, arguments))| ToolCall {
                        id: format!("call-{index}"),
                        name: name.to_owned(),
                        arguments: arguments.to_owned(),
                    })
                    .collect();
                Ok(completion("", calls))
            }
            Some(Reply::Overflow) => Err(ProviderError::new(
                ProviderErrorKind::ContextOverflow,
                "too long",
            )),
            None => Err(ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                "the script ran out",
            )),
        };
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.code().to_owned(),
        };
        CallReport {
            attempts: vec![CallAttempt {
                profile: profile.to_owned(),
                provider: "scripted".into(),
                provider_kind: "openai",
                model: self.profile.model.clone(),
                outcome,
                error_message: None,
                retry_number: 0,
                failover_reason: None,
                started_at_unix_ms: 1_700_000_000_000,
                time_to_first_token_ms: Some(1),
                duration_ms: 2,
                usage: Some(TokenUsage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cached_input_tokens: 0,
                }),
            }],
            answered_by: result.is_ok().then(|| profile.to_owned()),
            result,
        }
    }
}

fn completion(text: &str, tool_calls: Vec<ToolCall>) -> Completion {
    Completion {
        text: text.to_owned(),
        tool_calls,
        usage: Some(TokenUsage {
            input_tokens: 10,
            output_tokens: 5,
            cached_input_tokens: 0,
        }),
        finish_reason: Some("stop".into()),
        model: Some("scripted-model".into()),
    }
}

/// Tools that record each run: `echo` (idempotent), `send` (not idempotent) and
/// `delete` (high risk: always waits for approval).
#[derive(Default)]
struct FakeTools {
    runs: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeTools {
    fn runs(&self) -> Vec<(String, String)> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Capabilities for FakeTools {
    async fn for_turn(
        &self,
        _turn: &sable_store::RunnableTurn,
        agent: &AgentDefinition,
        _org: &crate::OrgConfig,
    ) -> Box<dyn Toolbox> {
        let specs = ["echo", "send", "delete"]
            .into_iter()
            .filter(|name| agent.allows_tool(name))
            .map(|name| ToolSpec {
                name: name.to_owned(),
                description: format!("the {name} tool"),
                parameters: serde_json::json!({"type": "object"}),
            })
            .collect();
        Box::new(FakeToolbox {
            specs,
            runs: self.runs.clone(),
        })
    }
}

struct FakeToolbox {
    specs: Vec<ToolSpec>,
    runs: Arc<Mutex<Vec<(String, String)>>>,
}

#[async_trait::async_trait]
impl Toolbox for FakeToolbox {
    fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    fn skills(&self) -> &[SkillEntry] {
        &[]
    }

    fn knows(&self, name: &str) -> bool {
        matches!(name, "echo" | "send" | "delete")
    }

    fn is_idempotent(&self, name: &str) -> bool {
        name != "send"
    }

    fn is_high_risk(&self, name: &str) -> bool {
        name == "delete"
    }

    async fn call(&self, name: &str, arguments: &str) -> Result<String, ToolFailure> {
        self.runs
            .lock()
            .unwrap()
            .push((name.to_owned(), arguments.to_owned()));
        Ok(format!("{name} ran with {arguments}"))
    }
}

fn agent() -> AgentDefinition {
    AgentDefinition {
        id: AgentId::parse("helper").unwrap(),
        name: "Helper".into(),
        description: String::new(),
        system_prompt: "You help.".into(),
        max_output_tokens: Some(100),
        temperature: None,
        history_messages: 20,
        profile: "default".into(),
        routes: Vec::new(),
        tools: vec!["echo".into(), "send".into(), "delete".into()],
        approval_required: Vec::new(),
        skills: Vec::new(),
        allow_skill_scripts: false,
        max_tool_rounds: 5,
        max_tool_result_chars: 10_000,
    }
}

/// One agent, one org, a fresh SQLite file and an in-process bus.
struct Harness {
    env: TurnEnv,
    model: Arc<ScriptedModel>,
    tools: Arc<FakeTools>,
    org_id: OrgId,
    directory: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

impl Harness {
    async fn new(agent: AgentDefinition, context_window: u32, script: Vec<Reply>) -> Self {
        let directory = std::env::temp_dir().join(format!("sable-turn-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sable.db", directory.display());
        let store = Store::new(SqliteStore::connect_lazy(&url, &StoreOptions::default()).unwrap());
        store.migrate().await.unwrap();
        let org_id = store.create_org("acme").await.unwrap();
        let model = Arc::new(ScriptedModel {
            profile: ProfileSpec {
                provider: "scripted".into(),
                model: "scripted-model".into(),
                context_window,
                max_output_tokens: None,
                fallbacks: Vec::new(),
            },
            script: Mutex::new(script.into()),
            requests: Mutex::default(),
        });
        let tools = Arc::new(FakeTools::default());
        let agents = AgentCatalog::from_definitions([agent]);
        let orgs = crate::OrgConfigs::new(
            store.clone(),
            crate::OrgConfigBase {
                routing: crate::IntakeRouting {
                    default_agent: AgentId::parse("helper").unwrap(),
                    agents: agents.ids().map(str::to_owned).collect(),
                    bindings: crate::Bindings::default(),
                },
                agents,
                models: sable_llm::CatalogSpec::default(),
                keys: Default::default(),
                mcp_servers: Vec::new(),
            },
            None,
            false,
            Duration::from_secs(1),
        );
        let env = TurnEnv {
            config: TurnSettings {
                worker_id: WORKER.into(),
                approval_ttl: Duration::from_secs(3600),
                max_turn_attempts: 5,
                faults: sable_core::FaultPoints::default(),
                content_capture: sable_telemetry::ContentCapture::default(),
                metrics_org_labels: false,
            },
            store,
            bus: Bus::local(),
            models: model.clone(),
            capabilities: tools.clone(),
            orgs,
        };
        Self {
            env,
            model,
            tools,
            org_id,
            directory,
        }
    }

    fn script(&self, replies: Vec<Reply>) {
        self.model.script.lock().unwrap().extend(replies);
    }

    /// Accepts a message (in a new session unless one is named) and returns its session.
    async fn say(&self, session: Option<SessionId>, text: &str) -> SessionId {
        let target = session.map_or(SessionTarget::New, SessionTarget::Existing);
        self.env
            .store
            .accept_message(NewMessage {
                org_id: self.org_id,
                channel: Channel::Api,
                target,
                agent: AgentId::parse("helper").unwrap(),
                binding_rule: "test".into(),
                text: MessageText::parse(text.to_owned()).unwrap(),
                idempotency_key: None,
                trace_parent: None,
                actor: sable_store::Actor::system(),
            })
            .await
            .unwrap()
            .session_id
    }

    async fn begin(&self, session_id: SessionId) -> BegunTurn {
        let next = self
            .env
            .store
            .begin_next_turn(self.org_id, session_id, WORKER, Duration::from_secs(30), 20)
            .await
            .unwrap();
        match next {
            NextTurn::Begun(begun) => *begun,
            other => panic!("no turn begun: {other:?}"),
        }
    }

    /// Lets the session go, as the drain does after a turn parks, and decides its one
    /// pending approval as a person would.
    async fn decide_the_approval(
        &self,
        session_id: SessionId,
        approve: bool,
        comment: Option<&str>,
    ) {
        let store = &self.env.store;
        let pending = store.approvals(self.org_id, Some("pending")).await.unwrap();
        assert_eq!(pending.len(), 1, "one approval waits");
        store
            .release_session(self.org_id, session_id, WORKER)
            .await
            .unwrap();
        store
            .decide_approval(ApprovalDecision {
                org_id: self.org_id,
                approval_id: pending[0].id,
                approve,
                scope: "once".into(),
                comment: comment.map(str::to_owned),
                actor: sable_store::Actor::system(),
            })
            .await
            .unwrap();
    }

    /// Begins the session's next turn and runs it to its end.
    async fn run(&self, session_id: SessionId) -> (Lease, TurnRecord) {
        let begun = self.begin(session_id).await;
        let lease = run_turn(&self.env, &begun).await.unwrap();
        let record = self
            .env
            .store
            .turn(self.org_id, begun.turn.id)
            .await
            .unwrap();
        (lease, record)
    }
}

/// The tool results the model was shown in its last request.
fn tool_results(request: &ChatRequest) -> Vec<(String, bool)> {
    request
        .messages
        .iter()
        .filter_map(|message| match message {
            ChatMessage::Tool {
                content, is_error, ..
            } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_tool_round_runs_the_call_and_feeds_its_result_back_before_the_answer() {
    let harness = Harness::new(
        agent(),
        100_000,
        vec![
            Reply::Calls(vec![("echo", r#"{"x":1}"#)]),
            Reply::Text("done"),
        ],
    )
    .await;
    let session = harness.say(None, "echo something").await;

    let (lease, turn) = harness.run(session).await;

    assert_eq!(lease, Lease::Released, "nothing else was queued");
    assert_eq!(
        (turn.status, turn.reply_text.as_deref()),
        (TurnStatus::Done, Some("done"))
    );
    assert_eq!(harness.tools.runs(), [("echo".into(), r#"{"x":1}"#.into())]);
    let requests = harness.model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        tool_results(&requests[1]),
        [(r#"echo ran with {"x":1}"#.to_owned(), false)]
    );
    let calls = harness
        .env
        .store
        .tool_calls(harness.org_id, turn.id)
        .await
        .unwrap();
    assert_eq!(
        calls
            .iter()
            .map(|call| (call.tool.as_str(), call.status.as_str()))
            .collect::<Vec<_>>(),
        [("echo", "ok")]
    );
    let provider_calls = harness
        .env
        .store
        .provider_calls(harness.org_id, turn.id)
        .await
        .unwrap();
    assert_eq!(
        provider_calls.len(),
        2,
        "both calls recorded with the ending"
    );
    assert_eq!(turn.input_tokens, Some(20));
}

#[tokio::test]
async fn a_model_still_calling_tools_after_the_round_limit_gets_a_plain_reply() {
    let mut limited = agent();
    limited.max_tool_rounds = 2;
    let harness = Harness::new(
        limited,
        100_000,
        vec![
            Reply::Calls(vec![("echo", r#"{"n":1}"#)]),
            Reply::Calls(vec![("echo", r#"{"n":2}"#)]),
            Reply::Calls(vec![("echo", r#"{"n":3}"#)]),
        ],
    )
    .await;
    let session = harness.say(None, "loop").await;

    let (_, turn) = harness.run(session).await;

    assert_eq!(
        (turn.status, turn.error_code.as_deref()),
        (TurnStatus::Failed, Some("tool_round_limit"))
    );
    assert!(turn.reply_text.unwrap().contains("2 rounds of tool calls"));
    assert_eq!(harness.tools.runs().len(), 2, "the third round never ran");
}

#[tokio::test]
async fn the_same_call_asked_for_a_third_time_ends_the_turn() {
    let same = || Reply::Calls(vec![("echo", r#"{"a":1,"b":2}"#)]);
    let reordered = Reply::Calls(vec![("echo", r#"{ "b": 2, "a": 1 }"#)]);
    let harness = Harness::new(agent(), 100_000, vec![same(), reordered, same()]).await;
    let session = harness.say(None, "repeat").await;

    let (_, turn) = harness.run(session).await;

    assert_eq!(turn.error_code.as_deref(), Some("tool_call_repeated"));
    assert_eq!(harness.tools.runs().len(), 2);
}

#[tokio::test]
async fn a_call_that_needs_approval_parks_the_turn_and_runs_once_when_approved() {
    let harness = Harness::new(
        agent(),
        100_000,
        vec![Reply::Calls(vec![("delete", r#"{"what":"it"}"#)])],
    )
    .await;
    let session = harness.say(None, "delete it").await;
    let mut events = harness
        .env
        .bus
        .subscribe_events(harness.org_id, session)
        .await
        .unwrap();

    let (lease, turn) = harness.run(session).await;

    assert_eq!(
        lease,
        Lease::Kept,
        "a parked turn keeps its session until released"
    );
    assert_eq!(turn.status, TurnStatus::WaitingApproval);
    assert!(
        harness.tools.runs().is_empty(),
        "nothing runs before the approval"
    );
    let event = events.next().await.unwrap();
    assert!(matches!(event.kind, Some(Kind::Parked(parked)) if parked.tool == "delete"));

    harness.decide_the_approval(session, true, None).await;
    harness.script(vec![Reply::Text("deleted")]);

    let (_, turn) = harness.run(session).await;

    assert_eq!(
        (turn.status, turn.attempt, turn.reply_text.as_deref()),
        (TurnStatus::Done, 2, Some("deleted"))
    );
    assert_eq!(
        harness.tools.runs(),
        [("delete".into(), r#"{"what":"it"}"#.into())]
    );
}

#[tokio::test]
async fn a_denied_call_is_reported_to_the_model_and_never_runs() {
    let harness = Harness::new(agent(), 100_000, vec![Reply::Calls(vec![("delete", "{}")])]).await;
    let session = harness.say(None, "delete it").await;
    harness.run(session).await;
    harness
        .decide_the_approval(session, false, Some("not today"))
        .await;
    harness.script(vec![Reply::Text("understood")]);

    let (_, turn) = harness.run(session).await;

    assert_eq!(turn.reply_text.as_deref(), Some("understood"));
    assert!(harness.tools.runs().is_empty());
    let results = tool_results(harness.model.requests().last().unwrap());
    assert_eq!(results.len(), 1);
    assert!(results[0].1, "the denial is an error result");
    assert!(results[0].0.contains("denied") && results[0].0.contains("not today"));
}

#[tokio::test]
async fn an_interrupted_call_is_repeated_only_when_its_tool_is_idempotent() {
    let harness = Harness::new(agent(), 100_000, vec![Reply::Text("after the crash")]).await;
    let session = harness.say(None, "do both").await;
    // Attempt 1 recorded a round of two calls and died while both were running.
    let first = harness.begin(session).await;
    harness
        .env
        .store
        .begin_tool_round(
            &first.turn,
            first.attempt,
            1,
            "on it",
            &[
                sable_store::NewToolCall {
                    call_id: "c-1".into(),
                    tool: "echo".into(),
                    arguments: r#"{"n":1}"#.into(),
                },
                sable_store::NewToolCall {
                    call_id: "c-2".into(),
                    tool: "send".into(),
                    arguments: r#"{"to":"bob"}"#.into(),
                },
            ],
        )
        .await
        .unwrap();

    let (_, turn) = harness.run(session).await;

    assert_eq!(
        (turn.status, turn.attempt, turn.reply_text.as_deref()),
        (TurnStatus::Done, 2, Some("after the crash"))
    );
    assert_eq!(
        harness.tools.runs(),
        [("echo".into(), r#"{"n":1}"#.into())],
        "send may have taken effect: it is not run again"
    );
    let results = tool_results(&harness.model.requests()[0]);
    assert_eq!(results[0], (r#"echo ran with {"n":1}"#.to_owned(), false));
    assert!(results[1].1 && results[1].0.contains("interrupted"));
}

#[tokio::test]
async fn a_session_over_the_window_is_compacted_before_the_model_is_asked() {
    // 450 tokens of window less 100 for the answer; the fallback estimate is three bytes
    // a token, so an earlier exchange of twice 600 bytes (400 tokens) does not fit.
    let harness = Harness::new(agent(), 450, Vec::new()).await;
    let long = "word ".repeat(120);
    let session = harness.say(None, &long).await;
    harness.script(vec![Reply::Text(Box::leak(long.clone().into_boxed_str()))]);
    harness.run(session).await;
    harness.say(Some(session), "and now?").await;
    harness.script(vec![Reply::Text("the summary"), Reply::Text("the answer")]);

    let begun = harness.begin(session).await;
    run_turn(&harness.env, &begun).await.unwrap();

    let turn = harness
        .env
        .store
        .turn(harness.org_id, begun.turn.id)
        .await
        .unwrap();
    assert_eq!(turn.reply_text.as_deref(), Some("the answer"));
    let requests = harness.model.requests();
    assert_eq!(requests.len(), 3, "the first turn, the summary, the answer");
    let answer = &requests[2];
    assert!(
        answer.messages.iter().any(|message| matches!(message,
            ChatMessage::System { content } if content.contains("the summary"))),
        "the answer's request carries the summary"
    );
    let summary = harness
        .env
        .store
        .session_summary(&begun.turn)
        .await
        .unwrap();
    assert_eq!(summary.text.as_deref(), Some("the summary"));
}

#[tokio::test]
async fn a_first_attempt_past_the_attempt_limit_fails_without_asking_the_model() {
    let harness = Harness::new(agent(), 100_000, Vec::new()).await;
    let session = harness.say(None, "hello").await;
    for _ in 0..5 {
        // Each begin is an attempt that "crashed" before ending.
        harness.begin(session).await;
    }

    let (_, turn) = harness.run(session).await;

    assert_eq!(
        (turn.status, turn.error_code.as_deref()),
        (TurnStatus::Failed, Some("too_many_attempts"))
    );
    assert!(harness.model.requests().is_empty());
    assert_eq!(
        harness
            .env
            .store
            .session_messages(harness.org_id, session)
            .await
            .unwrap()
            .last()
            .map(|message| message.role),
        Some(MessageRole::Error)
    );
}

#[tokio::test]
async fn a_context_overflow_from_the_provider_compacts_once_and_asks_again() {
    let harness = Harness::new(agent(), 100_000, vec![Reply::Text("first answer")]).await;
    let session = harness.say(None, "first").await;
    harness.run(session).await;
    harness.say(Some(session), "second").await;
    harness.script(vec![
        Reply::Overflow,
        Reply::Text("the summary"),
        Reply::Text("the answer"),
    ]);

    let (_, turn) = harness.run(session).await;

    assert_eq!(turn.reply_text.as_deref(), Some("the answer"));
    assert_eq!(harness.model.requests().len(), 4);
    let calls = harness
        .env
        .store
        .provider_calls(harness.org_id, turn.id)
        .await
        .unwrap();
    assert_eq!(
        calls
            .iter()
            .map(|call| (call.purpose.as_str(), call.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("answer", "provider_context_overflow"),
            ("compaction", "ok"),
            ("answer", "ok")
        ]
    );
}
