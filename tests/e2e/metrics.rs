//! `/metrics` of each role parses as Prometheus text and moves with a scripted turn.

use std::collections::BTreeMap;

use anyhow::Context;

use serde_json::json;

use sable_testkit::wait_for;

use crate::support::{StackOptions, TURN_TIMEOUT, TestStack};

/// Parses the Prometheus text format into `series → value`, failing on any line that is
/// not a comment, blank, or `name{labels} value`.
fn parse(text: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
    {
        let (name, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        anyhow::ensure!(
            name.starts_with(|first: char| first.is_ascii_alphabetic() || first == '_'),
            "bad series {line:?}"
        );
        series.insert(name.to_owned(), value);
    }
    Ok(series)
}

fn total(series: &BTreeMap<String, f64>, prefix: &str, label: &str) -> f64 {
    series
        .iter()
        .filter(|(name, _)| name.starts_with(prefix) && name.contains(label))
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test]
async fn each_roles_metrics_parse_and_count_a_scripted_turn() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![("SABLE_HEARTBEAT_INTERVAL_MS", "200".into())],
        ..Default::default()
    })
    .await?;
    let gateway_metrics = format!("{}/metrics", stack.gateways[0].url);
    let worker_metrics = stack.worker_metrics[0].clone();
    let scrape = |url: String| {
        let http = stack.http.clone();
        async move { parse(&http.get(url).send().await?.text().await?) }
    };
    let worker_before = scrape(worker_metrics.clone()).await?;

    let (_, answer) = stack
        .post_message(0, &json!({"text": "count me", "wait": true}))
        .await?;
    assert_eq!(answer["status"], "done");

    let finished = |series: &BTreeMap<String, f64>| {
        total(series, "sable_turns_finished_total{", r#"status="done""#)
    };
    // The reply can reach the client before the worker counts the turn: poll.
    let finished_before = finished(&worker_before);
    let worker = wait_for("the worker to count the turn", TURN_TIMEOUT, || {
        let scraped = scrape(worker_metrics.clone());
        async move {
            scraped
                .await
                .ok()
                .filter(|worker| finished(worker) > finished_before)
        }
    })
    .await?;
    let gateway = scrape(gateway_metrics.clone()).await?;
    assert!(
        total(
            &gateway,
            "sable_http_requests_total{",
            r#"route="/v1/messages""#
        ) >= 1.0,
        "{gateway:#?}"
    );
    assert_eq!(finished(&worker) - finished_before, 1.0, "{worker:#?}");
    assert!(total(&worker, "sable_provider_calls_total{", r#"outcome="ok""#) >= 1.0);
    assert!(
        total(
            &worker,
            "sable_provider_tokens_total{",
            r#"direction="output""#
        ) > 0.0
    );
    for histogram in [
        "sable_turn_duration_seconds_bucket",
        "sable_turn_queue_wait_seconds_bucket",
    ] {
        assert!(
            worker.keys().any(|name| name.starts_with(histogram)),
            "{histogram}: {worker:#?}"
        );
    }
    // Every serving role samples the queues' backlog and its own database pool on each
    // heartbeat (the first may come before the queues exist): poll.
    let gauges = [
        r#"sable_queue_pending{queue="turns"}"#,
        r#"sable_queue_pending{queue="deliveries"}"#,
        r#"sable_db_pool_connections{state="max"}"#,
    ];
    for (role, url) in [("gateway", &gateway_metrics), ("worker", &worker_metrics)] {
        wait_for(&format!("the {role}'s gauges"), TURN_TIMEOUT, || {
            let scraped = scrape(url.clone());
            async move {
                let series = scraped.await.ok()?;
                gauges
                    .iter()
                    .all(|gauge| series.contains_key(*gauge))
                    .then_some(())
            }
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn turn_metrics_carry_the_org_only_when_the_deployment_opts_in() -> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions::default()).await?;
    stack.set_env("SABLE_METRICS_ORG_LABELS", "true".into());
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;
    let (_, answer) = stack
        .post_message(0, &json!({"text": "label me", "wait": true}))
        .await?;
    assert_eq!(answer["status"], "done");

    let org_label = format!(r#"org="{}""#, stack.org_id);
    let worker = wait_for("the worker to count the turn", TURN_TIMEOUT, || async {
        let text = stack
            .http
            .get(&stack.worker_metrics[0])
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        parse(&text)
            .ok()
            .filter(|worker| total(worker, "sable_turns_finished_total{", &org_label) >= 1.0)
    })
    .await?;
    assert_eq!(
        total(&worker, "sable_turns_finished_total{", &org_label),
        1.0,
        "{worker:#?}"
    );
    // Provider and HTTP metrics never carry it.
    assert!(
        !worker
            .keys()
            .any(|name| name.starts_with("sable_provider") && name.contains("org=")),
        "{worker:#?}"
    );
    Ok(())
}
