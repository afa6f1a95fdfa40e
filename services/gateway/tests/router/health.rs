//! `GET /healthz`, `GET /readyz` (`routes/health.rs`) and `GET /metrics`
//! (`routes/metrics.rs`); and what every keyed route answers when the database is down.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use sable_bus::Bus;
use sable_store::{Store, StoreOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, Call, TestApp, assert_error, refusal, send, test_config};

#[tokio::test]
async fn probes_and_metrics_answer_and_refuse_other_methods() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let not_allowed = |method: Method, path: &str| {
        refusal(
            format!("{method} {path}"),
            Call::new(method, path),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
    };

    app.assert_refused(vec![
        not_allowed(Method::POST, "/healthz"),
        not_allowed(Method::DELETE, "/readyz"),
        not_allowed(Method::POST, "/metrics"),
    ])
    .await?;

    let health = app.accepted(Call::get("/healthz")).await?;
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = app.accepted(Call::get("/readyz")).await?;
    assert_eq!(ready.body["status"], "ready");
    let metrics = app.accepted(Call::get("/metrics")).await?;
    assert!(
        metrics.headers["content-type"]
            .to_str()?
            .starts_with("text/plain"),
        "{:?}",
        metrics.headers
    );
    let served = reqwest::get(app.url("/healthz")).await?;
    assert_eq!(served.status(), reqwest::StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn with_the_database_unreachable_readyz_and_keyed_routes_answer_503() -> anyhow::Result<()> {
    let options = StoreOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(200),
        audit: true,
    };
    // Nothing listens on port 1.
    let store = Store::connect_lazy("postgres://postgres@127.0.0.1:1/sable", &options)?;
    let router = sable_gateway::testing::router(
        test_config()?,
        store,
        Bus::local(),
        CancellationToken::new(),
    );
    let key = format!("sable_{}_{}", "0".repeat(12), "0".repeat(48));

    // Together: each waits out the pool's acquire timeout.
    let (ready, agents, message) = tokio::join!(
        send(&router, Call::get("/readyz")),
        send(&router, Call::get("/v1/agents").key(&key)),
        send(
            &router,
            Call::post("/v1/messages")
                .key(&key)
                .json(json!({"text": "hi"})),
        ),
    );

    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["error"]["code"], "not_ready");
    assert_eq!(ready.body["checks"]["postgres"], "unreachable");
    assert_error(&agents, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_error(&message, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    Ok(())
}

#[tokio::test]
async fn a_database_without_its_schema_is_503_not_500() -> anyhow::Result<()> {
    let directory = std::env::temp_dir().join(format!("sable-router-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/unmigrated.db", directory.display());
    let store = Store::connect_lazy(&url, &StoreOptions::default())?;
    let router = sable_gateway::testing::router(
        test_config()?,
        store,
        Bus::local(),
        CancellationToken::new(),
    );
    let key = format!("sable_{}_{}", "0".repeat(12), "0".repeat(48));

    let reply = send(&router, Call::get("/v1/sessions").key(&key)).await;

    let _ = std::fs::remove_dir_all(&directory);
    assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    Ok(())
}
