//! `POST /v1/channels/feishu/{app_id}/events` (and its twin `…/card`, for the card
//! callback URL): Feishu's callback. Verifies (signature, verification token), decrypts,
//! answers the URL challenge, turns a user's text or post message into a queued turn
//! through the same intake as `POST /v1/messages`, and a card press into an approval
//! decision, answering within Feishu's 3 s budget (the turn runs on a worker, never
//! inline; this gateway watches its live events for streamed and approval cards).
//! Events are deduplicated by `event_id` and messages by `message_id`, in the store.
//! The long connection hands its events to the same intake ([`accept_pushed_event`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use sable_core::{AgentId, Channel, ConversationKey, IdempotencyKey, MessageText, TurnId};
use sable_runtime::BindingRequest;
use sable_store::{
    FeishuApp, FeishuEventRecord, FeishuReplyTarget, FeishuSecrets, NewMessage, SessionTarget,
};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::TurnLabels;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::Credentials;
use super::{actions, crypto, stream};
use crate::error::ErrorBody;
use crate::{ApiError, AppState};

const SIGNATURE_HEADER: &str = "x-lark-signature";
const TIMESTAMP_HEADER: &str = "x-lark-request-timestamp";
const NONCE_HEADER: &str = "x-lark-request-nonce";
const MESSAGE_EVENT: &str = "im.message.receive_v1";
const CARD_ACTION_EVENT: &str = "card.action.trigger";

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive_event))
        .routes(routes!(receive_card))
}

/// Feishu's event callback: the URL challenge, or a v2 event (plaintext, or
/// `{"encrypt"}` for an app with an encrypt key, then signed with `X-Lark-Signature`).
/// Verified by the app's verification token, not by an API key.
#[utoipa::path(
    post,
    path = "/v1/channels/feishu/{app_id}/events",
    tag = "feishu",
    params(("app_id" = String, Path, description = "The app's `cli_…` id")),
    request_body(content = Object, description = "Feishu's callback body"),
    responses(
        (status = 200, description = "`{\"challenge\"}` for the URL challenge, `{\"msg\":\"success\"}` for an event", body = Object),
        (status = 400, description = "Not JSON, or not a v2 event", body = ErrorBody),
        (status = 401, description = "The token or signature does not match", body = ErrorBody),
        (status = 404, description = "No app has this id", body = ErrorBody),
        (status = 503, description = "The secrets key is not set, or the database is unreachable", body = ErrorBody),
    ),
)]
async fn receive_event(
    state: State<AppState>,
    app_id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(state, app_id, headers, body).await
}

/// Feishu's card callback (a press on a card's button, such as an approval's): the same
/// verification as the event callback; the answer is the toast and the updated card.
#[utoipa::path(
    post,
    path = "/v1/channels/feishu/{app_id}/card",
    tag = "feishu",
    params(("app_id" = String, Path, description = "The app's `cli_…` id")),
    request_body(content = Object, description = "Feishu's callback body"),
    responses(
        (status = 200, description = "The challenge, or the toast and updated card", body = Object),
        (status = 400, description = "Not JSON, or not a v2 event", body = ErrorBody),
        (status = 401, description = "The token or signature does not match", body = ErrorBody),
        (status = 404, description = "No app has this id", body = ErrorBody),
        (status = 503, description = "The secrets key is not set, or the database is unreachable", body = ErrorBody),
    ),
)]
async fn receive_card(
    state: State<AppState>,
    app_id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    receive(state, app_id, headers, body).await
}

/// The plaintext callback body: a v2 event or the URL-verification handshake.
#[derive(Debug, Deserialize)]
struct Callback {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
    challenge: Option<String>,
    header: Option<EventHeader>,
    event: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct EventHeader {
    event_id: String,
    event_type: String,
    token: Option<String>,
    app_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageEvent {
    sender: Sender,
    message: Message,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Sender {
    sender_id: Option<UserIds>,
    sender_type: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct UserIds {
    open_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message {
    message_id: String,
    chat_id: String,
    chat_type: String,
    message_type: String,
    content: String,
    thread_id: Option<String>,
    mentions: Option<Vec<Mention>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Mention {
    key: String,
    id: Option<UserIds>,
    name: Option<String>,
}

fn refused(reason: &'static str) -> ApiError {
    ApiError::ChannelUnauthorized(reason)
}

async fn receive(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = state
        .store
        .feishu_app(&app_id)
        .await?
        .ok_or(ApiError::NotFound("feishu app"))?;
    let key = state
        .feishu
        .secrets_key
        .as_ref()
        .ok_or(ApiError::Unavailable("the secrets key (SABLE_SECRETS_KEY)"))?;
    let secrets = app.secrets.open(key, &app.app_id).map_err(|error| {
        tracing::error!(app_id = %app.app_id, %error, "feishu app secrets do not open");
        ApiError::Unavailable("the feishu app's secrets")
    })?;
    let callback = read_callback(&headers, &body, &secrets)?;
    if callback.kind.as_deref() == Some("url_verification") {
        let token = callback.token.as_deref().unwrap_or("");
        if !crypto::constant_time_eq(token.as_bytes(), secrets.verification_token.as_bytes()) {
            return Err(refused("verification token does not match"));
        }
        let challenge = callback.challenge.unwrap_or_default();
        return Ok(Json(json!({"challenge": challenge})).into_response());
    }
    let header = callback
        .header
        .ok_or_else(|| ApiError::BadRequest("not a v2 event (no header)".into()))?;
    let token = header.token.as_deref().unwrap_or("");
    if !crypto::constant_time_eq(token.as_bytes(), secrets.verification_token.as_bytes()) {
        return Err(refused("verification token does not match"));
    }
    if header.app_id.as_deref().is_some_and(|id| id != app.app_id) {
        return Err(refused("the event is for another app"));
    }
    match accept_event(&state, &app, &secrets, header, callback.event).await? {
        Some(answer) => Ok(Json(answer).into_response()),
        None => Ok(success()),
    }
}

/// Takes a verified v2 event, pushed by webhook or over the long connection: a message
/// event becomes a queued turn, any event is recorded once. Safe to run for the same
/// event on any number of gateways at once: the turn is keyed by the message id in the
/// store, the record by the event id, so a redelivery or a racing copy adds nothing.
/// Returns once both are committed, with the answer a card press gets (its toast and
/// updated card).
async fn accept_event(
    state: &AppState,
    app: &FeishuApp,
    secrets: &FeishuSecrets,
    header: EventHeader,
    event: Option<Value>,
) -> Result<Option<Value>, ApiError> {
    if state
        .store
        .feishu_event_seen(&app.app_id, &header.event_id)
        .await?
    {
        return Ok(None);
    }
    if header.event_type == CARD_ACTION_EVENT {
        let answer = actions::press(state, app, &secrets.app_secret, event).await?;
        state
            .store
            .record_feishu_event(&FeishuEventRecord {
                org_id: app.org_id,
                app_id: app.app_id.clone(),
                event_id: header.event_id,
                event_type: header.event_type,
                turn_id: None,
            })
            .await?;
        return Ok(Some(answer));
    }
    let turn_id = if header.event_type == MESSAGE_EVENT {
        let event: MessageEvent = event
            .map(serde_json::from_value)
            .transpose()
            .map_err(|error| ApiError::BadRequest(format!("malformed message event: {error}")))?
            .unwrap_or_default();
        accept_message(state, app, secrets, event).await?
    } else {
        None
    };
    state
        .store
        .record_feishu_event(&FeishuEventRecord {
            org_id: app.org_id,
            app_id: app.app_id.clone(),
            event_id: header.event_id,
            event_type: header.event_type,
            turn_id,
        })
        .await?;
    Ok(None)
}

/// Takes an event pushed over the long connection: the plaintext v2 JSON a webhook
/// would carry (the connection itself is authenticated, so there is no token,
/// signature or encryption to check).
pub(crate) async fn accept_pushed_event(
    state: &AppState,
    app: &FeishuApp,
    secrets: &FeishuSecrets,
    payload: &[u8],
) -> Result<(), ApiError> {
    let callback: Callback = serde_json::from_slice(payload)
        .map_err(|error| ApiError::InvalidJson(error.to_string()))?;
    let header = callback
        .header
        .ok_or_else(|| ApiError::BadRequest("not a v2 event (no header)".into()))?;
    if header.app_id.as_deref().is_some_and(|id| id != app.app_id) {
        return Err(refused("the event is for another app"));
    }
    // A card press over the long connection is decided here too; its answer (the toast
    // and the updated card) has no way back on this path, the card is updated by API.
    accept_event(state, app, secrets, header, callback.event)
        .await
        .map(|_| ())
}

fn success() -> Response {
    Json(json!({"msg": "success"})).into_response()
}

/// Checks the signature (when the app has an encrypt key) and decrypts the body.
fn read_callback(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &FeishuSecrets,
) -> Result<Callback, ApiError> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|error| ApiError::InvalidJson(error.to_string()))?;
    let plaintext = match (
        &secrets.encrypt_key,
        parsed.get("encrypt").and_then(Value::as_str),
    ) {
        (Some(encrypt_key), Some(encrypted)) => {
            let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
            match header(SIGNATURE_HEADER) {
                Some(presented) => {
                    let expected = crypto::signature(
                        header(TIMESTAMP_HEADER).unwrap_or(""),
                        header(NONCE_HEADER).unwrap_or(""),
                        encrypt_key,
                        body,
                    );
                    if !crypto::constant_time_eq(
                        presented.trim().to_ascii_lowercase().as_bytes(),
                        expected.as_bytes(),
                    ) {
                        return Err(refused("X-Lark-Signature does not match"));
                    }
                }
                None => {
                    // Whether the URL challenge is signed is unconfirmed: only it may
                    // come unsigned, and only with the right token (checked later).
                    let plaintext = crypto::decrypt(encrypt_key, encrypted)
                        .ok_or_else(|| refused("the body does not decrypt with the encrypt key"))?;
                    let callback: Callback = serde_json::from_str(&plaintext)
                        .map_err(|error| ApiError::InvalidJson(error.to_string()))?;
                    if callback.kind.as_deref() != Some("url_verification") {
                        return Err(refused("X-Lark-Signature is missing"));
                    }
                    return Ok(callback);
                }
            }
            crypto::decrypt(encrypt_key, encrypted)
                .ok_or_else(|| refused("the body does not decrypt with the encrypt key"))?
        }
        (Some(_), None) => {
            return Err(refused(
                "the app has an encrypt key: the body must be encrypted",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::BadRequest(
                "the body is encrypted but the app has no encrypt key".into(),
            ));
        }
        (None, None) => {
            return serde_json::from_value(parsed)
                .map_err(|error| ApiError::InvalidJson(error.to_string()));
        }
    };
    serde_json::from_str(&plaintext).map_err(|error| ApiError::InvalidJson(error.to_string()))
}

/// Queues a turn for a user's text or post message; `None` when the message starts no
/// turn (not from a user, not text, a group message without the bot's mention).
async fn accept_message(
    state: &AppState,
    app: &FeishuApp,
    secrets: &FeishuSecrets,
    event: MessageEvent,
) -> Result<Option<TurnId>, ApiError> {
    let mut message = event.message;
    let sender = event.sender.sender_id.and_then(|ids| ids.open_id);
    if event
        .sender
        .sender_type
        .as_deref()
        .is_some_and(|kind| kind != "user")
    {
        return Ok(None);
    }
    let Some(sender) = sender else {
        return Ok(None);
    };
    if message.message_id.is_empty() || message.chat_id.is_empty() {
        return Err(ApiError::BadRequest(
            "message_id and chat_id are required".into(),
        ));
    }
    let group = message.chat_type != "p2p";
    let mentions = message.mentions.take().unwrap_or_default();
    let bot_open_id = if group || !mentions.is_empty() {
        let credentials = Credentials {
            base_url: &app.base_url,
            app_id: &app.app_id,
            app_secret: &secrets.app_secret,
        };
        Some(state.feishu.api.bot_open_id(&credentials).await.map_err(|reason| {
            tracing::warn!(app_id = %app.app_id, %reason, "feishu bot identity unavailable");
            ApiError::Unavailable("feishu bot info")
        })?)
    } else {
        None
    };
    if bot_open_id.as_deref() == Some(sender.as_str()) {
        return Ok(None);
    }
    let is_bot = |mention: &Mention| {
        mention.id.as_ref().and_then(|ids| ids.open_id.as_deref()) == bot_open_id.as_deref()
            && bot_open_id.is_some()
    };
    if group && app.require_mention && !mentions.iter().any(is_bot) {
        return Ok(None);
    }
    let Some(text) = message_text(&message.message_type, &message.content, &mentions, &is_bot)
    else {
        return Ok(None);
    };
    let Ok(text) = MessageText::parse(text) else {
        return Ok(None);
    };
    let trace = TraceContext::new_root();
    let routing = state.orgs().current(app.org_id).await?.routing.clone();
    let new_message = new_message(&routing, app, group, &message, &sender, text, &trace)?;
    if let Err(refused) = state.quotas.admit(app.org_id).await {
        // Acknowledged (Feishu would redeliver a refused event for hours) and recorded
        // without a turn: the org is over its quota, the message is dropped.
        tracing::warn!(org_id = %app.org_id, app_id = %app.app_id, quota = %refused.quota,
            "feishu message dropped: the org's quota is reached");
        return Ok(None);
    }
    let accepted = state.store.accept_message(new_message).await?;
    let target = FeishuReplyTarget {
        org_id: app.org_id,
        turn_id: accepted.turn_id,
        app_id: app.app_id.clone(),
        message_id: message.message_id,
        chat_id: message.chat_id,
    };
    // Recorded before the wake-up, so the delivery always finds where to reply.
    state.store.record_feishu_reply_target(&target).await?;
    if accepted.created {
        // Subscribed before the wake-up, so no event of the turn is missed.
        let subscription = match state
            .bus
            .subscribe_events(app.org_id, accepted.session_id)
            .await
        {
            Ok(subscription) => Some(subscription),
            Err(error) => {
                tracing::warn!(%error, "feishu turn not watched: no streamed or approval cards");
                None
            }
        };
        let labels = TurnLabels {
            org_id: app.org_id.to_string(),
            session_id: accepted.session_id.to_string(),
            user_id: Some(sender),
            trace_name: String::new(),
            tags: vec!["channel:feishu".to_owned()],
        };
        state
            .intake
            .publish_wakeup(app.org_id, &accepted, &labels, &trace)
            .await;
        if let Some(subscription) = subscription {
            stream::watch(state, app, &secrets.app_secret, target, subscription);
        }
    }
    Ok(Some(accepted.turn_id))
}

/// The message to accept: its session (per user in p2p, per chat or thread in groups),
/// its agent (the app's, through the bindings) and its idempotency key (the message id).
fn new_message(
    routing: &sable_runtime::IntakeRouting,
    app: &FeishuApp,
    group: bool,
    message: &Message,
    sender: &str,
    text: MessageText,
    trace: &TraceContext,
) -> Result<NewMessage, ApiError> {
    let conversation = match (group, &message.thread_id) {
        (false, _) => format!("feishu:{}:user:{sender}", app.app_id),
        (true, Some(thread)) if !thread.is_empty() => {
            format!(
                "feishu:{}:chat:{}:thread:{thread}",
                app.app_id, message.chat_id
            )
        }
        (true, _) => format!("feishu:{}:chat:{}", app.app_id, message.chat_id),
    };
    let invalid = |error: sable_core::InputError| ApiError::BadRequest(error.to_string());
    let key = ConversationKey::parse(conversation).map_err(invalid)?;
    let default_agent = app
        .agent
        .clone()
        .unwrap_or_else(|| routing.default_agent.to_string());
    let bound = routing.bindings.resolve(
        &BindingRequest {
            explicit_agent: None,
            channel: Channel::Feishu.as_str(),
            conversation: Some(key.as_str()),
            user: Some(sender),
        },
        &default_agent,
    );
    Ok(NewMessage {
        org_id: app.org_id,
        channel: Channel::Feishu,
        target: SessionTarget::Conversation {
            key,
            user_id: Some(sender.to_owned()),
        },
        agent: AgentId::parse(bound.agent).map_err(invalid)?,
        binding_rule: bound.rule,
        text,
        idempotency_key: Some(
            IdempotencyKey::parse(format!("feishu:{}", message.message_id)).map_err(invalid)?,
        ),
        trace_parent: Some(trace.to_string()),
        actor: sable_store::Actor::feishu(sender),
    })
}

/// The text of a `text` or `post` message, mention placeholders resolved (the bot's own
/// mention removed); `None` for other message types.
fn message_text(
    message_type: &str,
    content: &str,
    mentions: &[Mention],
    is_bot: &dyn Fn(&Mention) -> bool,
) -> Option<String> {
    let content: Value = serde_json::from_str(content).ok()?;
    let text = match message_type {
        "text" => {
            let mut text = content["text"].as_str()?.to_owned();
            for mention in mentions {
                if mention.key.is_empty() {
                    continue;
                }
                let replacement = if is_bot(mention) {
                    String::new()
                } else {
                    format!("@{}", mention.name.as_deref().unwrap_or(""))
                };
                text = text.replace(&mention.key, &replacement);
            }
            text
        }
        "post" => post_text(&content)?,
        _ => return None,
    };
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// A received post, bare `{title, content}` or wrapped in a locale key.
fn post_text(content: &Value) -> Option<String> {
    let post = if content.get("content").is_some() {
        content
    } else {
        content
            .as_object()?
            .values()
            .find(|value| value.get("content").is_some())?
    };
    let mut lines = Vec::new();
    if let Some(title) = post["title"].as_str().filter(|title| !title.is_empty()) {
        lines.push(title.to_owned());
    }
    for paragraph in post["content"].as_array()? {
        let mut line = String::new();
        for element in paragraph.as_array().into_iter().flatten() {
            match element["tag"].as_str() {
                Some("text" | "a" | "md" | "code_block") => {
                    line.push_str(element["text"].as_str().unwrap_or(""));
                }
                Some("at") => {
                    if let Some(name) = element["user_name"].as_str() {
                        line.push('@');
                        line.push_str(name);
                    }
                }
                _ => {}
            }
        }
        lines.push(line);
    }
    Some(lines.join("\n"))
}
