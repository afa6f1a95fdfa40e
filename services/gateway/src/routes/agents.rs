//! `GET /v1/agents`: the agents a message may name, with their model profile and tools.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_agents))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentList {
    agents: Vec<AgentView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentView {
    id: String,
    name: String,
    description: String,
    model_profile: String,
    /// The tools it is offered (`*` patterns included).
    tools: Vec<String>,
    /// Tools whose every call waits for a person's approval.
    requires_approval: Vec<String>,
    skills: Vec<String>,
    /// Whether it answers messages that name no agent.
    default: bool,
}

/// The agents a message may name.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    security(("api_key" = [])),
    responses((status = 200, description = "The agents", body = AgentList)),
)]
async fn list_agents(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<AgentList>, ApiError> {
    let org = state.orgs().current(caller.org_id).await?;
    let catalog = &org.agents;
    let agents = catalog
        .ids()
        .filter_map(|id| catalog.get(id))
        .map(|agent| AgentView {
            id: agent.id.as_str().to_owned(),
            name: agent.name.clone(),
            description: agent.description.clone(),
            model_profile: agent.profile.clone(),
            tools: agent.tools.clone(),
            requires_approval: agent.approval_required.clone(),
            skills: agent.skills.clone(),
            default: agent.id == org.routing.default_agent,
        })
        .collect();
    Ok(Json(AgentList { agents }))
}
