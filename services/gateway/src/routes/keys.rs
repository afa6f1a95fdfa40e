//! `GET /v1/keys`, `POST /v1/keys`, `DELETE /v1/keys/{prefix}`: an org's API keys, for
//! its admin keys. Secrets are shown once, at creation; listings carry prefixes only.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use sable_store::ApiKeyRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::{ApiError, AppState};

/// The longest key name accepted.
const MAX_KEY_NAME_CHARS: usize = 100;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{prefix}", delete(revoke_key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: Option<String>,
    /// `"member"` (default) or `"admin"`.
    role: Option<String>,
}

async fn list_keys(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let keys = state.store.api_keys(caller.org_id).await?;
    Ok(Json(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

async fn create_key(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let admin = match body.role.as_deref() {
        None | Some("member") => false,
        Some("admin") => true,
        Some(other) => {
            return Err(ApiError::Validation(format!(
                "role: expected \"member\" or \"admin\", got \"{other}\""
            )));
        }
    };
    let name = body.name.map(|name| name.trim().to_owned());
    if let Some(name) = &name
        && (name.is_empty() || name.chars().count() > MAX_KEY_NAME_CHARS)
    {
        return Err(ApiError::Validation(format!(
            "name: must be 1 to {MAX_KEY_NAME_CHARS} characters"
        )));
    }
    let created = state
        .store
        .create_api_key(caller.org_id, admin, name.as_deref(), &caller.actor)
        .await?;
    let record = state
        .store
        .api_keys(caller.org_id)
        .await?
        .into_iter()
        .find(|key| key.id == created.id)
        .ok_or(ApiError::NotFound("key"))?;
    let mut body = key_json(&record);
    body["key"] = json!(created.key);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn revoke_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(prefix): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let revoked = state
        .store
        .revoke_api_key(Some(caller.org_id), &prefix, &caller.actor)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    // Other gateways stop trusting the key within `AUTH_CACHE_TTL`; this one at once.
    state.auth_cache.clear();
    Ok(Json(key_json(&revoked)))
}

fn key_json(key: &ApiKeyRecord) -> Value {
    json!({
        "prefix": key.prefix,
        "name": key.name,
        "role": key.role(),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    })
}
