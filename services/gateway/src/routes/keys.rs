//! An org's API keys: `GET|POST /v1/keys`, `DELETE /v1/keys/{prefix}` for the caller's own
//! org, and the same under `/v1/orgs/{org_id}/keys` for a named org (the platform admin's
//! way into any org; an org's admin reaches only its own). Secrets are shown once, at
//! creation; listings carry prefixes only. A key may create or revoke keys up to its own
//! role (`Role::may_manage`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sable_core::{OrgId, Role};
use sable_store::{ApiKeyRecord, NewApiKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

/// The longest key name accepted.
const MAX_KEY_NAME_CHARS: usize = 100;
/// The longest lifetime a key may be given (ten years).
const MAX_KEY_LIFETIME_SECS: i64 = 10 * 366 * 24 * 3600;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_own_keys, create_own_key))
        .routes(routes!(revoke_own_key))
        .routes(routes!(list_org_keys, create_org_key))
        .routes(routes!(revoke_org_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    /// 1 to 100 printable characters.
    name: Option<String>,
    /// `viewer`, `member`, `operator` (the default), `admin` or `owner`.
    #[schema(pattern = "^(viewer|member|operator|admin|owner)$")]
    role: Option<String>,
    /// Seconds until the key stops working; omitted: it does not expire.
    #[schema(minimum = 1, maximum = 316_224_000)]
    expires_in_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyList {
    keys: Vec<KeyView>,
}

/// An API key without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyView {
    /// Names the key in listings and revocation.
    prefix: String,
    name: Option<String>,
    /// `viewer`, `member`, `operator`, `admin`, `owner` or `platform`.
    #[schema(value_type = String)]
    role: Role,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// A new key, with its secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    record: KeyView,
    /// The whole key (`sable_<prefix>_<secret>`), to send as `Authorization: Bearer`.
    key: String,
}

/// The role of a key created without one: what every key could do before roles existed
/// (chat, approvals, cron), short of managing keys.
pub const DEFAULT_KEY_ROLE: Role = Role::Operator;

/// The caller's org's API keys, revoked ones included (admin keys).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = [])),
    responses((status = 200, description = "The keys", body = KeyList)),
)]
async fn list_own_keys(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<KeyList>, ApiError> {
    list_keys(&state, caller.org_id).await
}

/// A named org's API keys (its admins, or the platform admin).
#[utoipa::path(
    get,
    path = "/v1/orgs/{org_id}/keys",
    tag = "keys",
    security(("api_key" = [])),
    params(("org_id" = String, Path, description = "The org's id")),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 404, description = "No org the caller may act in has this id", body = ErrorBody),
    ),
)]
async fn list_org_keys(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    list_keys(&state, org_id).await
}

/// Makes a key in the caller's org, up to the caller's own role; its secret is in this
/// answer only.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = [])),
    request_body = CreateKeyBody,
    responses((status = 201, description = "The key, with its secret", body = CreatedKey)),
)]
async fn create_own_key(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let org_id = caller.org_id;
    create_key(&state, &caller, org_id, body).await
}

/// Makes a key in a named org.
#[utoipa::path(
    post,
    path = "/v1/orgs/{org_id}/keys",
    tag = "keys",
    security(("api_key" = [])),
    params(("org_id" = String, Path, description = "The org's id")),
    request_body = CreateKeyBody,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedKey),
        (status = 404, description = "No org the caller may act in has this id", body = ErrorBody),
    ),
)]
async fn create_org_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    create_key(&state, &caller, org_id, body).await
}

/// Revokes a key of the caller's org (up to the caller's role): it stops working at once
/// on this gateway, within seconds on others.
#[utoipa::path(
    delete,
    path = "/v1/keys/{prefix}",
    tag = "keys",
    security(("api_key" = [])),
    params(("prefix" = String, Path, description = "The key's prefix")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 404, description = "No key of the org has this prefix", body = ErrorBody),
    ),
)]
async fn revoke_own_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(prefix): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let org_id = caller.org_id;
    revoke_key(&state, &caller, org_id, &prefix).await
}

/// Revokes a key of a named org.
#[utoipa::path(
    delete,
    path = "/v1/orgs/{org_id}/keys/{prefix}",
    tag = "keys",
    security(("api_key" = [])),
    params(
        ("org_id" = String, Path, description = "The org's id"),
        ("prefix" = String, Path, description = "The key's prefix"),
    ),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 404, description = "No such org, or no key of it has this prefix", body = ErrorBody),
    ),
)]
async fn revoke_org_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((org_id, prefix)): Path<(String, String)>,
) -> Result<Json<KeyView>, ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    revoke_key(&state, &caller, org_id, &prefix).await
}

/// The org a path names, when it exists and the caller may act in it (404 otherwise).
pub(crate) async fn org_in_path(
    state: &AppState,
    caller: &Authenticated,
    org_id: &str,
) -> Result<OrgId, ApiError> {
    let org_id: OrgId = org_id
        .parse()
        .map_err(|_bad_id| ApiError::NotFound("org"))?;
    let org_id = caller.org_scope(org_id)?;
    if org_id == sable_store::platform_org() || !state.store.org_exists(org_id).await? {
        return Err(ApiError::NotFound("org"));
    }
    Ok(org_id)
}

async fn list_keys(state: &AppState, org_id: OrgId) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.api_keys(org_id).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(key_json).collect(),
    }))
}

async fn create_key(
    state: &AppState,
    caller: &Authenticated,
    org_id: OrgId,
    body: CreateKeyBody,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let role = match body.role.as_deref() {
        None => DEFAULT_KEY_ROLE,
        Some(text) => text
            .parse::<Role>()
            .ok()
            .filter(|role| Role::ORG_ROLES.contains(role))
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "role: expected one of viewer, member, operator, admin, owner; got \"{text}\""
                ))
            })?,
    };
    if !caller.role.may_manage(role) {
        return Err(ApiError::Validation(format!(
            "role: a key with role '{}' cannot create a key with role '{role}'",
            caller.role
        )));
    }
    let name = body.name.map(|name| name.trim().to_owned());
    if let Some(name) = &name
        && (name.is_empty()
            || name.chars().count() > MAX_KEY_NAME_CHARS
            || name.chars().any(char::is_control))
    {
        return Err(ApiError::Validation(format!(
            "name: must be 1 to {MAX_KEY_NAME_CHARS} printable characters"
        )));
    }
    let expires_at = body.expires_in_seconds.map(expiry).transpose()?;
    let new = NewApiKey::new(org_id, role)
        .named(name.as_deref())
        .expiring(expires_at);
    let created = state.store.create_api_key(&new, &caller.actor).await?;
    let record = state
        .store
        .api_keys(org_id)
        .await?
        .into_iter()
        .find(|key| key.id == created.id)
        .ok_or(ApiError::NotFound("key"))?;
    let body = CreatedKey {
        record: key_json(&record),
        key: created.key,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// When a key given `seconds` to live stops working.
fn expiry(seconds: i64) -> Result<DateTime<Utc>, ApiError> {
    if !(1..=MAX_KEY_LIFETIME_SECS).contains(&seconds) {
        return Err(ApiError::Validation(format!(
            "expires_in_seconds: must be 1 to {MAX_KEY_LIFETIME_SECS}"
        )));
    }
    Ok(Utc::now() + chrono::TimeDelta::seconds(seconds))
}

async fn revoke_key(
    state: &AppState,
    caller: &Authenticated,
    org_id: OrgId,
    prefix: &str,
) -> Result<Json<KeyView>, ApiError> {
    // A key above the caller's role is refused as if it were not there to revoke.
    let target = state
        .store
        .api_keys(org_id)
        .await?
        .into_iter()
        .find(|key| key.prefix == prefix)
        .ok_or(ApiError::NotFound("key"))?;
    if !caller.role.may_manage(target.role) {
        return Err(ApiError::Forbidden(target.role));
    }
    let revoked = state
        .store
        .revoke_api_key(Some(org_id), prefix, &caller.actor)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    // Other gateways stop trusting the key at their next change poll; this one at once.
    state.auth_cache.clear();
    Ok(Json(key_json(&revoked)))
}

pub(crate) fn key_json(key: &ApiKeyRecord) -> KeyView {
    KeyView {
        prefix: key.prefix.clone(),
        name: key.name.clone(),
        role: key.role,
        created_at: key.created_at,
        last_used_at: key.last_used_at,
        expires_at: key.expires_at,
        revoked_at: key.revoked_at,
    }
}
