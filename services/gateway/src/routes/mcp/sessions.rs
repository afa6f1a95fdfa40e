//! The org's sessions as MCP resources `sable://sessions/{id}`: listed newest first a page
//! at a time, read as the session's history in JSON. Another org's session, like one that
//! does not exist, is not found.

use rmcp::model::{
    ErrorData, ListResourcesResult, ReadResourceResult, ResourceContents, ResourceTemplate,
};
use sable_core::SessionId;
use sable_store::{SessionFilter, SessionInfo};
use serde_json::json;

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

/// A session's URI is this prefix and its id.
const URI_PREFIX: &str = "sable://sessions/";
/// Sessions per `resources/list` page.
const PAGE: i64 = 50;
const JSON_MIME: &str = "application/json";

pub(super) fn template() -> ResourceTemplate {
    ResourceTemplate::new(format!("{URI_PREFIX}{{id}}"), "session")
        .with_title("A Sable session")
        .with_description("A session of your org: its messages in order, as JSON.")
        .with_mime_type(JSON_MIME)
}

/// One page of the org's sessions, newest first; `cursor` is the previous page's
/// `nextCursor`.
pub(super) async fn list(
    state: &AppState,
    caller: &Authenticated,
    cursor: Option<&str>,
) -> Result<ListResourcesResult, ErrorData> {
    let before = cursor
        .map(str::parse::<SessionId>)
        .transpose()
        .map_err(|error| {
            ErrorData::invalid_params(format!("cursor: not one this server gave ({error})"), None)
        })?;
    let filter = SessionFilter {
        before,
        // One more than the page tells whether another page follows.
        limit: PAGE + 1,
        ..SessionFilter::default()
    };
    let mut sessions = state
        .store
        .list_sessions(caller.org_id, &filter)
        .await
        .map_err(|error| store_error(ApiError::from(error)))?;
    let more = sessions.len() as i64 > PAGE;
    sessions.truncate(PAGE as usize);
    let mut result = ListResourcesResult::with_all_items(sessions.iter().map(resource).collect());
    result.next_cursor = more
        .then(|| sessions.last().map(|session| session.id.to_string()))
        .flatten();
    Ok(result)
}

fn resource(session: &SessionInfo) -> rmcp::model::Resource {
    let title = match &session.conversation_key {
        Some(conversation) => format!("{} ({conversation})", session.agent_id),
        None => session.agent_id.clone(),
    };
    rmcp::model::Resource::new(
        format!("{URI_PREFIX}{}", session.id),
        session.id.to_string(),
    )
    .with_title(title)
    .with_description(format!(
        "{} turns with the agent '{}' on the {} channel, updated {}",
        session.turns,
        session.agent_id,
        session.channel,
        session.updated_at.to_rfc3339()
    ))
    .with_mime_type(JSON_MIME)
}

/// The session's history, when `uri` names a session of the caller's org.
pub(super) async fn read(
    state: &AppState,
    caller: &Authenticated,
    uri: &str,
) -> Result<ReadResourceResult, ErrorData> {
    let not_found = || ErrorData::resource_not_found(format!("no resource {uri}"), None);
    let session_id = uri
        .strip_prefix(URI_PREFIX)
        .and_then(|id| id.parse::<SessionId>().ok())
        .ok_or_else(not_found)?;
    let messages = match state
        .store
        .session_messages(caller.org_id, session_id)
        .await
    {
        Ok(messages) => messages,
        Err(sable_store::StoreError::NotFound(_)) => return Err(not_found()),
        Err(error) => return Err(store_error(error.into())),
    };
    let body = json!({
        "session_id": session_id,
        "messages": messages.iter().map(|message| json!({
            "id": message.id,
            "turn_id": message.turn_id,
            "role": message.role,
            "text": message.content,
            "created_at": message.created_at,
        })).collect::<Vec<_>>(),
    });
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(body.to_string(), uri).with_mime_type(JSON_MIME),
    ]))
}

/// A store failure as a protocol error: the API's message, never its cause (logged).
fn store_error(error: ApiError) -> ErrorData {
    if let ApiError::Internal(cause) = &error {
        tracing::error!(error = %format!("{cause:#}"), "an MCP resource read failed");
    }
    ErrorData::internal_error(error.to_string(), None)
}
