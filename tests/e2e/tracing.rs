//! Span export: one turn is one trace from the HTTP request through the worker to the
//! provider call, labelled for Langfuse; content enters spans only under the capture
//! policy and never enters logs; a dead collector costs turns nothing.
//!
//! The traced turn makes one tool round (the fake model's `#tool` directive: it calls the
//! builtin `time` tool, then answers), so the trace holds two generations and a tool.

use std::time::Duration;

use anyhow::Context;

use sable_testkit::{ExportedSpan, OtlpReceiver, rss_kib, wait_for};
use serde_json::json;

use crate::support::{StackOptions, TURN_TIMEOUT, TestStack};

const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// A stack with no roles yet whose roles will export spans to `receiver`.
async fn exporting_stack(receiver: &OtlpReceiver) -> anyhow::Result<TestStack> {
    TestStack::start(StackOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("SABLE_LOG_FORMAT", "json".into()),
            ("SABLE_ENVIRONMENT", "e2e".into()),
        ],
        ..Default::default()
    })
    .await
}

/// Waits until the receiver holds at least `generations` provider calls of the session, a
/// tool call between each two of them, and every span around them.
async fn spans_of_one_turn(
    receiver: &OtlpReceiver,
    session_id: &str,
    generations: usize,
) -> anyhow::Result<Vec<ExportedSpan>> {
    wait_for("the turn's spans to be exported", TURN_TIMEOUT, || async {
        let spans: Vec<ExportedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|span| span.str("langfuse.session.id") == Some(session_id))
            .collect();
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        let complete = [
            "POST /v1/messages",
            "publish turn wake-up",
            "invoke_agent default",
            "chat fake-model",
            "deliver reply",
        ]
        .iter()
        .all(|name| names.contains(name))
            && count(&names, "chat fake-model") >= generations
            && count(&names, "execute_tool time") >= generations - 1;
        complete.then_some(spans)
    })
    .await
}

fn count(names: &[&str], name: &str) -> usize {
    names.iter().filter(|candidate| **candidate == name).count()
}

fn named<'a>(spans: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test]
async fn one_turn_is_one_trace_from_the_request_through_the_provider_call_to_the_delivery()
-> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut stack = exporting_stack(&receiver).await?;
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;

    let response = stack
        .http
        .post(stack.url(0, "/v1/messages"))
        .bearer_auth(&stack.key)
        .header("traceparent", format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .json(&json!({"text": "trace me #tool", "conversation": {"id": "c-1", "user_id": "user-7"}, "wait": true}))
        .send()
        .await?;
    let answer: serde_json::Value = response.json().await?;
    assert_eq!(answer["status"], "done", "{answer}");
    let session_id = answer["session_id"].as_str().unwrap().to_owned();

    let spans = spans_of_one_turn(&receiver, &session_id, 2).await?;
    let request = named(&spans, "POST /v1/messages");
    let enqueue = named(&spans, "publish turn wake-up");
    let turn = named(&spans, "invoke_agent default");
    let generation = named(&spans, "chat fake-model");
    let delivery = named(&spans, "deliver reply");
    let tool = named(&spans, "execute_tool time");

    // One trace, continuing the caller's, with the causal chain as parent links.
    for span in &spans {
        assert_eq!(span.trace_id, CALLER_TRACE_ID, "{span:#?}");
        assert_eq!(
            span.str("langfuse.session.id"),
            Some(session_id.as_str()),
            "{span:#?}"
        );
        assert_eq!(span.str("langfuse.user.id"), Some("user-7"), "{span:#?}");
        assert_eq!(span.str("langfuse.environment"), Some("e2e"), "{span:#?}");
    }
    assert_eq!(request.parent_span_id, CALLER_SPAN_ID);
    assert_eq!(enqueue.parent_span_id, request.span_id);
    assert_eq!(turn.parent_span_id, request.span_id);
    assert_eq!(generation.parent_span_id, turn.span_id);
    assert_eq!(delivery.parent_span_id, turn.span_id);
    assert_eq!(tool.parent_span_id, turn.span_id);
    let generations = spans
        .iter()
        .filter(|span| span.name == "chat fake-model")
        .count();
    assert_eq!(generations, 2, "one generation before the tool, one after");
    // An API reply is delivered by the commit that ends its turn: nothing to dispatch.
    assert_eq!(delivery.service_name, "sable-worker");
    assert_eq!(request.service_name, "sable-gateway");
    assert_eq!(turn.service_name, "sable-worker");
    assert_eq!(generation.service_name, "sable-worker");
    assert!(
        turn.resource.contains_key("service.version"),
        "{:?}",
        turn.resource
    );

    // Langfuse observation types and GenAI attributes.
    assert_eq!(turn.str("langfuse.observation.type"), Some("agent"));
    assert_eq!(turn.str("langfuse.trace.name"), Some("default"));
    assert_eq!(
        generation.str("langfuse.observation.type"),
        Some("generation")
    );
    assert_eq!(generation.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(tool.str("langfuse.observation.type"), Some("tool"));
    assert_eq!(tool.str("gen_ai.tool.name"), Some("time"));
    assert_eq!(tool.str("sable.tool.outcome"), Some("ok"));
    assert_eq!(generation.str("gen_ai.request.model"), Some("fake-model"));
    assert_eq!(generation.str("gen_ai.system"), Some("openai"));
    for usage in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
        let tokens = generation
            .attributes
            .get(usage)
            .and_then(serde_json::Value::as_i64);
        assert!(
            tokens.is_some_and(|tokens| tokens > 0),
            "{usage}: {generation:#?}"
        );
    }

    // The turn's diagnostics name the same trace.
    let turn_id = answer["turn_id"].as_str().unwrap();
    let (_, diagnostics) = stack.get(0, &format!("/v1/turns/{turn_id}")).await?;
    assert_eq!(diagnostics["trace_id"], CALLER_TRACE_ID, "{diagnostics}");

    // JSON log lines written inside the turn name its trace.
    let logs = stack.full_logs()?;
    assert!(
        logs.lines()
            .any(|line| line.contains(r#""message":"turn finished""#)
                && line.contains(&format!(r#""trace_id":"{CALLER_TRACE_ID}""#))),
        "no log line of the turn carries its trace id:\n{}",
        stack.logs()
    );
    Ok(())
}

#[tokio::test]
async fn content_reaches_spans_only_for_orgs_whose_policy_allows_it_and_never_logs()
-> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut stack = exporting_stack(&receiver).await?;
    let loud_org = stack.sable(&["admin", "org", "create", "loud"]).await?;
    let loud_key = stack
        .sable(&["admin", "key", "create", "--org", &loud_org])
        .await?;
    stack.set_env(
        "SABLE_CAPTURE_CONTENT_ORGS",
        format!("{{\"{loud_org}\"=\"full\"}}"),
    );
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;

    let quiet_marker = "quiet-marker-6b1f0e";
    let loud_marker = "loud-marker-93ac2d";
    let mut sessions = Vec::new();
    for (key, marker) in [(stack.key.clone(), quiet_marker), (loud_key, loud_marker)] {
        let (_, answer) = stack
            .post_message_with_key(
                0,
                &key,
                // `#tool`: the turn makes a tool round, so tool payloads are tested too.
                &json!({"text": format!("say {marker} #tool"), "wait": true}),
            )
            .await?;
        assert_eq!(answer["status"], "done", "{answer}");
        sessions.push(answer["session_id"].as_str().unwrap().to_owned());
    }
    for session_id in &sessions {
        spans_of_one_turn(&receiver, session_id, 2).await?;
    }

    assert!(
        !receiver.any_export_contains(quiet_marker),
        "capture off leaked content into spans"
    );
    assert!(
        receiver.any_export_contains(loud_marker),
        "capture full exported no content"
    );
    let loud_turn = receiver
        .spans()
        .into_iter()
        .find(|span| {
            span.str("langfuse.session.id") == Some(sessions[1].as_str())
                && span.name == "invoke_agent default"
        })
        .expect("the loud org's turn span");
    assert_eq!(
        loud_turn.str("langfuse.observation.input"),
        Some(format!("say {loud_marker} #tool").as_str())
    );
    // Tool payloads follow the same policy, on the tool spans.
    let tool_span_of = |session: &str| {
        receiver
            .spans()
            .into_iter()
            .find(|span| {
                span.str("langfuse.session.id") == Some(session) && span.name == "execute_tool time"
            })
            .expect("a tool span")
    };
    let loud_tool = tool_span_of(&sessions[1]);
    assert_eq!(loud_tool.str("langfuse.observation.input"), Some("{}"));
    assert!(
        loud_tool
            .str("langfuse.observation.output")
            .is_some_and(|output| output.contains("UTC")),
        "{loud_tool:#?}"
    );
    let quiet_tool = tool_span_of(&sessions[0]);
    assert_eq!(quiet_tool.str("langfuse.observation.input"), None);
    assert_eq!(quiet_tool.str("langfuse.observation.output"), None);
    assert!(
        loud_turn
            .str("langfuse.observation.output")
            .is_some_and(|output| output.contains(loud_marker))
    );

    let logs = stack.full_logs()?;
    assert!(
        logs.contains("turn finished"),
        "the logs were not captured:\n{logs}"
    );
    for marker in [quiet_marker, loud_marker] {
        assert!(
            !logs.contains(marker),
            "{marker} reached a log line:\n{logs}"
        );
    }
    Ok(())
}

/// An org's own settings choose its capture policy (`PUT /v1/org-settings` with
/// `capture`), and the next turn after a change follows it.
#[tokio::test]
async fn an_org_chooses_its_own_capture_policy_and_its_next_turn_follows_it() -> anyhow::Result<()>
{
    let receiver = OtlpReceiver::start().await?;
    let mut stack = exporting_stack(&receiver).await?;
    let org = stack.sable(&["admin", "org", "create", "chooser"]).await?;
    let key = stack
        .sable(&["admin", "key", "create", "--org", &org, "--role", "admin"])
        .await?;
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;
    let put_capture = |policy: &'static str| {
        stack.send(
            &key,
            reqwest::Method::PUT,
            "/v1/org-settings",
            Some(json!({"capture": policy})),
        )
    };

    let mut turns = Vec::new();
    for (policy, marker) in [("full", "chosen-full-51d2"), ("off", "chosen-off-7a0c")] {
        let (status, change) = put_capture(policy).await?;
        anyhow::ensure!(status.is_success(), "{status} {change}");
        let (_, answer) = stack
            .post_message_with_key(
                0,
                &key,
                &json!({"text": format!("say {marker}"), "wait": true}),
            )
            .await?;
        assert_eq!(answer["status"], "done", "{answer}");
        let session_id = answer["session_id"].as_str().context("session id")?;
        spans_of_one_turn(&receiver, session_id, 1).await?;
        turns.push((policy, marker));
    }
    let (_, settings) = stack
        .send(&key, reqwest::Method::GET, "/v1/org-settings", None)
        .await?;
    assert_eq!(settings["capture"], "off", "{settings}");
    assert!(
        receiver.any_export_contains(turns[0].1),
        "the org chose full, and its turn exported no content"
    );
    assert!(
        !receiver.any_export_contains(turns[1].1),
        "the org chose off, and its next turn's content reached a span"
    );
    let (status, refused) = put_capture("loud").await?;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("capture")),
        "{refused}"
    );
    Ok(())
}

#[tokio::test]
async fn the_langfuse_preset_sends_spans_with_basic_auth_and_the_turn_links_its_trace()
-> anyhow::Result<()> {
    let langfuse = OtlpReceiver::start().await?;
    let mut stack = TestStack::start(StackOptions {
        env: vec![
            ("LANGFUSE_HOST", langfuse.endpoint()),
            ("LANGFUSE_PUBLIC_KEY", "pk-lf-test".into()),
            ("LANGFUSE_SECRET_KEY", "sk-lf-test".into()),
        ],
        ..Default::default()
    })
    .await?;
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;

    let (_, answer) = stack
        .post_message(0, &json!({"text": "to langfuse", "conversation": {"id": "lf", "user_id": "u-lf"}, "wait": true}))
        .await?;
    let session_id = answer["session_id"].as_str().unwrap();
    let spans = spans_of_one_turn(&langfuse, session_id, 1).await?;

    // base64("pk-lf-test:sk-lf-test")
    let expected = "Basic cGstbGYtdGVzdDpzay1sZi10ZXN0";
    assert!(langfuse.request_headers().iter().all(|headers| {
        headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            == Some(expected)
            && headers.get("x-langfuse-ingestion-version").is_some()
    }));
    let turn_id = answer["turn_id"].as_str().unwrap();
    let (_, turn) = stack.get(0, &format!("/v1/turns/{turn_id}")).await?;
    assert_eq!(
        turn["langfuse_url"],
        format!("{}/trace/{}", langfuse.endpoint(), spans[0].trace_id),
        "{turn}"
    );
    Ok(())
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_turns_nothing() -> anyhow::Result<()> {
    // Accepts connections into its backlog and never reads them: every export hangs
    // until the exporter's timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut stack = TestStack::start(StackOptions {
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", silent.local_addr()?),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000".into()),
            ("SABLE_OTEL_MAX_QUEUE_SIZE", "64".into()),
        ],
        ..Default::default()
    })
    .await?;
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;
    let worker_pid = stack.workers[0].pid().expect("the worker runs");
    let started = std::time::Instant::now();
    let rss_after_warm_up = {
        let (_, answer) = stack
            .post_message(0, &json!({"text": "warm up", "wait": true}))
            .await?;
        assert_eq!(answer["status"], "done", "{answer}");
        rss_kib(worker_pid).context("cannot read the worker's RSS")?
    };
    for round in 0..40 {
        let (_, answer) = stack
            .post_message(0, &json!({"text": format!("turn {round}"), "wait": true}))
            .await?;
        assert_eq!(answer["status"], "done", "{answer}\n{}", stack.logs());
    }
    // Forty one-call turns with a collector that hangs every export: no turn waited on it.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    let grown_kib = rss_kib(worker_pid)
        .context("cannot read the worker's RSS")?
        .saturating_sub(rss_after_warm_up);
    assert!(grown_kib < 32 * 1024, "the worker grew by {grown_kib} KiB");
    drop(silent);
    Ok(())
}
