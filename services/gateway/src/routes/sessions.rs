//! `GET /v1/sessions` (the org's sessions, newest first, filtered, a page at a time) and
//! `GET /v1/sessions/{id}/messages` (a session's history in reading order).

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use sable_core::{MessageId, SessionId, TurnId};
use sable_store::{SessionFilter, SessionInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(list_messages))
}

/// Sessions per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only the session of this conversation key.
    conversation: Option<String>,
    user_id: Option<String>,
    agent: Option<String>,
    /// `api`, `webhook`, `feishu` or `cron`.
    channel: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Sessions per page, 1 to 200 (50 by default).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// A page of sessions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionPage {
    sessions: Vec<SessionView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionView {
    id: uuid::Uuid,
    channel: String,
    conversation: Option<String>,
    user_id: Option<String>,
    agent: String,
    turns: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&SessionInfo> for SessionView {
    fn from(session: &SessionInfo) -> Self {
        Self {
            id: session.id,
            channel: session.channel.clone(),
            conversation: session.conversation_key.clone(),
            user_id: session.user_id.clone(),
            agent: session.agent_id.clone(),
            turns: session.turns,
            created_at: session.created_at,
            updated_at: session.updated_at,
        }
    }
}

/// A session's history in reading order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionMessages {
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    messages: Vec<MessageView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageView {
    #[schema(value_type = uuid::Uuid)]
    id: MessageId,
    #[schema(value_type = uuid::Uuid)]
    turn_id: TurnId,
    /// `user` or `assistant`.
    #[schema(value_type = String)]
    role: sable_core::MessageRole,
    text: String,
    created_at: DateTime<Utc>,
}

/// The org's sessions, newest first, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    security(("api_key" = [])),
    params(ListQuery),
    responses((status = 200, description = "A page of sessions", body = SessionPage)),
)]
async fn list_sessions(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<SessionPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit: must be between 1 and {MAX_PAGE}"
        )));
    }
    for (name, value) in [
        ("conversation", &query.conversation),
        ("user_id", &query.user_id),
        ("agent", &query.agent),
        ("channel", &query.channel),
    ] {
        // The store could not even compare such text (Postgres refuses NUL in text).
        if value
            .as_ref()
            .is_some_and(|value| value.len() > 200 || value.contains('\0'))
        {
            return Err(ApiError::Validation(format!(
                "{name}: at most 200 bytes, no NUL"
            )));
        }
    }
    let before = query
        .cursor
        .map(|cursor| cursor.parse::<SessionId>())
        .transpose()
        .map_err(|_| ApiError::Validation("cursor: not a cursor this API returned".into()))?;
    let filter = SessionFilter {
        conversation: query.conversation,
        user_id: query.user_id,
        agent: query.agent,
        channel: query.channel,
        before,
        // One more than the page tells whether another page follows.
        limit: limit + 1,
    };
    let mut sessions = state.store.list_sessions(caller.org_id, &filter).await?;
    let more = sessions.len() as i64 > limit;
    sessions.truncate(limit as usize);
    let next_cursor = more
        .then(|| sessions.last().map(|session| session.id.to_string()))
        .flatten();
    Ok(Json(SessionPage {
        sessions: sessions.iter().map(SessionView::from).collect(),
        next_cursor,
    }))
}

/// A session's history in reading order.
#[utoipa::path(
    get,
    path = "/v1/sessions/{session_id}/messages",
    tag = "sessions",
    security(("api_key" = [])),
    params(("session_id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session's messages", body = SessionMessages),
        (status = 404, description = "No session of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(session_id): Path<String>,
) -> Result<Json<SessionMessages>, ApiError> {
    let session_id: SessionId = session_id
        .parse()
        .map_err(|_| ApiError::NotFound("session"))?;
    let messages = state
        .store
        .session_messages(caller.org_id, session_id)
        .await?;
    let messages = messages
        .iter()
        .map(|message| MessageView {
            id: message.id,
            turn_id: message.turn_id,
            role: message.role,
            text: message.content.clone(),
            created_at: message.created_at,
        })
        .collect();
    Ok(Json(SessionMessages {
        session_id,
        messages,
    }))
}
