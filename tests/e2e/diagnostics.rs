//! Diagnostics: a turn's step timeline, and the admin-only runtime view of live
//! processes, queues and the database pool.

use reqwest::StatusCode;
use sable_testkit::wait_for;
use serde_json::{Value, json};

use crate::support::{READY_TIMEOUT, StackOptions, TestStack, assert_error};

#[tokio::test]
async fn a_turns_timeline_lists_its_steps_in_order() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let (_, answer) = stack
        .post_message(0, &json!({"text": "step by step", "wait": true}))
        .await?;
    let turn = stack
        .wait_for_final_turn(answer["turn_id"].as_str().unwrap())
        .await?;

    let steps: Vec<&str> = turn["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["queued", "started", "provider_call", "finished"],
        "{turn}"
    );
    assert!(
        turn["trace_id"].as_str().is_some_and(|id| id.len() == 32),
        "{turn}"
    );
    assert!(
        turn.get("langfuse_url").is_none(),
        "no Langfuse configured: {turn}"
    );
    Ok(())
}

#[tokio::test]
async fn the_runtime_view_shows_live_roles_queues_and_the_pool_to_admin_keys_only()
-> anyhow::Result<()> {
    let mut stack = TestStack::start(StackOptions {
        env: vec![("SABLE_HEARTBEAT_INTERVAL_MS", "200".into())],
        ..Default::default()
    })
    .await?;
    stack.spawn_worker().await?;
    stack.spawn_gateway().await?;
    let admin_key = stack
        .sable(&["admin", "key", "create", "--org", &stack.org_id, "--admin"])
        .await?;
    let url = stack.url(0, "/v1/diagnostics/runtime");

    let ordinary = stack.http.get(&url).bearer_auth(&stack.key).send().await?;
    let ordinary = (ordinary.status(), ordinary.json::<Value>().await?);
    assert_error(&ordinary, StatusCode::FORBIDDEN, "forbidden");

    let view = wait_for("both roles to be listed", READY_TIMEOUT, || async {
        let response = stack
            .http
            .get(&url)
            .bearer_auth(&admin_key)
            .send()
            .await
            .ok()?;
        let view: Value = response.json().await.ok()?;
        let roles: Vec<&str> = view["roles"]
            .as_array()?
            .iter()
            .filter_map(|role| role["role"].as_str())
            .collect();
        (roles.contains(&"gateway") && roles.contains(&"worker")).then_some(view)
    })
    .await?;
    assert!(
        view["roles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|role| role["version"] == env!("CARGO_PKG_VERSION")),
        "{view}"
    );
    assert_eq!(view["bus"]["connected"], true, "{view}");
    for queue in ["turns", "deliveries"] {
        assert!(view["bus"]["queues"][queue]["pending"].is_u64(), "{view}");
    }
    assert!(
        view["database"]["pool"]["max"]
            .as_u64()
            .is_some_and(|max| max >= 1),
        "{view}"
    );
    assert_eq!(view["mcp"]["status"], "not_configured");
    Ok(())
}
