//! `GET /v1/agents`: the agents a message may name, with their model profile and tools.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/agents", get(list_agents))
}

async fn list_agents(
    State(state): State<AppState>,
    _caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let catalog = &state.config.agents;
    let agents: Vec<Value> = catalog
        .ids()
        .filter_map(|id| catalog.get(id))
        .map(|agent| {
            json!({
                "id": agent.id.as_str(),
                "name": agent.name,
                "description": agent.description,
                "model_profile": agent.profile,
                "tools": agent.tools,
                "requires_approval": agent.approval_required,
                "skills": agent.skills,
                "default": agent.id == state.config.default_agent,
            })
        })
        .collect();
    Ok(Json(json!({"agents": agents})))
}
