//! `GET /v1/sessions/{id}/messages`: a session's history in reading order.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use sable_core::SessionId;
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/sessions/{session_id}/messages", get(list_messages))
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
