//! The model client against the fake provider over real HTTP: retries, `Retry-After`,
//! failover with cooldown, and the failures that must not be retried.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sable_llm::{
    CatalogSpec, ChatMessage, ChatRequest, ModelClient, ProfileSpec, ProviderErrorKind,
    ProviderKind, ProviderSpec, RetrySpec,
};
use sable_testkit::{FakeProvider, Script};

fn catalog(fake: &FakeProvider, cooldown_ms: u64) -> CatalogSpec {
    let provider = ProviderSpec {
        kind: ProviderKind::Openai,
        base_url: fake.base_url.clone(),
        api_key_env: None,
        api_key_file: None,
        headers: BTreeMap::new(),
        connect_timeout_ms: 1_000,
        first_byte_timeout_ms: 2_000,
        idle_timeout_ms: 2_000,
        total_timeout_ms: 2_000,
    };
    let profile = |model: &str, fallbacks: &[&str]| ProfileSpec {
        provider: "fake".into(),
        model: model.into(),
        context_window: 8_000,
        max_output_tokens: None,
        fallbacks: fallbacks.iter().map(|name| (*name).to_owned()).collect(),
    };
    CatalogSpec {
        providers: BTreeMap::from([("fake".to_owned(), provider)]),
        profiles: BTreeMap::from([
            (
                "primary".to_owned(),
                profile("primary-model", &["fallback"]),
            ),
            ("fallback".to_owned(), profile("fallback-model", &[])),
        ]),
        retry: RetrySpec {
            max_retries: 2,
            base_delay_ms: 10,
            max_delay_ms: 50,
            max_retry_after_ms: 5_000,
            cooldown_ms,
        },
    }
}

fn hello() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::user("hello")],
        ..Default::default()
    }
}

async fn start(cooldown_ms: u64) -> anyhow::Result<(FakeProvider, ModelClient)> {
    let fake = FakeProvider::start().await?;
    let client = ModelClient::new(&catalog(&fake, cooldown_ms), &BTreeMap::new())?;
    Ok((fake, client))
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_once_after_that_long() -> anyhow::Result<()> {
    let (fake, client) = start(60_000).await?;
    fake.push(Script::Fail {
        status: 429,
        retry_after_secs: Some(1),
    });

    let started = Instant::now();
    let report = client.complete("primary", &hello(), &mut |_| {}).await;

    assert_eq!(report.result?.text, "echo: hello");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "retried after {:?}",
        started.elapsed()
    );
    let outcomes: Vec<_> = report
        .attempts
        .iter()
        .map(|attempt| (attempt.model.as_str(), attempt.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("primary-model", "provider_rate_limited"),
            ("primary-model", "ok")
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_persistent_503_fails_over_and_the_primary_returns_after_its_cooldown()
-> anyhow::Result<()> {
    let (fake, client) = start(300).await?;
    fake.fail_model("primary-model", 503);

    let first = client.complete("primary", &hello(), &mut |_| {}).await;
    let during_cooldown = client.complete("primary", &hello(), &mut |_| {}).await;

    assert_eq!(first.answered_by.as_deref(), Some("fallback"));
    assert_eq!(
        first.attempts.len(),
        4,
        "three tries of the primary, then the fallback: {:?}",
        first.attempts
    );
    assert_eq!(
        first.attempts[2].failover_reason.as_deref(),
        Some("provider_server_error")
    );
    assert_eq!(
        during_cooldown.attempts[0].profile, "fallback",
        "the resting primary is not tried first"
    );
    fake.heal_model("primary-model");
    sable_testkit::eventually(
        "the primary to be tried again",
        Duration::from_secs(5),
        || async {
            client
                .complete("primary", &hello(), &mut |_| {})
                .await
                .answered_by
                .as_deref()
                == Some("primary")
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_401_is_neither_retried_nor_failed_over() -> anyhow::Result<()> {
    let (fake, client) = start(60_000).await?;
    fake.push(Script::Fail {
        status: 401,
        retry_after_secs: None,
    });

    let report = client.complete("primary", &hello(), &mut |_| {}).await;

    let error = report.result.unwrap_err();
    assert_eq!(error.kind, ProviderErrorKind::Auth);
    assert!(error.message.contains("401"), "{error}");
    assert_eq!(report.attempts.len(), 1);
    assert_eq!(fake.request_count(), 1);
    Ok(())
}

#[tokio::test]
async fn a_stream_dropped_after_text_fails_without_calling_anyone_else() -> anyhow::Result<()> {
    let (fake, client) = start(60_000).await?;
    fake.push(Script::DropAfter("half an ans".into()));
    let mut streamed = String::new();

    let report = client
        .complete("primary", &hello(), &mut |text| streamed.push_str(text))
        .await;

    let error = report.result.unwrap_err();
    assert!(error.partial_output);
    assert_eq!(error.code(), "provider_partial_output");
    assert_eq!(streamed, "half an ans");
    assert_eq!(
        fake.request_count(),
        1,
        "no retry and no failover after text reached the user"
    );
    Ok(())
}

#[tokio::test]
async fn usage_and_time_to_first_token_are_recorded_per_attempt() -> anyhow::Result<()> {
    let (_fake, client) = start(60_000).await?;

    let report = client.complete("primary", &hello(), &mut |_| {}).await;

    let attempt = &report.attempts[0];
    let usage = attempt.usage.expect("usage reported");
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    assert!(attempt.time_to_first_token_ms.is_some());
    assert_eq!(
        (attempt.provider.as_str(), attempt.provider_kind),
        ("fake", "openai")
    );
    Ok(())
}
