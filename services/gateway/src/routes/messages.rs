//! `POST /v1/messages`: accept a message, queue its turn, and answer at once (202), after
//! the turn ends (`"wait": true`), or as a live SSE stream (`Accept: text/event-stream`).

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sable_core::{
    AgentId, Channel, ConversationKey, IdempotencyKey, MessageText, OrgId, SessionId,
};
use sable_proto::v1::TurnWakeup;
use sable_runtime::Inbound;
use sable_store::{AcceptedTurn, SessionTarget};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::{self, TurnLabels};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::waiter::{WaitOutcome, wait_for_turn};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_message))
}

/// A message for an agent: a new session, an existing one (`session_id`) or the session
/// of a conversation (`conversation`, created on first use).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostMessageBody {
    /// The message (1 to 32 KiB of text).
    text: String,
    /// An existing session of the caller's org.
    #[schema(format = Uuid)]
    session_id: Option<String>,
    conversation: Option<ConversationBody>,
    /// The agent that answers (`GET /v1/agents`); the bindings' choice when absent.
    agent: Option<String>,
    /// A repeated key returns the first message's turn instead of making another.
    idempotency_key: Option<String>,
    /// `"api"` (default) or `"webhook"`: where a new session's replies go.
    #[schema(pattern = "^(api|webhook)$")]
    channel: Option<String>,
    /// Answer when the turn ends (200) rather than at once (202).
    #[serde(default)]
    wait: bool,
}

/// A conversation of the caller's own naming, whose session is made on first use.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConversationBody {
    id: String,
    user_id: Option<String>,
}

/// A turn as the message routes answer it: accepted (202), still running when the wait
/// ended (202, and `retry_after_ms` with `hint` when this gateway is stopping), or
/// finished (200, with its reply and, when it failed, its error).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TurnAnswer {
    #[schema(value_type = uuid::Uuid)]
    turn_id: sable_core::TurnId,
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    /// `queued`, `running`, `waiting_approval`, `done`, `failed` or `cancelled`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<ReplyText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<TurnError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'static str>,
}

impl TurnAnswer {
    fn new(accepted: &AcceptedTurn, status: String) -> Self {
        Self {
            turn_id: accepted.turn_id,
            session_id: accepted.session_id,
            status,
            reply: None,
            error: None,
            retry_after_ms: None,
            hint: None,
        }
    }
}

/// An agent's answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplyText {
    pub text: String,
}

/// Why a turn ended without an answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TurnError {
    pub code: String,
    pub message: Option<String>,
}

enum ReplyMode {
    Accepted,
    Wait,
    Stream,
}

/// Sends a message to an agent: answers at once (202), when the turn ends (`"wait":
/// true`), or as an SSE stream (`Accept: text/event-stream`) of `accepted`, `delta` and
/// `final` events.
///
/// Runs the request in its own span, a child of the caller's `traceparent` when it sent
/// one: the root of the turn's trace.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "messages",
    security(("api_key" = [])),
    request_body = PostMessageBody,
    responses(
        (status = 200, description = "The turn finished (`\"wait\": true`), or the SSE stream", content(
            (TurnAnswer = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 202, description = "The turn is queued, or still running when the wait ended", body = TurnAnswer),
        (status = 404, description = "`session_id` names no session of the caller's org", body = crate::error::ErrorBody),
        (status = 429, description = "One of the org's quotas is reached (`quota_exceeded`, with `quota` and `Retry-After`)", body = crate::error::ErrorBody),
    ),
)]
async fn post_message(
    State(state): State<AppState>,
    caller: Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessageBody>,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "http.post_message",
        otel.name = "POST /v1/messages",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/messages",
        org_id = %caller.org_id,
        turn_id = tracing::field::Empty,
    );
    let trace = continue_trace(&span, &headers);
    accept_and_reply(state, caller, headers, body, trace)
        .instrument(span)
        .await
}

/// The request's trace context: a child of the caller's `traceparent` when it sent one
/// (made the parent of `span`), else a new root.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> TraceContext {
    let incoming = incoming_trace(headers);
    if let Some(parent) = &incoming {
        genai::set_parent(span, parent, &TurnLabels::default());
    }
    genai::trace_context_of(span)
        .unwrap_or_else(|| incoming.map_or_else(TraceContext::new_root, |parent| parent.child()))
}

async fn accept_and_reply(
    state: AppState,
    caller: Authenticated,
    headers: HeaderMap,
    body: PostMessageBody,
    trace: TraceContext,
) -> Result<Response, ApiError> {
    let mode = reply_mode(&headers, body.wait);
    let inbound = parse_inbound(&state, &caller, body, &trace)?;
    let subscribe = !matches!(mode, ReplyMode::Accepted);
    let (accepted, subscription) =
        accept(&state, inbound, subscribe, vec!["channel:api".to_owned()]).await?;
    match mode {
        ReplyMode::Accepted => Ok(accepted_response(&accepted, StatusCode::ACCEPTED)),
        ReplyMode::Wait => {
            let outcome =
                wait_for_turn(&state, caller.org_id, &accepted, subscription, |_| {}).await?;
            Ok(wait_response(&accepted, outcome))
        }
        ReplyMode::Stream => Ok(stream_response(
            state,
            caller.org_id,
            accepted,
            subscription,
        )),
    }
}

/// The one intake path of the API's doors (`/v1/messages`, the OpenAI-compatible
/// routes, the MCP server's ask tools): routes the message, admits it under the org's
/// quotas (429 `quota_exceeded` when one is reached), accepts it (idempotency and audit happen in the store's
/// statement), labels the request's span with the turn, subscribes to the session's
/// live events when `subscribe` (before the wake-up goes out, so no event of this turn
/// can be missed), and publishes the wake-up of a new turn.
pub(crate) async fn accept(
    state: &AppState,
    inbound: Inbound,
    subscribe: bool,
    tags: Vec<String>,
) -> Result<(AcceptedTurn, Option<sable_bus::EventSubscription>), ApiError> {
    let (org_id, trace) = (inbound.org_id, inbound.trace);
    let user_id = match &inbound.target {
        SessionTarget::Conversation { user_id, .. } => user_id.clone(),
        _ => None,
    };
    // Before routing: a refused request (a flood past its limits) costs no lookup of the
    // org's configuration.
    state
        .quotas
        .admit(org_id)
        .await
        .map_err(ApiError::QuotaExceeded)?;
    let routed = state.intake.route(inbound).await?;
    let accepted = state.store.accept_message(routed).await?;
    let labels = TurnLabels {
        org_id: org_id.to_string(),
        session_id: accepted.session_id.to_string(),
        user_id,
        // The worker names the trace after the agent, which it resolves.
        trace_name: String::new(),
        tags,
    };
    let span = tracing::Span::current();
    span.record("turn_id", tracing::field::display(accepted.turn_id));
    labels.annotate(&span);
    let subscription = if subscribe {
        state
            .bus
            .subscribe_events(org_id, accepted.session_id)
            .await
            .ok()
    } else {
        None
    };
    if accepted.created {
        state
            .intake
            .publish_wakeup(org_id, &accepted, &labels, &trace)
            .await;
    }
    Ok((accepted, subscription))
}

fn reply_mode(headers: &HeaderMap, wait: bool) -> ReplyMode {
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    match (wants_stream, wait) {
        (true, _) => ReplyMode::Stream,
        (false, true) => ReplyMode::Wait,
        (false, false) => ReplyMode::Accepted,
    }
}

fn incoming_trace(headers: &HeaderMap) -> Option<TraceContext> {
    headers
        .get(sable_bus::TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
}

/// Turns the body into a validated message, refusing anything malformed with 4xx.
fn parse_inbound(
    state: &AppState,
    caller: &Authenticated,
    body: PostMessageBody,
    trace: &TraceContext,
) -> Result<Inbound, ApiError> {
    let invalid = |error: sable_core::InputError| ApiError::Validation(error.to_string());
    let target = match (body.session_id, body.conversation) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Validation(
                "give session_id or conversation, not both".into(),
            ));
        }
        (Some(session_id), None) => SessionTarget::Existing(
            session_id
                .parse::<SessionId>()
                .map_err(|error| ApiError::Validation(error.to_string()))?,
        ),
        (None, Some(conversation)) => SessionTarget::Conversation {
            key: ConversationKey::parse(conversation.id).map_err(invalid)?,
            user_id: conversation.user_id.map(parse_user_id).transpose()?,
        },
        (None, None) => SessionTarget::New,
    };
    Ok(Inbound {
        org_id: caller.org_id,
        channel: parse_channel(state, body.channel.as_deref())?,
        target,
        agent: body
            .agent
            .map(AgentId::parse)
            .transpose()
            .map_err(invalid)?,
        text: MessageText::parse(body.text).map_err(invalid)?,
        idempotency_key: body
            .idempotency_key
            .map(IdempotencyKey::parse)
            .transpose()
            .map_err(invalid)?,
        trace: *trace,
        actor: caller.actor.clone(),
    })
}

/// A channel the API may ask for; `webhook` only when this gateway has a webhook URL.
fn parse_channel(state: &AppState, channel: Option<&str>) -> Result<Channel, ApiError> {
    match channel.map(|name| (name, Channel::parse(name))) {
        None | Some((_, Some(Channel::Api))) => Ok(Channel::Api),
        Some((_, Some(Channel::Webhook))) if state.config.webhook.is_some() => Ok(Channel::Webhook),
        Some((_, Some(Channel::Webhook))) => Err(ApiError::Validation(
            "channel: webhook needs the gateway's webhook_url setting".into(),
        )),
        Some((_, Some(Channel::Feishu))) => Err(ApiError::Validation(
            "channel: feishu sessions start from Feishu events, not from this API".into(),
        )),
        Some((name, None)) => Err(ApiError::Validation(format!(
            "channel: '{name}' is not one of api, webhook"
        ))),
    }
}

fn parse_user_id(user_id: String) -> Result<String, ApiError> {
    let valid =
        !user_id.is_empty() && user_id.len() <= 200 && !user_id.chars().any(char::is_control);
    valid.then_some(user_id).ok_or_else(|| {
        ApiError::Validation("conversation.user_id: must be 1 to 200 printable bytes".into())
    })
}

/// Publishes a turn's wake-up under `message_id` (JetStream drops a repeated id within
/// its window). A failure is logged: the turn is safe in the store and the sweeper
/// republishes it.
pub(crate) async fn wake_turn(
    state: &AppState,
    wakeup: TurnWakeup,
    message_id: &str,
    traceparent: Option<&str>,
) {
    if let Err(error) = state
        .bus
        .publish_turn_wakeup(&wakeup, message_id, traceparent)
        .await
    {
        tracing::warn!(%error, turn_id = %wakeup.turn_id, "wake-up not published; the sweeper will retry");
    }
}

fn accepted_response(accepted: &AcceptedTurn, status: StatusCode) -> Response {
    let body = TurnAnswer::new(accepted, accepted.status.to_string());
    (status, Json(body)).into_response()
}

fn outcome_json(accepted: &AcceptedTurn, outcome: &WaitOutcome) -> TurnAnswer {
    match outcome {
        WaitOutcome::Finished(finished) => TurnAnswer {
            reply: Some(ReplyText {
                text: finished.reply_text.clone(),
            }),
            error: finished.error_code.as_ref().map(|code| TurnError {
                code: code.clone(),
                message: finished.error_message.clone(),
            }),
            ..TurnAnswer::new(accepted, finished.status.clone())
        },
        WaitOutcome::StillRunning(status) => TurnAnswer::new(accepted, status.to_string()),
        WaitOutcome::Interrupted(status) => TurnAnswer {
            retry_after_ms: Some(RETRY_AFTER_SHUTDOWN_MS),
            hint: Some(
                "this gateway is stopping; the turn goes on: read it with GET /v1/turns/{id}, \
                 or send the message again with the same idempotency_key",
            ),
            ..TurnAnswer::new(accepted, status.to_string())
        },
    }
}

/// How long a client told "this gateway is stopping" should wait before asking again.
const RETRY_AFTER_SHUTDOWN_MS: u64 = 1_000;

fn wait_response(accepted: &AcceptedTurn, outcome: WaitOutcome) -> Response {
    let status = match outcome {
        WaitOutcome::Finished(_) => StatusCode::OK,
        WaitOutcome::StillRunning(_) | WaitOutcome::Interrupted(_) => StatusCode::ACCEPTED,
    };
    let mut response = (status, Json(outcome_json(accepted, &outcome))).into_response();
    if matches!(outcome, WaitOutcome::Interrupted(_)) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(RETRY_AFTER_SHUTDOWN_MS / 1_000),
        );
    }
    response
}

/// Streams `accepted`, then `delta` events as text arrives, then `final`.
fn stream_response(
    state: AppState,
    org_id: OrgId,
    accepted: AcceptedTurn,
    subscription: Option<sable_bus::EventSubscription>,
) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(256);
    let first = serde_json::to_string(&TurnAnswer::new(&accepted, accepted.status.to_string()))
        .unwrap_or_default();
    tokio::spawn(async move {
        let _ = sender
            .send(Event::default().event("accepted").data(first))
            .await;
        let delta_sender = sender.clone();
        let outcome = wait_for_turn(&state, org_id, &accepted, subscription, move |text| {
            let event = Event::default()
                .event("delta")
                .data(json!({"text": text}).to_string());
            let _ = delta_sender.try_send(event);
        })
        .await;
        let final_event = match outcome {
            Ok(outcome) => Event::default().event("final").data(
                serde_json::to_string(&outcome_json(&accepted, &outcome)).unwrap_or_default(),
            ),
            Err(error) => Event::default()
                .event("error")
                .data(json!({"error": {"message": error.to_string()}}).to_string()),
        };
        let _ = sender.send(final_event).await;
    });
    let stream = ReceiverStream::new(receiver).map(Ok::<Event, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
