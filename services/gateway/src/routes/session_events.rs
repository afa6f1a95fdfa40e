//! `GET /v1/sessions/{id}/events`: a session's live events as server-sent events
//! (`delta`, `parked`, `finished`, each naming its turn), for watching turns that another
//! request started, such as one resumed by an approval. Live only: nothing is replayed,
//! and an event published while the bus was disconnected is missed (the turn record in
//! `GET /v1/turns/{id}` stays the truth).

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sable_core::SessionId;
use sable_proto::v1::turn_event::Kind;
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session_events))
}

/// The session's live events while connected.
#[utoipa::path(
    get,
    path = "/v1/sessions/{session_id}/events",
    tag = "sessions",
    security(("api_key" = [])),
    params(("session_id" = String, Path, description = "The session's id")),
    responses(
        (status = 200, description = "Server-sent events: `delta` {turn_id, text}, `parked` {turn_id, tool}, `finished` {turn_id, status, reply, error}", content_type = "text/event-stream", body = String),
        (status = 404, description = "No session of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn session_events(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let session_id: SessionId = session_id
        .parse()
        .map_err(|_not_an_id| ApiError::NotFound("session"))?;
    // Another org's session is as unknown as a missing one.
    state.store.session_info(caller.org_id, session_id).await?;
    let mut subscription = state
        .bus
        .subscribe_events(caller.org_id, session_id)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "cannot subscribe to a session's live events");
            ApiError::Unavailable("the bus")
        })?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(256);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = subscription.next() => event,
                () = shutdown.cancelled() => None,
                () = sender.closed() => None,
            };
            let Some(event) = event.and_then(sse_event) else {
                break;
            };
            if sender.send(event).await.is_err() {
                break;
            }
        }
    });
    let stream = ReceiverStream::new(receiver).map(Ok::<Event, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The SSE form of a live event; `None` ends the stream (an event of no known kind
/// cannot be told apart from a broken one, and the caller can reconnect).
fn sse_event(event: sable_proto::v1::TurnEvent) -> Option<Event> {
    let turn_id = event.turn_id;
    let (name, data) = match event.kind? {
        Kind::Delta(delta) => ("delta", json!({"turn_id": turn_id, "text": delta.text})),
        Kind::Parked(parked) => ("parked", json!({"turn_id": turn_id, "tool": parked.tool})),
        Kind::Finished(finished) => (
            "finished",
            json!({
                "turn_id": turn_id,
                "status": finished.status,
                "reply": {"text": finished.reply_text},
                "error": (!finished.error_code.is_empty()).then(|| json!({"code": finished.error_code, "message": finished.error_message})),
            }),
        ),
    };
    Some(Event::default().event(name).data(data.to_string()))
}
