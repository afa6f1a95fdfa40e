//! `GET /v1/me` (who the key is), `GET|POST /v1/orgs` and `GET /v1/orgs/{org_id}`: the
//! platform admin sees and creates every org; an org's keys see only their own org.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sable_core::{OrgId, Role};
use sable_store::OrgRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::routes::keys::org_in_path;
use crate::{ApiError, AppState};

/// The longest org name accepted.
const MAX_ORG_NAME_CHARS: usize = 200;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(show_org))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrgBody {
    /// 1 to 200 characters.
    name: String,
}

/// The key that asks.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Me {
    /// `null` for the platform admin's key.
    org_id: Option<String>,
    /// `viewer`, `member`, `operator`, `admin`, `owner` or `platform`.
    #[schema(value_type = String)]
    role: Role,
    name: Option<String>,
    /// The key as the audit names it.
    actor: String,
    /// The key's id (none for `SABLE_ADMIN_KEY`) and name, as the web console shows them.
    key: KeyOfMe,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyOfMe {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrgList {
    orgs: Vec<OrgView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrgView {
    #[schema(value_type = uuid::Uuid)]
    id: OrgId,
    name: String,
    created_at: DateTime<Utc>,
}

/// Who the key is: its org, role and name.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "orgs",
    security(("api_key" = [])),
    responses((status = 200, description = "The caller's key", body = Me)),
)]
async fn me(caller: Authenticated) -> Json<Me> {
    let platform = caller.role == Role::Platform;
    Json(Me {
        org_id: (!platform).then(|| caller.org_id.to_string()),
        role: caller.role,
        name: caller.key_name.clone(),
        actor: caller.actor.id.clone(),
        key: KeyOfMe {
            id: caller.actor.id.strip_prefix("key:").map(str::to_owned),
            name: caller.key_name.clone(),
        },
    })
}

/// Every org for the platform admin; the caller's own for an org's key.
#[utoipa::path(
    get,
    path = "/v1/orgs",
    tag = "orgs",
    security(("api_key" = [])),
    responses((status = 200, description = "The orgs", body = OrgList)),
)]
async fn list_orgs(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<OrgList>, ApiError> {
    let orgs = state
        .store
        .list_orgs()
        .await?
        .iter()
        .filter(|org| caller.role == Role::Platform || org.id == caller.org_id)
        .map(org_json)
        .collect();
    Ok(Json(OrgList { orgs }))
}

/// Makes an org (the platform admin only).
#[utoipa::path(
    post,
    path = "/v1/orgs",
    tag = "orgs",
    security(("api_key" = [])),
    request_body = CreateOrgBody,
    responses((status = 201, description = "The org", body = OrgView)),
)]
async fn create_org(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateOrgBody>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
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

/// One org the caller may act in.
#[utoipa::path(
    get,
    path = "/v1/orgs/{org_id}",
    tag = "orgs",
    security(("api_key" = [])),
    params(("org_id" = String, Path, description = "The org's id")),
    responses(
        (status = 200, description = "The org", body = OrgView),
        (status = 404, description = "No org the caller may act in has this id", body = ErrorBody),
    ),
)]
async fn show_org(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
) -> Result<Json<OrgView>, ApiError> {
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

fn org_json(org: &OrgRecord) -> OrgView {
    OrgView {
        id: org.id,
        name: org.name.clone(),
        created_at: org.created_at,
    }
}
