//! Orgs, keys, sessions and agents as an operator sees them: through `sable admin` and
//! the API, scoped by org, paginated without repeats, revocation effective at once.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{StackOptions, TestStack, assert_error};

async fn request(
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = stack
        .http
        .request(method, stack.url(0, path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(json!(text))))
}

/// Rows of a tab-separated listing with a header, as maps from column to value.
fn table(output: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = output.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split('\t'))
                .map(|(column, value)| ((*column).to_owned(), value.to_owned()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_cli_lists_orgs_and_named_keys_and_a_revoked_key_is_refused_on_its_next_request()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let admin_key = stack
        .sable(&[
            "admin",
            "key",
            "create",
            "--org",
            &stack.org_id,
            "--admin",
            "--name",
            "ops",
        ])
        .await?;
    stack.sable(&["admin", "org", "create", "globex"]).await?;

    let orgs = table(&stack.sable(&["admin", "org", "list"]).await?);
    let keys = table(
        &stack
            .sable(&["admin", "key", "list", "--org", &stack.org_id])
            .await?,
    );
    assert_eq!(
        orgs.iter()
            .map(|org| org["name"].as_str())
            .collect::<Vec<_>>(),
        ["acme", "globex"]
    );
    assert_eq!(keys.len(), 2, "{keys:?}");
    let ops = keys
        .iter()
        .find(|key| key["name"] == "ops")
        .expect("the named key");
    assert_eq!(ops["role"], "admin");
    assert_eq!(ops["revoked"], "-");
    assert!(admin_key.starts_with(&format!("sable_{}_", ops["prefix"])));

    stack
        .sable(&["admin", "key", "revoke", &ops["prefix"]])
        .await?;
    assert_error(
        &stack
            .post_message_with_key(0, &admin_key, &json!({"text": "hi"}))
            .await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let keys = table(
        &stack
            .sable(&["admin", "key", "list", "--org", &stack.org_id])
            .await?,
    );
    let ops = keys
        .iter()
        .find(|key| key["name"] == "ops")
        .expect("the named key");
    assert_ne!(ops["revoked"], "-", "{keys:?}");
    assert!(
        stack
            .sable(&["admin", "key", "revoke", "000000000000"])
            .await
            .is_err(),
        "revoking an unknown prefix fails"
    );
    Ok(())
}

#[tokio::test]
async fn admin_keys_manage_their_orgs_keys_through_the_api_and_no_other_orgs() -> anyhow::Result<()>
{
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let admin_key = stack
        .sable(&["admin", "key", "create", "--org", &stack.org_id, "--admin"])
        .await?;
    let other_org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    let other_admin = stack
        .sable(&["admin", "key", "create", "--org", &other_org, "--admin"])
        .await?;

    // An admin key of the org creates a member key, which works.
    let (status, created) = request(
        &stack,
        reqwest::Method::POST,
        "/v1/keys",
        &admin_key,
        Some(json!({"name": "ci bot", "role": "member"})),
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let member_key = created["key"].as_str().unwrap().to_owned();
    let member_prefix = created["prefix"].as_str().unwrap().to_owned();
    assert_eq!(created["role"], "member");
    let (status, _) = stack
        .post_message_with_key(0, &member_key, &json!({"text": "hi", "wait": true}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    // A member key may not manage keys; another org's admin sees none of these keys.
    assert_error(
        &request(&stack, reqwest::Method::GET, "/v1/keys", &member_key, None).await?,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (_, theirs) = request(&stack, reqwest::Method::GET, "/v1/keys", &other_admin, None).await?;
    assert_eq!(theirs["keys"].as_array().map(Vec::len), Some(1), "{theirs}");
    assert_error(
        &request(
            &stack,
            reqwest::Method::DELETE,
            &format!("/v1/keys/{member_prefix}"),
            &other_admin,
            None,
        )
        .await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (_, listed) = request(&stack, reqwest::Method::GET, "/v1/keys", &admin_key, None).await?;
    let listed: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&member_prefix.as_str()));

    // Revoked through the API: the very next request with the key is refused.
    let (status, revoked) = request(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/keys/{member_prefix}"),
        &admin_key,
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert_error(
        &stack
            .post_message_with_key(0, &member_key, &json!({"text": "hi"}))
            .await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // Uses are written in batches a second apart, off the requests' path.
    let member = sable_testkit::wait_for(
        "the member key's use to be recorded",
        std::time::Duration::from_secs(10),
        || async {
            let listing = stack
                .sable(&["admin", "key", "list", "--org", &stack.org_id])
                .await
                .ok()?;
            table(&listing)
                .into_iter()
                .find(|key| key["prefix"] == member_prefix && key["last_used"] != "-")
        },
    )
    .await?;
    assert_eq!(member["name"], "ci bot");
    assert_ne!(member["revoked"], "-");
    Ok(())
}

#[tokio::test]
async fn sessions_are_listed_newest_first_a_page_at_a_time_each_once_and_only_to_their_org()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let mut created = Vec::new();
    for index in 0..7 {
        let conversation =
            json!({"id": format!("c-{index}"), "user_id": format!("u-{}", index % 2)});
        let (status, body) = stack
            .post_message(0, &json!({"text": "hi", "conversation": conversation}))
            .await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        created.push(body["session_id"].as_str().unwrap().to_owned());
    }
    let other_org = stack.sable(&["admin", "org", "create", "globex"]).await?;
    let other_key = stack
        .sable(&["admin", "key", "create", "--org", &other_org])
        .await?;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/sessions?limit=3&cursor={cursor}"),
            None => "/v1/sessions?limit=3".to_owned(),
        };
        let (status, page) = stack.get(0, &path).await?;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for session in page["sessions"].as_array().unwrap() {
            seen.push(session["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first, "every session once, newest first");
    assert_eq!(pages, 3);

    let (_, by_conversation) = stack.get(0, "/v1/sessions?conversation=c-4").await?;
    assert_eq!(by_conversation["sessions"][0]["id"], created[4].as_str());
    assert_eq!(
        by_conversation["sessions"].as_array().map(Vec::len),
        Some(1)
    );
    let (_, by_user) = stack
        .get(0, "/v1/sessions?user_id=u-1&agent=default&channel=api")
        .await?;
    let by_user: BTreeSet<&str> = by_user["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| session["id"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [1, 3, 5]
        .iter()
        .map(|index| created[*index].as_str())
        .collect();
    assert_eq!(by_user, expected);
    let (_, none) = stack.get(0, "/v1/sessions?agent=nobody").await?;
    assert_eq!(none["sessions"], json!([]));
    assert_error(
        &stack.get(0, "/v1/sessions?limit=0").await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &stack.get(0, "/v1/sessions?cursor=nope").await?,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Another org sees none of them.
    let (_, theirs) = request(
        &stack,
        reqwest::Method::GET,
        "/v1/sessions",
        &other_key,
        None,
    )
    .await?;
    assert_eq!(theirs["sessions"], json!([]), "{theirs}");
    Ok(())
}

#[tokio::test]
async fn agents_are_listed_with_their_profile_tools_and_description() -> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 1,
        ..Default::default()
    })
    .await?;
    let (status, agents) = stack.get(0, "/v1/agents").await?;
    assert_eq!(status, StatusCode::OK);
    let default = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|agent| agent["id"] == "default")
        .expect("the default agent is listed");
    assert_eq!(default["model_profile"], "default");
    assert_eq!(default["default"], true);
    assert!(
        default["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty())
    );
    assert!(
        default["description"]
            .as_str()
            .is_some_and(|text| !text.is_empty())
    );
    Ok(())
}

/// Each gateway caches the keys it authenticated; a key revoked through one gateway is
/// refused there at once, and by every other gateway (which cached it too) from its next
/// poll of the change count (each second). Without the poll the other gateway would serve
/// the cached key until the fallback lifetime ran out (`TRUST_FOR`, 3 s, after the last
/// poll, then `AUTH_CACHE_TTL`, 5 s, after the read): the 3 s allowed tell the two apart.
#[tokio::test]
async fn a_key_revoked_through_one_gateway_is_refused_by_the_other_within_its_change_poll()
-> anyhow::Result<()> {
    let stack = TestStack::start(StackOptions {
        gateways: 2,
        workers: 1,
        ..Default::default()
    })
    .await?;
    let admin_key = stack.key_with_role("admin").await?;
    let member_key = stack.key_with_role("member").await?;
    let me = |gateway: usize| {
        let request = stack
            .http
            .get(stack.url(gateway, "/v1/me"))
            .bearer_auth(&member_key);
        async move { request.send().await.map(|response| response.status()) }
    };
    // Both gateways authenticate the key, and cache it, before it is revoked.
    for gateway in [0, 1] {
        assert_eq!(me(gateway).await?, StatusCode::OK, "gateway {gateway}");
        assert_eq!(me(gateway).await?, StatusCode::OK, "gateway {gateway}");
    }
    let prefix = member_key
        .split('_')
        .nth(1)
        .expect("sable_<prefix>_<secret>");
    let (status, revoked) = request(
        &stack,
        reqwest::Method::DELETE,
        &format!("/v1/keys/{prefix}"),
        &admin_key,
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(
        me(0).await?,
        StatusCode::UNAUTHORIZED,
        "the revoking gateway"
    );
    let revoked_at = std::time::Instant::now();
    sable_testkit::eventually(
        "the other gateway refuses the revoked key",
        std::time::Duration::from_secs(3),
        || async { matches!(me(1).await, Ok(StatusCode::UNAUTHORIZED)) },
    )
    .await?;
    // Once refused, refused for good: the other gateway does not serve it from a cache.
    for _ in 0..3 {
        assert_eq!(me(1).await?, StatusCode::UNAUTHORIZED);
    }
    eprintln!(
        "the other gateway refused the key {} ms after its revocation",
        revoked_at.elapsed().as_millis()
    );
    Ok(())
}
