//! `GET /v1/tools?agent=<id>` (what an agent is offered right now, MCP tools included)
//! and `GET /v1/mcp/servers` (the sidecar's servers and their health).

use axum::Json;
use axum::extract::{Query, State};
use sable_proto::v1 as pb;
use sable_tools::{ToolRisk, ToolSource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tools))
        .routes(routes!(list_servers))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ToolsQuery {
    /// The agent whose tools are listed; the default agent when absent.
    agent: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ToolList {
    tools: Vec<ToolView>,
}

/// A tool an agent is offered.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ToolView {
    name: String,
    /// `builtin`, `skill` or `mcp`.
    #[schema(value_type = String)]
    source: ToolSource,
    description: String,
    /// The JSON schema of the arguments object.
    input_schema: Value,
    idempotent: bool,
    requires_approval: bool,
    /// The MCP server of an MCP tool.
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServerList {
    servers: Vec<ServerView>,
}

/// One MCP server of the sidecar, and its health.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServerView {
    name: String,
    /// `stdio` or `http`.
    transport: String,
    /// `connecting`, `ready`, `degraded` or `down`.
    state: String,
    tools: u32,
    calls: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// What an agent is offered right now, MCP tools included.
#[utoipa::path(
    get,
    path = "/v1/tools",
    tag = "tools",
    security(("api_key" = [])),
    params(ToolsQuery),
    responses(
        (status = 200, description = "The agent's tools", body = ToolList),
        (status = 422, description = "`agent` names no agent (`unknown_agent`)", body = ErrorBody),
    ),
)]
async fn list_tools(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<ToolsQuery>,
) -> Result<Json<ToolList>, ApiError> {
    let org = state.orgs().current(caller.org_id).await?;
    let agent_id = query
        .agent
        .unwrap_or_else(|| org.routing.default_agent.as_str().to_owned());
    let agent = org
        .agents
        .get(&agent_id)
        .ok_or(ApiError::UnknownAgent(agent_id))?;
    let own_servers = (org.version > 0).then(|| sable_tools::OrgMcpServers {
        org_id: caller.org_id,
        config_version: org.version,
        servers: org.mcp_servers.clone(),
    });
    let registry = state.config.tools.for_turn(own_servers.as_ref()).await;
    let names = registry.offered(
        &agent.tools,
        !agent.skills.is_empty(),
        agent.allow_skill_scripts,
    );
    let tools = names
        .into_iter()
        .filter_map(|name| registry.descriptor(name))
        .map(|tool| ToolView {
            name: tool.name.clone(),
            source: tool.source,
            description: tool.description.clone(),
            input_schema: tool.parameters.clone(),
            idempotent: tool.idempotent,
            requires_approval: tool.risk == ToolRisk::High
                || agent.approval_required.contains(&tool.name),
            server: (tool.source == ToolSource::Mcp)
                .then(|| {
                    tool.name
                        .strip_prefix("mcp__")
                        .and_then(|rest| rest.split_once("__"))
                        .map(|(server, _)| server.to_owned())
                })
                .flatten(),
        })
        .collect();
    Ok(Json(ToolList { tools }))
}

/// The MCP sidecar's servers and their health (none when no sidecar is configured).
#[utoipa::path(
    get,
    path = "/v1/mcp/servers",
    tag = "tools",
    security(("api_key" = [])),
    responses((status = 200, description = "The servers", body = ServerList)),
)]
async fn list_servers(
    State(state): State<AppState>,
    _caller: Authenticated,
) -> Result<Json<ServerList>, ApiError> {
    let Some(catalog) = state.config.tools.mcp() else {
        return Ok(Json(ServerList {
            servers: Vec::new(),
        }));
    };
    let status = sidecar_status(catalog).await.map_err(|status| {
        tracing::warn!(%status, "cannot read the MCP sidecar's status");
        ApiError::Unavailable("the MCP sidecar")
    })?;
    Ok(Json(ServerList {
        servers: servers_json(&status),
    }))
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

pub(crate) fn servers_json(status: &pb::StatusResponse) -> Vec<ServerView> {
    status
        .servers
        .iter()
        .map(|server| ServerView {
            name: server.name.clone(),
            transport: server.transport.clone(),
            state: server.state.clone(),
            tools: server.tool_count,
            calls: server.calls,
            errors: server.errors,
            p50_ms: server.p50_ms,
            p99_ms: server.p99_ms,
            last_error: server.last_error.clone(),
        })
        .collect()
}
