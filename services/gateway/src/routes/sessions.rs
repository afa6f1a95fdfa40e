//! `GET /v1/sessions` (the org's sessions, newest first, filtered, a page at a time) and
//! `GET /v1/sessions/{id}/messages` (a session's history in reading order).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use sable_core::SessionId;
use sable_store::{SessionFilter, SessionInfo};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{session_id}/messages", get(list_messages))
}

/// Sessions per page unless `limit` says otherwise, and the most a page holds.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    conversation: Option<String>,
    user_id: Option<String>,
    agent: Option<String>,
    channel: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_sessions(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit: must be between 1 and {MAX_PAGE}"
        )));
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
    Ok(Json(json!({
        "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

fn session_json(session: &SessionInfo) -> Value {
    json!({
        "id": session.id,
        "channel": session.channel,
        "conversation": session.conversation_key,
        "user_id": session.user_id,
        "agent": session.agent_id,
        "turns": session.turns,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
    })
}

async fn list_messages(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let session_id: SessionId = session_id
        .parse()
        .map_err(|_| ApiError::NotFound("session"))?;
    let messages = state
        .store
        .session_messages(caller.org_id, session_id)
        .await?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|message| {
            json!({
                "id": message.id,
                "turn_id": message.turn_id,
                "role": message.role,
                "text": message.content,
                "created_at": message.created_at,
            })
        })
        .collect();
    Ok(Json(
        json!({"session_id": session_id, "messages": messages}),
    ))
}
