//! The org's own MCP servers: `GET /v1/mcp-servers` (the org's and the deployment's
//! shared ones, marked as such), `PUT` and `DELETE /v1/mcp-servers/{name}`; `admin` and
//! above (a server's URL may itself carry a token).
//!
//! An org's server is streamable HTTP only: a `stdio` server would run a command on the
//! sidecar's host, so it is refused naming the field. Its `headers` are write-only:
//! sealed with `SABLE_SECRETS_KEY` (bound to the org and the server), never answered,
//! logged or audited (the event says `headers_changed`); a `PUT` without `headers` keeps
//! the stored ones, `"headers": {}` removes them. A name the deployment's shared servers
//! use is refused. Adding a server meets the org's `mcp_servers` quota (429
//! `quota_exceeded`); the next turn after a change runs with it (workers cache by version,
//! the sidecar opens and closes the org's connections as turns ask for them).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sable_runtime::{McpServerSpec, check_mcp_headers, check_mcp_server_name, parse_mcp_server};
use sable_store::ConfigKind;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::org_config::{ConfigChange, Source, delete, find, items, object_text, put};
use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_mcp_servers))
        .routes(routes!(put_mcp_server, delete_mcp_server))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct McpServerList {
    servers: Vec<McpServerView>,
    /// The org's configuration version as read.
    version: i64,
}

/// An MCP server the org's agents may use, without any secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct McpServerView {
    name: String,
    /// `deployment` (a shared server of `config/mcp.toml`) or `org` (the org's own).
    source: Source,
    /// True for the deployment's servers, which every org is served.
    shared: bool,
    /// `http` or (shared servers only) `stdio`.
    transport: String,
    enabled: bool,
    /// The org's server's URL (a shared server's is not shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// The names of the headers the org's server is sent (never their values).
    #[serde(skip_serializing_if = "Option::is_none")]
    header_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deny_tools: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotent_tools: Option<Vec<String>>,
    /// When the org's server was last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<DateTime<Utc>>,
}

/// The org's MCP servers and the deployment's shared ones (marked `shared`), without
/// header values.
#[utoipa::path(
    get,
    path = "/v1/mcp-servers",
    tag = "tools",
    security(("api_key" = [])),
    responses((status = 200, description = "The servers", body = McpServerList)),
)]
async fn list_mcp_servers(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<McpServerList>, ApiError> {
    let snapshot = state.store.org_config(caller.org_id).await?;
    let mut servers: Vec<McpServerView> = state
        .orgs()
        .base()
        .mcp_servers
        .iter()
        .map(|server| McpServerView {
            name: server.name.clone(),
            source: Source::Deployment,
            shared: true,
            transport: server.transport.clone(),
            enabled: server.enabled,
            url: None,
            header_names: None,
            timeout_ms: None,
            max_concurrent_calls: None,
            allow_tools: None,
            deny_tools: None,
            idempotent_tools: None,
            updated_at: None,
        })
        .collect();
    for item in items(&snapshot, ConfigKind::McpServer) {
        let spec = parse_mcp_server(&item.spec).map_err(ApiError::OrgConfig)?;
        servers.push(own_view(&item.name, spec, item.updated_at));
    }
    servers.sort_by(|a, b| a.name.cmp(&b.name).then(a.shared.cmp(&b.shared)));
    Ok(Json(McpServerList {
        servers,
        version: snapshot.version,
    }))
}

fn own_view(name: &str, spec: McpServerSpec, updated_at: DateTime<Utc>) -> McpServerView {
    McpServerView {
        name: name.to_owned(),
        source: Source::Org,
        shared: false,
        transport: spec.transport,
        enabled: spec.enabled,
        url: Some(spec.url),
        header_names: Some(spec.header_names),
        timeout_ms: spec.timeout_ms,
        max_concurrent_calls: spec.max_concurrent_calls,
        allow_tools: Some(spec.allow_tools),
        deny_tools: Some(spec.deny_tools),
        idempotent_tools: Some(spec.idempotent_tools),
        updated_at: Some(updated_at),
    }
}

/// Creates or replaces one of the org's MCP servers. Body: `url` (required, `http(s)://`),
/// `transport` (`http`, the only one an org may use), `headers` (`{"Name": "value"}`,
/// write-only; omitted on a replace: the stored ones are kept; `{}` removes them),
/// `timeout_ms`, `enabled`, `allow_tools`, `deny_tools`, `idempotent_tools`,
/// `max_concurrent_calls`. Its tools are offered as `mcp__<name>__<tool>` to the org's
/// agents that allow them.
#[utoipa::path(
    put,
    path = "/v1/mcp-servers/{name}",
    tag = "tools",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The server's name")),
    request_body(content = Object, description = "The server and its headers"),
    responses(
        (status = 200, description = "Replaced", body = ConfigChange),
        (status = 201, description = "Created", body = ConfigChange),
        (status = 422, description = "The server is invalid (a stdio server, a shared server's name, a bad URL or header); the message names the field", body = ErrorBody),
        (status = 429, description = "The org's `mcp_servers` quota is reached (`quota_exceeded`, `Retry-After`)", body = ErrorBody),
        (status = 503, description = "Headers were given but the deployment has no SABLE_SECRETS_KEY", body = ErrorBody),
    ),
)]
async fn put_mcp_server(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<Value>,
) -> Result<(StatusCode, Json<ConfigChange>), ApiError> {
    let invalid = |message: String| ApiError::Validation(format!("mcp server '{name}': {message}"));
    check_mcp_server_name(&name).map_err(|message| invalid(format!("name: {message}")))?;
    if state
        .orgs()
        .base()
        .mcp_servers
        .iter()
        .any(|shared| shared.name == name)
    {
        return Err(invalid(
            "name: the deployment has a shared MCP server of this name; choose another".into(),
        ));
    }
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::Validation(
            "the body must be a JSON object".into(),
        ));
    };
    if object.contains_key("header_names") {
        return Err(invalid(
            "header_names: not a field of the body; send `headers` (names and values)".into(),
        ));
    }
    let headers = match object.remove("headers") {
        None | Some(Value::Null) => None,
        Some(headers) => Some(check_mcp_headers(&headers).map_err(invalid)?),
    };
    let header_names = match &headers {
        Some(headers) => headers.keys().cloned().collect(),
        None => stored_header_names(&state, &caller, &name).await?,
    };
    object.insert("header_names".into(), header_names.into());
    let text = object_text(&body)?;
    let spec = parse_mcp_server(&text).map_err(invalid)?;
    let sealed = seal_headers(&state, &caller, &name, headers.as_ref())?;
    let normalized =
        serde_json::to_string(&spec).map_err(|error| ApiError::Internal(error.into()))?;
    put(
        &state,
        &caller,
        ConfigKind::McpServer,
        &name,
        normalized,
        sealed,
    )
    .await
}

/// The header names of the org's stored server of this name (none for a new one).
async fn stored_header_names(
    state: &AppState,
    caller: &Authenticated,
    name: &str,
) -> Result<Vec<String>, ApiError> {
    let snapshot = state.store.org_config(caller.org_id).await?;
    let Some(item) = find(&snapshot, ConfigKind::McpServer, name) else {
        return Ok(Vec::new());
    };
    let stored = parse_mcp_server(&item.spec).map_err(ApiError::OrgConfig)?;
    Ok(stored.header_names)
}

/// The headers sealed for the store: `None` keeps what is stored. An empty map is sealed
/// too (it replaces stored headers), and needs the key only when there is something to
/// replace.
fn seal_headers(
    state: &AppState,
    caller: &Authenticated,
    name: &str,
    headers: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(headers) = headers else {
        return Ok(None);
    };
    let Some(secrets) = state.orgs().secrets() else {
        if headers.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::Unavailable("the secrets key (SABLE_SECRETS_KEY)"));
    };
    let json = serde_json::to_string(headers).map_err(|error| ApiError::Internal(error.into()))?;
    let context = sable_runtime::mcp_headers_context(caller.org_id, name);
    Ok(Some(secrets.seal_enveloped(&json, &context)))
}

/// Deletes one of the org's MCP servers (its connections close as the org's next turns
/// no longer name it).
#[utoipa::path(
    delete,
    path = "/v1/mcp-servers/{name}",
    tag = "tools",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "The server's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The org has no MCP server of its own with this name", body = ErrorBody),
    ),
)]
async fn delete_mcp_server(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, ConfigKind::McpServer, &name).await
}
