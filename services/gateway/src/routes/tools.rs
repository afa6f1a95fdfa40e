//! `GET /v1/tools?agent=<id>` (what an agent is offered right now, MCP tools included)
//! and `GET /v1/mcp/servers` (the sidecar's servers and their health).

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use sable_proto::v1 as pb;
use sable_tools::{ToolRisk, ToolSource};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tools", get(list_tools))
        .route("/v1/mcp/servers", get(list_servers))
}

#[derive(Debug, Deserialize)]
struct ToolsQuery {
    agent: Option<String>,
}

async fn list_tools(
    State(state): State<AppState>,
    _caller: Authenticated,
    Query(query): Query<ToolsQuery>,
) -> Result<Json<Value>, ApiError> {
    let agent_id = query
        .agent
        .unwrap_or_else(|| state.config.default_agent.as_str().to_owned());
    let agent = state
        .config
        .agents
        .get(&agent_id)
        .ok_or(ApiError::UnknownAgent(agent_id))?;
    let registry = state.config.tools.for_turn().await;
    let names = registry.offered(
        &agent.tools,
        !agent.skills.is_empty(),
        agent.allow_skill_scripts,
    );
    let tools: Vec<Value> = names
        .into_iter()
        .filter_map(|name| registry.descriptor(name))
        .map(|tool| {
            let mut entry = json!({
                "name": tool.name,
                "source": tool.source,
                "description": tool.description,
                "input_schema": tool.parameters,
                "idempotent": tool.idempotent,
                "requires_approval": tool.risk == ToolRisk::High
                    || agent.approval_required.contains(&tool.name),
            });
            if tool.source == ToolSource::Mcp
                && let Some((server, _)) = tool
                    .name
                    .strip_prefix("mcp__")
                    .and_then(|rest| rest.split_once("__"))
            {
                entry["server"] = json!(server);
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "tools": tools })))
}

async fn list_servers(
    State(state): State<AppState>,
    _caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let Some(catalog) = state.config.tools.mcp() else {
        return Ok(Json(json!({"servers": []})));
    };
    let status = sidecar_status(catalog).await.map_err(|status| {
        tracing::warn!(%status, "cannot read the MCP sidecar's status");
        ApiError::Unavailable("the MCP sidecar")
    })?;
    Ok(Json(json!({"servers": servers_json(&status)})))
}

/// The sidecar's `Status`, within a short deadline.
pub(crate) async fn sidecar_status(
    catalog: &sable_tools::McpCatalog,
) -> Result<pb::StatusResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::StatusRequest {});
    request.set_timeout(std::time::Duration::from_secs(2));
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        catalog.client().status(request),
    )
    .await
    .map_err(|_elapsed| tonic::Status::deadline_exceeded("the MCP sidecar did not answer"))??;
    Ok(answer.into_inner())
}

pub(crate) fn servers_json(status: &pb::StatusResponse) -> Vec<Value> {
    status
        .servers
        .iter()
        .map(|server| {
            let mut entry = json!({
                "name": server.name,
                "transport": server.transport,
                "state": server.state,
                "tools": server.tool_count,
                "calls": server.calls,
                "errors": server.errors,
                "p50_ms": server.p50_ms,
                "p99_ms": server.p99_ms,
            });
            if let Some(error) = &server.last_error {
                entry["last_error"] = json!(error);
            }
            entry
        })
        .collect()
}
