//! The org's own MCP servers (`routes/mcp_servers.rs`): stored, listed beside the
//! deployment's shared ones and deleted, audited, their headers never answered; invalid
//! ones (a stdio server, a shared server's name, a bad URL or header) refused naming the
//! field with nothing changed; the `mcp_servers` quota refusing a new one.

use axum::http::StatusCode;
use sable_store::{AuditFilter, ConfigKind};
use serde_json::{Value, json};

use crate::support::{Backend, Call, TestApp, refusal};

on_both_backends!(
    an_orgs_mcp_servers_are_listed_with_the_shared_ones_never_with_header_values_and_audited,
    invalid_mcp_servers_are_refused_naming_the_field_and_change_nothing,
    the_mcp_servers_quota_refuses_a_new_server_and_usage_counts_the_orgs_own,
);

const SECRET: &str = "Bearer mcp-header-secret-0123456789";

/// An app whose deployment shares two MCP servers (`time`, stdio; `search`, http).
async fn app_with_shared_servers(backend: Backend) -> anyhow::Result<TestApp> {
    TestApp::spawn_with(backend, |config| {
        config.org_base.mcp_servers = vec![
            sable_runtime::SharedMcpServer {
                name: "time".into(),
                transport: "stdio".into(),
                enabled: true,
            },
            sable_runtime::SharedMcpServer {
                name: "search".into(),
                transport: "http".into(),
                enabled: false,
            },
        ];
    })
    .await
}

fn server<'a>(list: &'a Value, name: &str, shared: bool) -> Option<&'a Value> {
    list["servers"]
        .as_array()?
        .iter()
        .find(|server| server["name"] == name && server["shared"] == shared)
}

// One server followed from creation to deletion; its steps read in order.
#[allow(clippy::too_many_lines)]
async fn an_orgs_mcp_servers_are_listed_with_the_shared_ones_never_with_header_values_and_audited(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = app_with_shared_servers(backend).await?;
    let admin = app.org.admin_key.clone();
    let created = app
        .accepted(Call::put("/v1/mcp-servers/docs").key(&admin).json(json!({
            "url": "http://docs.invalid/mcp",
            "headers": {"Authorization": SECRET},
            "timeout_ms": 5000,
            "idempotent_tools": ["search"],
        })))
        .await?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["kind"], "mcp_server");
    // Replaced without headers: the stored ones are kept (and still named).
    let replaced = app
        .accepted(
            Call::put("/v1/mcp-servers/docs")
                .key(&admin)
                .json(json!({"url": "http://docs2.invalid/mcp"})),
        )
        .await?;
    assert_eq!(replaced.status, StatusCode::OK);
    let listed = app
        .accepted(Call::get("/v1/mcp-servers").key(&admin))
        .await?;
    let docs = server(&listed.body, "docs", false).expect("the org's server");
    assert_eq!(docs["source"], "org", "{}", listed.body);
    assert_eq!(docs["url"], "http://docs2.invalid/mcp");
    assert_eq!(docs["header_names"], json!(["Authorization"]));
    assert_eq!(docs["transport"], "http");
    let time = server(&listed.body, "time", true).expect("the shared stdio server");
    assert_eq!(
        (&time["source"], &time["transport"]),
        (&json!("deployment"), &json!("stdio"))
    );
    assert!(
        time.get("url").is_none(),
        "a shared server's address stays private"
    );
    assert_eq!(
        server(&listed.body, "search", true).expect("shared")["enabled"],
        false
    );
    // The header is sealed at rest.
    let stored = app.store.org_config(app.org.id).await?;
    let item = stored
        .items
        .iter()
        .find(|item| item.kind == ConfigKind::McpServer)
        .expect("the stored item");
    let sealed = item.secret_sealed.as_deref().unwrap_or_default();
    assert!(!sealed.is_empty());
    assert!(
        !sealed
            .windows(SECRET.len())
            .any(|window| window == SECRET.as_bytes())
    );
    assert!(!item.spec.contains(SECRET));
    // Another org sees only the shared ones, and cannot delete this one.
    let theirs = app
        .accepted(Call::get("/v1/mcp-servers").key(&app.other_org.admin_key))
        .await?;
    assert!(
        server(&theirs.body, "docs", false).is_none(),
        "{}",
        theirs.body
    );
    let not_theirs = app
        .send(Call::delete("/v1/mcp-servers/docs").key(&app.other_org.admin_key))
        .await;
    assert_eq!(not_theirs.status, StatusCode::NOT_FOUND);
    // A member may not read them (a URL may carry a token).
    let member = app
        .send(Call::get("/v1/mcp-servers").key(&app.org.member_key))
        .await;
    assert_eq!(member.status, StatusCode::FORBIDDEN);
    // Removing the headers, then the server.
    app.accepted(
        Call::put("/v1/mcp-servers/docs")
            .key(&admin)
            .json(json!({"url": "http://docs2.invalid/mcp", "headers": {}})),
    )
    .await?;
    let cleared = app
        .accepted(Call::get("/v1/mcp-servers").key(&admin))
        .await?;
    assert_eq!(
        server(&cleared.body, "docs", false).expect("docs")["header_names"],
        json!([])
    );
    let deleted = app
        .send(Call::delete("/v1/mcp-servers/docs").key(&admin))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = app
        .send(Call::delete("/v1/mcp-servers/docs").key(&admin))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let audit = app.accepted(Call::get("/v1/audit").key(&admin)).await?;
    for body in [&created.body, &replaced.body, &listed.body, &audit.body] {
        assert!(!body.to_string().contains(SECRET), "{body}");
    }
    let events = app
        .store
        .audit_events(
            app.org.id,
            &AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await?;
    let mut changes: Vec<(String, Option<bool>)> = events
        .iter()
        .filter(|event| event.action.starts_with("mcp_server."))
        .map(|event| {
            let details: Value = serde_json::from_str(&event.details).unwrap_or_default();
            (event.action.clone(), details["headers_changed"].as_bool())
        })
        .collect();
    changes.reverse();
    assert_eq!(
        changes,
        [
            ("mcp_server.created".to_owned(), Some(true)),
            ("mcp_server.updated".to_owned(), Some(false)),
            ("mcp_server.updated".to_owned(), Some(true)),
            ("mcp_server.deleted".to_owned(), None),
        ]
    );
    Ok(())
}

async fn invalid_mcp_servers_are_refused_naming_the_field_and_change_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = app_with_shared_servers(backend).await?;
    let admin = app.org.admin_key.clone();
    let put = |name: &str, body: Value| {
        Call::put(format!("/v1/mcp-servers/{name}"))
            .key(&admin)
            .json(body)
    };
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "a stdio server",
            "local",
            json!({"transport": "stdio", "command": "sh", "args": ["-c", "id"]}),
            "mcp server 'local': command: an org's MCP server must be streamable HTTP",
        ),
        (
            "a stdio transport",
            "local",
            json!({"transport": "stdio", "url": "http://x.invalid"}),
            "mcp server 'local': transport: an org's MCP server must be streamable HTTP",
        ),
        (
            "a shared server's name",
            "time",
            json!({"url": "http://x.invalid/mcp"}),
            "mcp server 'time': name: the deployment has a shared MCP server of this name",
        ),
        (
            "a URL that is not http",
            "docs",
            json!({"url": "file:///etc/passwd"}),
            "mcp server 'docs': url: must start with http:// or https://",
        ),
        (
            "no URL",
            "docs",
            json!({"headers": {"X-A": "b"}}),
            "mcp server 'docs': missing field `url`",
        ),
        (
            "a name that cannot be a tool name",
            "a__b",
            json!({"url": "http://x.invalid/mcp"}),
            "mcp server 'a__b': name:",
        ),
        (
            "a header with a line break",
            "docs",
            json!({"url": "http://x.invalid/mcp", "headers": {"X-A": "b\r\nHost: evil"}}),
            "mcp server 'docs': headers.X-A:",
        ),
        (
            "a header the transport sets",
            "docs",
            json!({"url": "http://x.invalid/mcp", "headers": {"Mcp-Session-Id": "x"}}),
            "mcp server 'docs': headers.Mcp-Session-Id: set by the MCP transport",
        ),
        (
            "header names without values",
            "docs",
            json!({"url": "http://x.invalid/mcp", "header_names": ["X-A"]}),
            "mcp server 'docs': header_names:",
        ),
        (
            "a timeout of zero",
            "docs",
            json!({"url": "http://x.invalid/mcp", "timeout_ms": 0}),
            "mcp server 'docs': timeout_ms: 1 to",
        ),
        (
            "an unknown field",
            "docs",
            json!({"url": "http://x.invalid/mcp", "colour": "red"}),
            "unknown field `colour`",
        ),
    ];
    let mut refusals = Vec::new();
    for (what, name, body, expected) in cases {
        let reply = app.send(put(name, body.clone())).await;
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            reply.status == StatusCode::UNPROCESSABLE_ENTITY && message.contains(expected),
            "{what}: {} {}",
            reply.status,
            reply.body
        );
        refusals.push(refusal(
            what,
            put(name, body),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ));
    }
    app.assert_refused(refusals).await?;
    Ok(())
}

async fn the_mcp_servers_quota_refuses_a_new_server_and_usage_counts_the_orgs_own(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = app_with_shared_servers(backend).await?;
    let admin = app.org.admin_key.clone();
    app.accepted(
        Call::put(format!("/v1/orgs/{}/quotas", app.org.id))
            .key(&app.platform_key)
            .json(json!({"mcp_servers": 1})),
    )
    .await?;
    let put = |name: &str, url: &str| {
        Call::put(format!("/v1/mcp-servers/{name}"))
            .key(&admin)
            .json(json!({"url": url}))
    };
    app.accepted(put("docs", "http://docs.invalid/mcp")).await?;
    let before = app.fingerprint().await?;
    let refused = app.send(put("wiki", "http://wiki.invalid/mcp")).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "quota_exceeded");
    assert_eq!(refused.body["error"]["quota"], "mcp_servers");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("60")
    );
    assert_eq!(
        crate::support::changes(&before, &app.fingerprint().await?),
        Vec::<String>::new(),
        "a refused server writes nothing"
    );
    // Replacing the one it has is not a new server.
    app.accepted(put("docs", "http://docs2.invalid/mcp"))
        .await?;
    let usage = app.accepted(Call::get("/v1/usage").key(&admin)).await?;
    assert_eq!(
        usage.body["mcp_servers"],
        json!({"limit": 1, "used": 1}),
        "{}",
        usage.body
    );
    // The shared servers do not count, and another org's count is its own.
    let theirs = app
        .accepted(Call::get("/v1/usage").key(&app.other_org.admin_key))
        .await?;
    assert_eq!(theirs.body["mcp_servers"]["used"], 0, "{}", theirs.body);
    app.accepted(
        Call::put("/v1/mcp-servers/wiki")
            .key(&app.other_org.admin_key)
            .json(json!({"url": "http://wiki.invalid/mcp"})),
    )
    .await?;
    Ok(())
}
