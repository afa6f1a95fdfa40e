//! `POST/GET /v1/channels/feishu/apps`, `DELETE /v1/channels/feishu/apps/{app_id}`: an
//! org's Feishu apps, for its admin keys. Secrets go in; they never come out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sable_store::{FeishuApp, FeishuSecrets};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{FeishuAppInput, build_app, card_callback_path, webhook_path};
use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_apps, create_app))
        .routes(routes!(remove_app))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AppList {
    apps: Vec<AppView>,
}

/// An app without its secrets (only whether an encrypt key is set).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AppView {
    app_id: String,
    /// `webhook` or `long-connection`.
    mode: String,
    base_url: String,
    agent: Option<String>,
    require_mention: bool,
    stream_replies: bool,
    encrypted: bool,
    /// Where Feishu posts the app's events (webhook mode).
    webhook_path: String,
    /// Where Feishu posts the app's card presses.
    card_callback_path: String,
    created_at: DateTime<Utc>,
}

/// A Feishu / Lark app and its secrets (sealed at rest).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateAppBody {
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

/// The org's Feishu apps (admin keys only).
#[utoipa::path(
    get,
    path = "/v1/channels/feishu/apps",
    tag = "feishu",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The apps", body = AppList),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
    ),
)]
async fn list_apps(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<AppList>, ApiError> {
    let apps = state.store.feishu_apps(caller.org_id).await?;
    Ok(Json(AppList {
        apps: apps.iter().map(app_json).collect(),
    }))
}

/// Adds a Feishu app (admin keys only; needs `SABLE_SECRETS_KEY`).
#[utoipa::path(
    post,
    path = "/v1/channels/feishu/apps",
    tag = "feishu",
    security(("api_key" = [])),
    request_body = CreateAppBody,
    responses(
        (status = 201, description = "The app", body = AppView),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 409, description = "An app with this app_id exists already", body = ErrorBody),
    ),
)]
async fn create_app(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(body): ApiJson<CreateAppBody>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
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
    let org = state.orgs().current(caller.org_id).await?;
    let app = build_app(input, key, &org.agents).map_err(ApiError::Validation)?;
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

/// Removes a Feishu app and its secrets (admin keys only).
#[utoipa::path(
    delete,
    path = "/v1/channels/feishu/apps/{app_id}",
    tag = "feishu",
    security(("api_key" = [])),
    params(("app_id" = String, Path, description = "The app's `cli_…` id")),
    responses(
        (status = 200, description = "The removed app", body = AppView),
        (status = 403, description = "The key is not an admin key", body = ErrorBody),
        (status = 404, description = "No app of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn remove_app(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(app_id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    let removed = state
        .store
        .remove_feishu_app(Some(caller.org_id), &app_id, &caller.actor)
        .await?
        .ok_or(ApiError::NotFound("feishu app"))?;
    Ok(Json(app_json(&removed)))
}

/// An app without its secrets (only whether an encrypt key is set).
pub(crate) fn app_json(app: &FeishuApp) -> AppView {
    AppView {
        app_id: app.app_id.clone(),
        mode: app.mode.clone(),
        base_url: app.base_url.clone(),
        agent: app.agent.clone(),
        require_mention: app.require_mention,
        stream_replies: app.stream_replies,
        encrypted: app.secrets.encrypt_key.is_some(),
        webhook_path: webhook_path(&app.app_id),
        card_callback_path: card_callback_path(&app.app_id),
        created_at: app.created_at,
    }
}
