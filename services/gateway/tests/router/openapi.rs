//! `GET /v1/openapi.json` (`openapi.rs`): the document is OpenAPI 3.1, and it lists
//! exactly the routes the router serves: every documented operation is served, every
//! other method on a documented path is refused with 405, and every route registration
//! in the gateway's source goes through utoipa-axum's `routes!` (the only way into the
//! document), one documented operation per handler.

use std::collections::BTreeSet;
use std::path::Path;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Backend, Call, TestApp};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(method, path)` of every operation the document lists.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(move |method| ((*method).to_owned(), path.clone()))
        })
        .collect()
}

/// A documented path with its parameters filled in.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut in_parameter = false;
    for character in path.chars() {
        match character {
            '{' => in_parameter = true,
            '}' => {
                in_parameter = false;
                out.push('x');
            }
            _ if in_parameter => {}
            _ => out.push(character),
        }
    }
    out
}

/// The router's own answer for a path or method it does not serve: the fallbacks, or
/// the permission table's refusal of a route it has no rule for (fail closed).
fn unserved(reply: &crate::support::Reply) -> bool {
    let message = &reply.body["error"]["message"];
    reply.status == StatusCode::METHOD_NOT_ALLOWED
        || (reply.status == StatusCode::NOT_FOUND && message == "route not found")
        || (reply.status == StatusCode::FORBIDDEN
            && message == "this route has no permission rule; nobody may call it")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_every_operations_errors_and_security()
-> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let reply = app.send(Call::get("/v1/openapi.json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let document = reply.body;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    assert_eq!(
        document["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    let mut problems = Vec::new();
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][&method];
        let responses = operation["responses"].as_object().expect("responses");
        let secured = operation["security"]
            .as_array()
            .is_some_and(|security| !security.is_empty());
        let open = ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"].contains(&path.as_str())
            || path.starts_with("/v1/channels/feishu/{app_id}/");
        if !secured && !open {
            problems.push(format!("{method} {path}: no bearer security"));
        }
        if secured && !responses.contains_key("401") {
            problems.push(format!("{method} {path}: no 401"));
        }
        if !responses.keys().any(|status| status.starts_with('2')) {
            problems.push(format!("{method} {path}: no success response"));
        }
        if !responses.contains_key("500") {
            problems.push(format!("{method} {path}: no 500"));
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415"] {
                if !responses.contains_key(status) {
                    problems.push(format!("{method} {path}: a body but no {status}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[tokio::test]
async fn every_documented_operation_is_served_and_no_other_method_is() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let document = app.send(Call::get("/v1/openapi.json")).await.body;
    let documented = operations(&document);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    let mut problems = Vec::new();
    for path in paths {
        for method in METHODS {
            let call = Call::new(
                Method::from_bytes(method.to_uppercase().as_bytes())?,
                concrete(path),
            );
            let reply = app.send(call).await;
            let is_documented = documented.contains(&(method.to_owned(), path.clone()));
            match (is_documented, unserved(&reply)) {
                (true, true) => problems.push(format!(
                    "{method} {path} is documented but not served ({})",
                    reply.status
                )),
                (false, false) => problems.push(format!(
                    "{method} {path} is served ({}) but not documented",
                    reply.status
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The gateway's source, file by file.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sources(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path)?));
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_route_of_the_source_is_registered_with_its_document() -> anyhow::Result<()> {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    )?;
    let mut handlers = Vec::new();
    let mut bypasses = Vec::new();
    for (file, text) in &files {
        // Not JSON APIs, so not in the document (their permission rules are in the table
        // all the same): the MCP endpoint speaks JSON-RPC, the console serves files.
        if file.ends_with("console.rs") || file.ends_with("routes/mcp/mod.rs") {
            continue;
        }
        for line in text.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            // Registrations that would serve a route the document does not list: axum's
            // own methods given a path literal or a path constant (`intake.route(x)` is
            // not one).
            for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                let registers = line.match_indices(bypass).any(|(at, _)| {
                    line[at + bypass.len()..]
                        .chars()
                        .next()
                        .is_some_and(|next| next == '"' || next.is_ascii_uppercase())
                });
                if registers {
                    bypasses.push(format!("{file}: {line}"));
                }
            }
        }
        for (index, _) in text.match_indices("routes!(") {
            let rest = &text[index + "routes!(".len()..];
            let list = &rest[..rest.find(')').expect("routes! closes")];
            handlers.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(|name| format!("{file}: {name}")),
            );
        }
    }
    assert!(
        bypasses.is_empty(),
        "routes registered outside utoipa-axum's routes! (so missing from /v1/openapi.json):\n{}",
        bypasses.join("\n")
    );
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let document = app.send(Call::get("/v1/openapi.json")).await.body;
    assert_eq!(
        handlers.len(),
        operations(&document).len(),
        "one documented operation per registered handler; handlers:\n{}",
        handlers.join("\n")
    );
    Ok(())
}

/// The permission table and the document name the same routes: a documented route
/// without a rule would be refused to everyone, a rule without a route is stale.
#[tokio::test]
async fn every_documented_route_has_a_permission_rule_and_every_rule_a_route() -> anyhow::Result<()>
{
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let document = app.send(Call::get("/v1/openapi.json")).await.body;
    let documented = operations(&document);
    let mut wrong = Vec::new();
    for (method, path) in &documented {
        let method: axum::http::Method = method.to_uppercase().parse()?;
        if sable_gateway::permissions::find(&method, path).is_none() {
            wrong.push(format!(
                "{method} {path} is served but has no permission rule"
            ));
        }
    }
    // Outside the document by design: the MCP endpoint and the console's files.
    let undocumented = ["/mcp", "/console", "/console/", "/console/{*path}"];
    for rule in sable_gateway::permissions::RULES {
        let key = (rule.method.to_lowercase(), rule.path.to_owned());
        if !documented.contains(&key) && !undocumented.contains(&rule.path) {
            wrong.push(format!(
                "{} {} has a rule but no route",
                rule.method, rule.path
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Found by schemathesis after the permission table moved authentication in front of the
/// handlers: the OpenAI-compatible routes refused a missing key in Sable's shape, not
/// the OpenAI shape their document (and the SDKs) expect.
#[tokio::test]
async fn the_openai_routes_refuse_keys_in_openais_shape() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    for call in [
        Call::get("/v1/models"),
        Call::get("/v1/models/agent:default"),
        Call::get("/v1/responses/resp_x").key("sable_nope_nope"),
        Call::post("/v1/chat/completions").json(serde_json::json!({})),
        Call::post("/v1/responses").json(serde_json::json!({})),
    ] {
        let reply = app.send(call).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
        assert_eq!(
            reply.body["error"]["type"], "invalid_request_error",
            "{:?}",
            reply.body
        );
        assert_eq!(reply.body["error"]["code"], "invalid_api_key");
    }
    // Sable's own routes keep their shape.
    let reply = app.send(Call::get("/v1/agents")).await;
    assert_eq!(reply.body["error"]["code"], "unauthorized");
    Ok(())
}
