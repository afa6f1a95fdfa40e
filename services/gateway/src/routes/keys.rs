//! `GET /v1/keys`, `POST /v1/keys`, `DELETE /v1/keys/{prefix}`: an org's API keys, for
//! its admin keys. Secrets are shown once, at creation; listings carry prefixes only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sable_store::ApiKeyRecord;
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

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    /// 1 to 100 characters.
    name: Option<String>,
    /// `"member"` (default) or `"admin"`.
    #[schema(pattern = "^(member|admin)$")]
    role: Option<String>,
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
    /// `admin` or `member`.
    role: &'static str,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
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

/// The org's API keys, revoked ones included (admin keys only).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ),
)]
async fn list_keys(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<KeyList>, ApiError> {
    caller.require_admin()?;
    let keys = state.store.api_keys(caller.org_id).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(key_view).collect(),
    }))
}

/// Makes a key; its secret is in this answer only (admin keys only).
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = [])),
    request_body = CreateKeyBody,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedKey),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ),
)]
async fn create_key(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
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
        && (name.is_empty()
            || name.chars().count() > MAX_KEY_NAME_CHARS
            || name.chars().any(char::is_control))
    {
        return Err(ApiError::Validation(format!(
            "name: must be 1 to {MAX_KEY_NAME_CHARS} printable characters"
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
    let body = CreatedKey {
        record: key_view(&record),
        key: created.key,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Revokes a key: it stops working at once on this gateway, within seconds on others
/// (admin keys only).
#[utoipa::path(
    delete,
    path = "/v1/keys/{prefix}",
    tag = "keys",
    security(("api_key" = [])),
    params(("prefix" = String, Path, description = "The key's prefix")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 404, description = "No key of the caller's org has this prefix", body = ErrorBody),
    ),
)]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(prefix): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    caller.require_admin()?;
    let revoked = state
        .store
        .revoke_api_key(Some(caller.org_id), &prefix, &caller.actor)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    // Other gateways stop trusting the key within `AUTH_CACHE_TTL`; this one at once.
    state.auth_cache.clear();
    Ok(Json(key_view(&revoked)))
}

fn key_view(key: &ApiKeyRecord) -> KeyView {
    KeyView {
        prefix: key.prefix.clone(),
        name: key.name.clone(),
        role: key.role(),
        created_at: key.created_at,
        last_used_at: key.last_used_at,
        revoked_at: key.revoked_at,
    }
}
