//! `GET /v1/me` (who the key is), `GET|POST /v1/orgs` and `GET /v1/orgs/{org_id}`: the
//! platform admin sees and creates every org; an org's keys see only their own org.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use sable_core::Role;
use sable_store::OrgRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::routes::keys::org_in_path;
use crate::{ApiError, AppState};

/// The longest org name accepted.
const MAX_ORG_NAME_CHARS: usize = 200;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/orgs", get(list_orgs).post(create_org))
        .route("/v1/orgs/{org_id}", get(show_org))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrgBody {
    name: String,
}

async fn me(caller: Authenticated) -> Json<Value> {
    let platform = caller.role == Role::Platform;
    Json(json!({
        "org_id": (!platform).then(|| caller.org_id.to_string()),
        "role": caller.role,
        "name": caller.key_name,
        "actor": caller.actor.id,
        "key": {
            "id": caller.actor.id.strip_prefix("key:"),
            "name": caller.key_name,
        },
    }))
}

async fn list_orgs(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let orgs: Vec<Value> = state
        .store
        .list_orgs()
        .await?
        .iter()
        .filter(|org| caller.role == Role::Platform || org.id == caller.org_id)
        .map(org_json)
        .collect();
    Ok(Json(json!({ "orgs": orgs })))
}

async fn create_org(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateOrgBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_ORG_NAME_CHARS {
        return Err(ApiError::Validation(format!(
            "name: must be 1 to {MAX_ORG_NAME_CHARS} characters"
        )));
    }
    let org_id = state.store.create_org_as(name, &caller.actor).await?;
    let org = find_org(&state, org_id).await?;
    Ok((StatusCode::CREATED, Json(org_json(&org))))
}

async fn show_org(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    Ok(Json(org_json(&find_org(&state, org_id).await?)))
}

async fn find_org(state: &AppState, org_id: sable_core::OrgId) -> Result<OrgRecord, ApiError> {
    state
        .store
        .list_orgs()
        .await?
        .into_iter()
        .find(|org| org.id == org_id)
        .ok_or(ApiError::NotFound("org"))
}

fn org_json(org: &OrgRecord) -> Value {
    json!({
        "id": org.id,
        "name": org.name,
        "created_at": org.created_at,
    })
}
