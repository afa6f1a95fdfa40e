//! `GET /v1/keys`, `POST /v1/keys` and `DELETE /v1/keys/{prefix}` (`routes/keys.rs`).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Backend, Call, TestApp, assert_error, forbidden, key_prefix, refusal, text, unauthorized,
    wrong_method,
};

on_both_backends!(
    key_management_refuses_members_bad_bodies_and_other_orgs_prefixes,
    the_listing_shows_when_each_key_was_last_used,
    a_key_revoked_past_this_gateway_stops_at_its_next_change_poll
);

async fn key_management_refuses_members_bad_bodies_and_other_orgs_prefixes(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let foreign = app.seed(&app.other_org).await?;
    let create = || Call::post("/v1/keys").key(&app.org.admin_key);
    let invalid = |what: &str, body: Value| {
        refusal(
            what,
            create().json(body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
    };
    let revoke = |prefix: &str| Call::delete(format!("/v1/keys/{prefix}"));
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/keys", None);
    refusals.extend(unauthorized(
        &app,
        &Method::POST,
        "/v1/keys",
        Some(&json!({})),
    ));
    refusals.extend(unauthorized(
        &app,
        &Method::DELETE,
        &format!("/v1/keys/{}", foreign.key_prefix),
        None,
    ));
    refusals.extend([
        forbidden(&app, Call::get("/v1/keys")),
        forbidden(&app, Call::post("/v1/keys").json(json!({"role": "admin"}))),
        forbidden(&app, revoke(&foreign.key_prefix)),
        invalid("an unknown role", json!({"role": "root"})),
        invalid("a role above the admin's own", json!({"role": "owner"})),
        invalid("a platform key from an org", json!({"role": "platform"})),
        invalid("a key that never lives", json!({"expires_in_seconds": 0})),
        invalid("a blank name", json!({"name": "   "})),
        invalid("a name with a NUL", json!({"name": "ci\u{0}bot"})),
        invalid(
            "a name over 100 characters",
            json!({"name": "n".repeat(101)}),
        ),
        invalid(
            "an unknown field",
            json!({"name": "ci", "expires": "never"}),
        ),
        invalid("a role that is no string", json!({"role": true})),
        refusal(
            "malformed JSON",
            create()
                .header("content-type", "application/json")
                .body("{"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        refusal(
            "a text/plain body",
            create().header("content-type", "text/plain").body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        refusal(
            "revoking a prefix nobody has",
            revoke("nosuchprefix").key(&app.org.admin_key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "revoking another org's key",
            revoke(&foreign.key_prefix).key(&app.org.admin_key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        wrong_method(&app, Method::PUT, "/v1/keys"),
        wrong_method(
            &app,
            Method::GET,
            &format!("/v1/keys/{}", foreign.key_prefix),
        ),
    ]);
    app.assert_refused(refusals).await?;
    let theirs = app
        .accepted(Call::get("/v1/keys").key(&app.other_org.admin_key))
        .await?;
    let prefixes: Vec<&Value> = theirs.body["keys"]
        .as_array()
        .map(|keys| keys.iter().map(|key| &key["prefix"]).collect())
        .unwrap_or_default();
    assert!(
        prefixes.contains(&&json!(foreign.key_prefix)),
        "{}",
        theirs.body
    );
    Ok(())
}

#[tokio::test]
async fn a_key_revoked_through_the_api_stops_working_at_once() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let created = app
        .accepted(
            Call::post("/v1/keys")
                .key(&app.org.admin_key)
                .json(json!({"name": "deploy bot"})),
        )
        .await?;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.body["role"], "operator",
        "a key made without a role can do what every key could before roles"
    );
    let key = text(&created.body["key"])?;
    let prefix = text(&created.body["prefix"])?;
    // Used once, so the gateway's key cache holds it.
    app.accepted(Call::get("/v1/agents").key(&key)).await?;

    let revoked = app
        .accepted(Call::delete(format!("/v1/keys/{prefix}")).key(&app.org.admin_key))
        .await?;

    assert!(revoked.body["revoked_at"].is_string(), "{}", revoked.body);
    let after = app.send(Call::get("/v1/agents").key(&key)).await;
    assert_error(&after, StatusCode::UNAUTHORIZED, "unauthorized");
    Ok(())
}

/// Last use is written in batches off the request's path: every key used shows its use
/// in the listing soon after, the unused one none.
async fn the_listing_shows_when_each_key_was_last_used(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let mut used = Vec::new();
    for name in ["first", "second", "unused"] {
        let created = app
            .accepted(
                Call::post("/v1/keys")
                    .key(&app.org.admin_key)
                    .json(json!({"name": name})),
            )
            .await?;
        let key = text(&created.body["key"])?;
        if name != "unused" {
            app.accepted(Call::get("/v1/agents").key(&key)).await?;
        }
        used.push((name, text(&created.body["prefix"])?));
    }
    let recorded = |listing: &Value, prefix: &str| {
        listing["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|key| key["prefix"] == prefix))
            .is_some_and(|key| key["last_used_at"].is_string())
    };
    let listing = sable_testkit::wait_for(
        "the used keys' last use in the listing",
        std::time::Duration::from_secs(10),
        || async {
            let listing = app
                .accepted(Call::get("/v1/keys").key(&app.org.admin_key))
                .await
                .ok()?;
            used[..2]
                .iter()
                .all(|(_, prefix)| recorded(&listing.body, prefix))
                .then_some(listing.body)
        },
    )
    .await?;
    assert!(
        !recorded(&listing, &used[2].1),
        "a key never used has no last use: {listing}"
    );
    Ok(())
}

/// A key revoked where this gateway cannot see it (`sable admin key revoke`, another
/// gateway: the store directly) keeps working only from the cache, and only until the
/// gateway's next poll of the change count: the poll that sees the count move makes the
/// gateway read the key again.
async fn a_key_revoked_past_this_gateway_stops_at_its_next_change_poll(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::spawn(backend).await?;
    let me = || Call::get("/v1/me").key(&app.org.member_key);
    // The first poll distrusts every read before it; the key is read again after it, and
    // a second poll that sees no change confirms that read.
    app.accepted(me()).await?;
    app.change_feed.poll(&app.store).await?;
    app.accepted(me()).await?;
    app.change_feed.poll(&app.store).await?;
    app.store
        .revoke_api_key(
            None,
            key_prefix(&app.org.member_key),
            &sable_store::Actor::system(),
        )
        .await?;
    // Not polled yet: the cached key is all this gateway knows.
    app.accepted(me()).await?;
    app.change_feed.poll(&app.store).await?;
    let refused = app.send(me()).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    Ok(())
}
