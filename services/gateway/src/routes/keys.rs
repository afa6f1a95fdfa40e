//! An org's API keys: `GET|POST /v1/keys`, `DELETE /v1/keys/{prefix}` for the caller's own
//! org, and the same under `/v1/orgs/{org_id}/keys` for a named org (the platform admin's
//! way into any org; an org's admin reaches only its own). Secrets are shown once, at
//! creation; listings carry prefixes only. A key may create or revoke keys up to its own
//! role (`Role::may_manage`).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use sable_core::{OrgId, Role};
use sable_store::{ApiKeyRecord, NewApiKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::{ApiError, AppState};

/// The longest key name accepted.
const MAX_KEY_NAME_CHARS: usize = 100;
/// The longest lifetime a key may be given (ten years).
const MAX_KEY_LIFETIME_SECS: i64 = 10 * 366 * 24 * 3600;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_own_keys).post(create_own_key))
        .route("/v1/keys/{prefix}", delete(revoke_own_key))
        .route(
            "/v1/orgs/{org_id}/keys",
            get(list_org_keys).post(create_org_key),
        )
        .route("/v1/orgs/{org_id}/keys/{prefix}", delete(revoke_org_key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: Option<String>,
    /// `viewer`, `member`, `operator` (the default), `admin` or `owner`.
    role: Option<String>,
    /// Seconds until the key stops working; omitted: it does not expire.
    expires_in_seconds: Option<i64>,
}

/// The role of a key created without one: what every key could do before roles existed
/// (chat, approvals, cron), short of managing keys.
pub const DEFAULT_KEY_ROLE: Role = Role::Operator;

async fn list_own_keys(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    list_keys(&state, caller.org_id).await
}

async fn list_org_keys(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    list_keys(&state, org_id).await
}

async fn create_own_key(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org_id = caller.org_id;
    create_key(&state, &caller, org_id, body).await
}

async fn create_org_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(org_id): Path<String>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let org_id = org_in_path(&state, &caller, &org_id).await?;
    create_key(&state, &caller, org_id, body).await
}

async fn revoke_own_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(prefix): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org_id = caller.org_id;
    revoke_key(&state, &caller, org_id, &prefix).await
}

async fn revoke_org_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path((org_id, prefix)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
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

async fn list_keys(state: &AppState, org_id: OrgId) -> Result<Json<Value>, ApiError> {
    let keys = state.store.api_keys(org_id).await?;
    Ok(Json(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

async fn create_key(
    state: &AppState,
    caller: &Authenticated,
    org_id: OrgId,
    body: CreateKeyBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        && (name.is_empty() || name.chars().count() > MAX_KEY_NAME_CHARS)
    {
        return Err(ApiError::Validation(format!(
            "name: must be 1 to {MAX_KEY_NAME_CHARS} characters"
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
    let mut body = key_json(&record);
    body["key"] = json!(created.key);
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
) -> Result<Json<Value>, ApiError> {
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
    // Other gateways stop trusting the key within `AUTH_CACHE_TTL`; this one at once.
    state.auth_cache.clear();
    Ok(Json(key_json(&revoked)))
}

pub(crate) fn key_json(key: &ApiKeyRecord) -> Value {
    json!({
        "prefix": key.prefix,
        "name": key.name,
        "role": key.role,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    })
}
