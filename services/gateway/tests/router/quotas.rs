//! `GET|PUT /v1/orgs/{org_id}/quotas`, `GET /v1/usage` (`routes/quotas.rs`) and each
//! quota's refusal at the routes it guards: 429 `quota_exceeded` naming the quota, with
//! `Retry-After`, while another org goes on unaffected.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sable_core::{SessionId, TurnId};
use sable_store::{AuditFilter, NextTurn, ProviderCallRecord};
use serde_json::{Value, json};

use crate::support::{Backend, Call, Reply, TestApp, TestOrg, refusal, unauthorized};

on_both_backends!(
    bad_quota_requests_are_refused_and_change_nothing,
    the_platform_sets_quotas_audited_and_the_org_reads_them_and_its_usage,
    requests_per_minute_refuses_past_its_limit_on_every_api_door,
    concurrent_turns_refuses_while_the_org_has_that_many_unfinished,
    token_quotas_refuse_once_the_day_or_month_is_consumed,
    cron_tasks_refuses_a_task_past_its_limit,
);

fn quotas_path(org: &TestOrg) -> String {
    format!("/v1/orgs/{}/quotas", org.id)
}

fn put(path: impl Into<String>) -> Call {
    Call::new(Method::PUT, path)
}

fn owner_key(org: &TestOrg) -> String {
    org.keys
        .iter()
        .find(|(role, _)| *role == sable_core::Role::Owner)
        .map(|(_, key)| key.clone())
        .expect("an owner key")
}

/// Sets `org`'s quotas as the platform admin.
async fn set_quotas(app: &TestApp, org: &TestOrg, quotas: Value) -> anyhow::Result<Reply> {
    app.accepted(put(quotas_path(org)).key(&app.platform_key).json(quotas))
        .await
}

/// Asserts the 429 of `quota`: Sable's error shape with the quota's name, and a
/// `Retry-After` of 1 to `max_wait` seconds.
fn assert_quota_refusal(reply: &Reply, quota: &str, max_wait: u64) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert_eq!(
        reply.body["error"]["code"], "quota_exceeded",
        "{}",
        reply.body
    );
    assert_eq!(reply.body["error"]["quota"], quota, "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(quota),
        "the message names the quota: {message}"
    );
    assert_retry_after(reply, max_wait);
}

fn assert_retry_after(reply: &Reply, max_wait: u64) {
    let retry_after: u64 = reply
        .headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", reply.headers));
    assert!(
        (1..=max_wait).contains(&retry_after),
        "Retry-After {retry_after} is not within 1..={max_wait}"
    );
}

fn message(org: &TestOrg) -> Call {
    Call::post("/v1/messages")
        .key(&org.member_key)
        .json(json!({"text": "hello"}))
}

async fn bad_quota_requests_are_refused_and_change_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let path = quotas_path(&app.org);
    let platform = |body: Value| put(&path).key(&app.platform_key).json(body);
    let mut refusals = unauthorized(&app, &Method::PUT, &path, Some(&json!({})));
    refusals.extend(unauthorized(&app, &Method::GET, "/v1/usage", None));
    refusals.extend([
        refusal(
            "a negative limit",
            platform(json!({"requests_per_minute": -1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        refusal(
            "an unknown quota",
            platform(json!({"requests_per_hour": 5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        refusal(
            "a limit that is not a number",
            platform(json!({"cron_tasks": "many"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        refusal(
            "an org's own owner raising its limits",
            put(&path)
                .key(&owner_key(&app.org))
                .json(json!({"requests_per_minute": 1000})),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        refusal(
            "an org nobody has",
            put(format!("/v1/orgs/{}/quotas", uuid::Uuid::now_v7()))
                .key(&app.platform_key)
                .json(json!({})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "another org's quotas",
            Call::get(quotas_path(&app.other_org)).key(&app.org.admin_key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ]);
    app.assert_refused(refusals).await?;
    let negative = app.send(platform(json!({"tokens_per_day": -5}))).await;
    let message = negative.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("tokens_per_day"),
        "names the field: {message}"
    );
    Ok(())
}

async fn the_platform_sets_quotas_audited_and_the_org_reads_them_and_its_usage(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let unset = app
        .accepted(Call::get(quotas_path(&app.org)).key(&app.org.member_key))
        .await?;
    assert_eq!(unset.body["requests_per_minute"], Value::Null);

    let quotas = json!({
        "requests_per_minute": 100, "concurrent_turns": 5, "tokens_per_day": 1000,
        "tokens_per_month": 20000, "cron_tasks": 3, "mcp_servers": 2,
    });
    let set = set_quotas(&app, &app.org, quotas.clone()).await?;
    let shown = app
        .accepted(Call::get(quotas_path(&app.org)).key(&app.org.member_key))
        .await?;
    for name in ["requests_per_minute", "concurrent_turns", "tokens_per_day"] {
        assert_eq!(set.body[name], quotas[name]);
        assert_eq!(shown.body[name], quotas[name]);
    }
    // PUT replaces: a quota left out is unlimited again.
    let replaced = set_quotas(&app, &app.org, json!({"cron_tasks": 1})).await?;
    assert_eq!(replaced.body["requests_per_minute"], Value::Null);
    assert_eq!(replaced.body["cron_tasks"], 1);

    let events = app
        .store
        .audit_events(
            app.org.id,
            &AuditFilter {
                action: Some("org.quotas_updated".into()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await?;
    assert_eq!(events.len(), 2, "each change is audited: {events:?}");
    assert!(
        events[0].details.contains("\"before\""),
        "{}",
        events[0].details
    );

    app.accepted(message(&app.org)).await?;
    let viewer = &app.org.keys[0].1;
    let usage = app.accepted(Call::get("/v1/usage").key(viewer)).await?;
    assert_eq!(usage.body["org_id"], app.org.id.to_string());
    assert_eq!(usage.body["cron_tasks"]["limit"], 1);
    assert_eq!(usage.body["cron_tasks"]["used"], 0);
    assert_eq!(usage.body["concurrent_turns"]["limit"], Value::Null);
    assert_eq!(usage.body["concurrent_turns"]["used"], 1);
    assert_eq!(usage.body["requests_per_minute"]["window"], "minute");
    assert!(usage.body["requests_per_minute"]["resets_at"].is_string());
    assert_eq!(usage.body["tokens_per_day"]["window"], "day");
    assert_eq!(usage.body["tokens_per_month"]["used"], 0);
    Ok(())
}

async fn requests_per_minute_refuses_past_its_limit_on_every_api_door(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    set_quotas(&app, &app.org, json!({"requests_per_minute": 2})).await?;
    // A minute that ends while the test counts starts a new window: count again in it.
    let mut admitted = 0;
    for _attempt in 0..3 {
        let minute = chrono::Utc::now().timestamp() / 60;
        admitted = 0;
        let mut refused = None;
        for _ in 0..3 {
            let reply = app.send(message(&app.org)).await;
            if reply.status == StatusCode::ACCEPTED {
                admitted += 1;
            } else {
                refused = Some(reply);
                break;
            }
        }
        if chrono::Utc::now().timestamp() / 60 != minute {
            continue;
        }
        let refused = refused.expect("the third request of the minute is refused");
        assert_quota_refusal(&refused, "requests_per_minute", 60);
        break;
    }
    assert_eq!(admitted, 2, "the limit's requests are admitted");

    // The OpenAI-compatible door refuses in OpenAI's shape, with the quota and Retry-After.
    let openai = app
        .send(
            Call::post("/v1/chat/completions")
                .key(&app.org.member_key)
                .json(json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(
        openai.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        openai.body
    );
    assert_eq!(openai.body["error"]["code"], "quota_exceeded");
    assert_eq!(openai.body["error"]["type"], "rate_limit_error");
    assert_eq!(openai.body["error"]["quota"], "requests_per_minute");
    assert_retry_after(&openai, 60);
    let responses = app
        .send(
            Call::post("/v1/responses")
                .key(&app.org.member_key)
                .json(json!({"model": "default", "input": "hi"})),
        )
        .await;
    assert_eq!(
        responses.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        responses.body
    );
    assert_eq!(responses.body["error"]["quota"], "requests_per_minute");

    // The other org has no quotas and is not slowed or refused.
    for _ in 0..5 {
        app.accepted(message(&app.other_org)).await?;
    }
    // Raising the limit applies at once on the gateway that took the change.
    set_quotas(&app, &app.org, json!({"requests_per_minute": 1000})).await?;
    app.accepted(message(&app.org)).await?;
    Ok(())
}

async fn concurrent_turns_refuses_while_the_org_has_that_many_unfinished(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    set_quotas(&app, &app.org, json!({"concurrent_turns": 1})).await?;
    // No worker runs here: the first turn stays queued.
    let first = app.accepted(message(&app.org)).await?;
    let refused = app.send(message(&app.org)).await;
    assert_quota_refusal(&refused, "concurrent_turns", 1);
    app.accepted(message(&app.other_org)).await?;

    // Once the turn ends (as a worker ends it), the org may send again.
    finish_turn_of(&app, &app.org, &first).await?;
    sable_testkit::wait_for("the quota to have room", Duration::from_secs(5), || async {
        (app.send(message(&app.org)).await.status == StatusCode::ACCEPTED).then_some(())
    })
    .await?;
    Ok(())
}

/// Begins and ends the turn of `accepted` through the store, as a worker would.
async fn finish_turn_of(app: &TestApp, org: &TestOrg, accepted: &Reply) -> anyhow::Result<()> {
    run_turn(app, org, accepted, 0).await
}

/// [`finish_turn_of`], after recording a provider call that consumed `tokens` tokens.
async fn run_turn(
    app: &TestApp,
    org: &TestOrg,
    accepted: &Reply,
    tokens: i64,
) -> anyhow::Result<()> {
    let session_id: SessionId = text(&accepted.body["session_id"])?.parse()?;
    let turn_id: TurnId = text(&accepted.body["turn_id"])?.parse()?;
    let NextTurn::Begun(begun) = app
        .store
        .begin_next_turn(
            org.id,
            session_id,
            "router-test",
            Duration::from_secs(60),
            10,
        )
        .await?
    else {
        anyhow::bail!("the turn did not begin");
    };
    anyhow::ensure!(begun.turn.id == turn_id, "another turn began");
    if tokens > 0 {
        let call = ProviderCallRecord {
            turn_attempt: begun.attempt,
            purpose: "answer".into(),
            profile: "default".into(),
            provider: "fake".into(),
            provider_kind: "openai".into(),
            model: "fake-model".into(),
            outcome: "ok".into(),
            error_message: None,
            retry_number: 0,
            failover_reason: None,
            started_at: chrono::Utc::now(),
            time_to_first_token_ms: Some(1),
            duration_ms: 2,
            input_tokens: Some(tokens / 2),
            output_tokens: Some(tokens - tokens / 2),
            cached_input_tokens: None,
        };
        app.store
            .record_provider_calls(&begun.turn, &[call])
            .await?;
    }
    let finished = app
        .store
        .finish_turn(sable_store::FinishTurn {
            turn: &begun.turn,
            attempt: begun.attempt,
            outcome: sable_store::TurnOutcome::Failed {
                code: "test".into(),
                message: "ended by the test".into(),
                reply_text: "sorry".into(),
            },
            usage: None,
            route: None,
            provider_calls: Vec::new(),
            lease_owner: Some("router-test"),
        })
        .await?;
    anyhow::ensure!(finished.is_some(), "the turn did not finish");
    Ok(())
}

fn text(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("not a string: {value}"))
}

async fn token_quotas_refuse_once_the_day_or_month_is_consumed(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    set_quotas(&app, &app.org, json!({"tokens_per_day": 100})).await?;
    let first = app.accepted(message(&app.org)).await?;
    run_turn(&app, &app.org, &first, 150).await?;
    // Token usage is read at most once per `quota_cache` (1 s here).
    sable_testkit::wait_for(
        "the day's tokens to refuse",
        Duration::from_secs(5),
        || async {
            (app.send(message(&app.org)).await.status == StatusCode::TOO_MANY_REQUESTS)
                .then_some(())
        },
    )
    .await?;
    let refused = app.send(message(&app.org)).await;
    assert_quota_refusal(&refused, "tokens_per_day", 86_400);
    app.accepted(message(&app.other_org)).await?;

    set_quotas(&app, &app.org, json!({"tokens_per_month": 150})).await?;
    let refused = app.send(message(&app.org)).await;
    assert_quota_refusal(&refused, "tokens_per_month", 31 * 86_400);
    let usage = app
        .accepted(Call::get("/v1/usage").key(&app.org.member_key))
        .await?;
    assert_eq!(usage.body["tokens_per_month"]["used"], 150);
    assert_eq!(usage.body["tokens_per_month"]["limit"], 150);

    set_quotas(&app, &app.org, json!({"tokens_per_month": 151})).await?;
    app.accepted(message(&app.org)).await?;
    Ok(())
}

async fn cron_tasks_refuses_a_task_past_its_limit(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    set_quotas(&app, &app.org, json!({"cron_tasks": 1})).await?;
    let task = |name: &str| {
        Call::post("/v1/cron/tasks")
            .key(&app.org.operator_key)
            .json(json!({"name": name, "schedule": "0 9 * * *", "prompt": "p"}))
    };
    app.accepted(task("first")).await?;
    let refused = app.send(task("second")).await;
    assert_quota_refusal(&refused, "cron_tasks", 60);
    assert_eq!(app.store.cron_tasks(app.org.id).await?.len(), 1);
    // Another org's tasks are its own.
    app.accepted(
        Call::post("/v1/cron/tasks")
            .key(&app.other_org.operator_key)
            .json(json!({"name": "theirs", "schedule": "0 9 * * *", "prompt": "p"})),
    )
    .await?;
    Ok(())
}
