//! `POST/GET /v1/channels/feishu/apps`, `DELETE /v1/channels/feishu/apps/{app_id}`: an
//! org's Feishu apps, for its admin keys. Secrets go in; they never come out.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use sable_store::{FeishuApp, FeishuSecrets};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FeishuAppInput, build_app, card_callback_path, webhook_path};
use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/channels/feishu/apps", get(list_apps).post(create_app))
        .route("/v1/channels/feishu/apps/{app_id}", delete(remove_app))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAppBody {
    app_id: String,
    mode: String,
    base_url: Option<String>,
    agent: Option<String>,
    require_mention: Option<bool>,
    stream_replies: Option<bool>,
    app_secret: String,
    verification_token: String,
    encrypt_key: Option<String>,
}

async fn list_apps(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Value>, ApiError> {
    let apps = state.store.feishu_apps(caller.org_id).await?;
    Ok(Json(
        json!({"apps": apps.iter().map(app_json).collect::<Vec<_>>()}),
    ))
}

async fn create_app(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateAppBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = state
        .feishu
        .secrets_key
        .as_ref()
        .ok_or(ApiError::Unavailable("the secrets key (SABLE_SECRETS_KEY)"))?;
    let input = FeishuAppInput {
        org_id: caller.org_id,
        app_id: body.app_id,
        mode: body.mode,
        base_url: body.base_url,
        agent: body.agent,
        require_mention: body.require_mention,
        stream_replies: body.stream_replies,
        secrets: FeishuSecrets {
            app_secret: body.app_secret,
            verification_token: body.verification_token,
            encrypt_key: body.encrypt_key,
        },
    };
    let app = build_app(input, key, &state.config.agents).map_err(ApiError::Validation)?;
    if !state.store.create_feishu_app(&app, &caller.actor).await? {
        return Err(ApiError::Conflict(format!(
            "a feishu app with app_id '{}' exists already",
            app.app_id
        )));
    }
    let created = state
        .store
        .feishu_app(&app.app_id)
        .await?
        .ok_or(ApiError::NotFound("feishu app"))?;
    Ok((StatusCode::CREATED, Json(app_json(&created))))
}

async fn remove_app(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(app_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let removed = state
        .store
        .remove_feishu_app(Some(caller.org_id), &app_id, &caller.actor)
        .await?
        .ok_or(ApiError::NotFound("feishu app"))?;
    Ok(Json(app_json(&removed)))
}

/// An app without its secrets (only whether an encrypt key is set).
pub(crate) fn app_json(app: &FeishuApp) -> Value {
    json!({
        "app_id": app.app_id,
        "mode": app.mode,
        "base_url": app.base_url,
        "agent": app.agent,
        "require_mention": app.require_mention,
        "stream_replies": app.stream_replies,
        "encrypted": app.secrets.encrypt_key.is_some(),
        "webhook_path": webhook_path(&app.app_id),
        "card_callback_path": card_callback_path(&app.app_id),
        "created_at": app.created_at,
    })
}
