//! The OpenAI-compatible door: `POST /v1/chat/completions`, `POST /v1/responses` and
//! `GET /v1/models`, where the model names an agent. Each request becomes one turn
//! through the same intake as `/v1/messages`; errors take OpenAI's shape.

mod chat;
mod error;
mod responses;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use sable_core::{
    AgentId, Channel, ConversationKey, IdempotencyKey, MessageText, OrgId, SessionId, TurnId,
};
use sable_runtime::Inbound;
use sable_store::{AcceptedTurn, SessionTarget};
use sable_telemetry::TraceContext;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Authenticated;
use crate::routes::messages;
use crate::waiter::{WaitOutcome, wait_for_turn};

pub(crate) use error::{OpenAiError, OpenAiErrorBody};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat::create))
        .routes(routes!(responses::create))
        .routes(routes!(responses::retrieve))
        .routes(routes!(list_models))
        .routes(routes!(retrieve_model))
}

/// Whether a route template is one of this door's, whose errors take OpenAI's shape.
pub(crate) fn is_openai_route(path: &str) -> bool {
    ["/v1/chat/completions", "/v1/responses", "/v1/models"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// OpenAI's model list: the agents.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelList {
    /// Always `list`.
    object: &'static str,
    data: Vec<Model>,
}

/// An agent as an OpenAI model.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Model {
    /// `agent:<id>`.
    id: String,
    /// Always `model`.
    object: &'static str,
    /// Always 0: the catalog keeps no creation time.
    created: i64,
    /// Always `sable`.
    owned_by: &'static str,
}

/// The header naming an existing session to continue.
const SESSION_HEADER: &str = "x-sable-session";
/// The header naming a conversation whose session is continued (created on first use).
const CONVERSATION_HEADER: &str = "x-sable-conversation";
/// The model id prefix that names an agent (`agent:default`); the bare id works too.
const AGENT_PREFIX: &str = "agent:";
/// A conversation named by the request's `user` field is keyed `user:<user>`, so it
/// never meets a conversation named by a header or by `/v1/messages`.
const USER_CONVERSATION_PREFIX: &str = "user:";

/// `GET /v1/models`: the agents a request may name, as OpenAI models.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    security(("api_key" = [])),
    responses((status = 200, description = "The agents, as models", body = ModelList)),
)]
async fn list_models(
    State(state): State<AppState>,
    caller: Result<Authenticated, crate::ApiError>,
) -> Result<Json<ModelList>, OpenAiError> {
    let caller = caller?;
    let org = state
        .orgs()
        .current(caller.org_id)
        .await
        .map_err(crate::ApiError::from)?;
    let data = org.agents.ids().map(model_json).collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// `GET /v1/models/{model}`: one agent, by `agent:<id>` or its bare id.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    security(("api_key" = [])),
    params(("model" = String, Path, description = "`agent:<id>` or `<id>`")),
    responses(
        (status = 200, description = "The agent, as a model", body = Model),
        (status = 404, description = "No agent has this id", body = OpenAiErrorBody),
    ),
)]
async fn retrieve_model(
    State(state): State<AppState>,
    caller: Result<Authenticated, crate::ApiError>,
    Path(model): Path<String>,
) -> Result<Json<Model>, OpenAiError> {
    let caller = caller?;
    let agent = resolve_model(&state, caller.org_id, Some(&model)).await?;
    Ok(Json(model_json(agent.as_str())))
}

fn model_json(agent_id: &str) -> Model {
    // The catalog keeps no creation time; OpenAI's field is required, so it is 0.
    Model {
        id: format!("{AGENT_PREFIX}{agent_id}"),
        object: "model",
        created: 0,
        owned_by: "sable",
    }
}

/// The agent a request's `model` names: `agent:<id>` or `<id>`, one of the org's.
async fn resolve_model(
    state: &AppState,
    org_id: sable_core::OrgId,
    model: Option<&str>,
) -> Result<AgentId, OpenAiError> {
    let model = model.ok_or_else(|| OpenAiError::missing("model"))?;
    let id = model.strip_prefix(AGENT_PREFIX).unwrap_or(model);
    let org = state
        .orgs()
        .current(org_id)
        .await
        .map_err(crate::ApiError::from)?;
    org.agents
        .get(id)
        .map(|agent| agent.id.clone())
        .ok_or_else(|| OpenAiError::model_not_found(model))
}

/// Where a request's turn goes: a session it continues, or none (the request carries
/// its whole context and gets a fresh session).
enum Conversation {
    Continued(SessionTarget),
    Stateless,
}

/// The session a request continues: `X-Sable-Session` (an existing session's id),
/// `X-Sable-Conversation` (a conversation key, its session made on first use) or the
/// body's `user` (the conversation `user:<user>`, that user's).
fn conversation_of(headers: &HeaderMap, user: Option<&str>) -> Result<Conversation, OpenAiError> {
    let session = header_text(headers, SESSION_HEADER)?;
    let conversation = header_text(headers, CONVERSATION_HEADER)?;
    let invalid = |error: sable_core::InputError| OpenAiError::invalid(error.to_string(), None);
    let target = match (session, conversation, user) {
        (Some(_), Some(_), _) => {
            return Err(OpenAiError::invalid(
                "send X-Sable-Session or X-Sable-Conversation, not both",
                None,
            ));
        }
        (Some(session), None, _) => {
            let session_id = session
                .parse::<SessionId>()
                .map_err(|error| OpenAiError::invalid(format!("X-Sable-Session: {error}"), None))?;
            SessionTarget::Existing(session_id)
        }
        (None, Some(key), user) => SessionTarget::Conversation {
            key: ConversationKey::parse(key.to_owned()).map_err(invalid)?,
            user_id: user.map(parse_user).transpose()?,
        },
        (None, None, Some(user)) => SessionTarget::Conversation {
            key: ConversationKey::parse(format!("{USER_CONVERSATION_PREFIX}{user}"))
                .map_err(invalid)?,
            user_id: Some(parse_user(user)?),
        },
        (None, None, None) => return Ok(Conversation::Stateless),
    };
    Ok(Conversation::Continued(target))
}

fn parse_user(user: &str) -> Result<String, OpenAiError> {
    let valid = !user.is_empty() && user.len() <= 190 && !user.chars().any(char::is_control);
    valid
        .then(|| user.to_owned())
        .ok_or_else(|| OpenAiError::invalid("user: must be 1 to 190 printable bytes", Some("user")))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, OpenAiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|error| OpenAiError::invalid(format!("{name}: {error}"), None))
        })
        .transpose()
}

/// The `Idempotency-Key` header: a retry with the same key answers with the first turn.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, OpenAiError> {
    header_text(headers, "idempotency-key")?
        .map(|key| {
            IdempotencyKey::parse(key.to_owned())
                .map_err(|error| OpenAiError::invalid(format!("Idempotency-Key: {error}"), None))
        })
        .transpose()
}

/// One message of the request, reduced to its role and text.
struct ContextMessage {
    role: String,
    text: String,
}

/// The new turn's text. A continued session gets the last user message alone (the
/// session holds the rest); a stateless request gets its whole conversation written out
/// as one message, or just the message when it is a lone user message.
fn turn_text(
    conversation: &Conversation,
    messages: &[ContextMessage],
) -> Result<MessageText, OpenAiError> {
    let last = messages
        .last()
        .filter(|message| message.role == "user")
        .ok_or_else(|| {
            OpenAiError::invalid("the last message must be the user's", Some("messages"))
        })?;
    let text = match (conversation, messages) {
        (Conversation::Continued(_), _) | (Conversation::Stateless, [_]) => last.text.clone(),
        (Conversation::Stateless, _) => transcript(messages),
    };
    MessageText::parse(text).map_err(|error| OpenAiError::invalid(error.to_string(), None))
}

/// The whole conversation of a stateless request as one message the agent answers.
fn transcript(messages: &[ContextMessage]) -> String {
    let mut text = String::from(
        "This message carries a whole conversation (sent by an OpenAI-compatible client \
         without a session). Reply as the assistant to its last user message.\n",
    );
    for message in messages {
        text.push_str(&format!("\n{}: {}\n", message.role, message.text));
    }
    text
}

/// Fields of OpenAI's request bodies Sable accepts and does not act on: the agent's
/// model profile sets sampling and limits, and Sable keeps every turn.
const IGNORED_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "stop",
    "store",
    "metadata",
    "service_tier",
    "parallel_tool_calls",
    "reasoning_effort",
    "reasoning",
    "response_format",
    "text",
    "truncation",
    "include",
    "prompt_cache_key",
    "safety_identifier",
    "top_logprobs",
    "logprobs",
    "modalities",
    "verbosity",
];

/// Refuses a body field Sable does not know (OpenAI's own answer to one).
fn refuse_unknown_fields(rest: &Map<String, Value>) -> Result<(), OpenAiError> {
    match rest
        .keys()
        .find(|key| !IGNORED_FIELDS.contains(&key.as_str()))
    {
        Some(key) => Err(OpenAiError::unrecognized(key)),
        None => Ok(()),
    }
}

/// Tools run on the server, the agent's own; a client's function tools are refused.
fn refuse_client_tools(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
) -> Result<(), OpenAiError> {
    let offered = tools.is_some_and(|tools| tools.as_array().is_none_or(|list| !list.is_empty()));
    let chosen =
        tool_choice.is_some_and(|choice| !matches!(choice.as_str(), Some("none" | "auto")));
    if offered || chosen {
        let param = if offered { "tools" } else { "tool_choice" };
        return Err(OpenAiError::invalid(
            "client-supplied tools are not supported: the agent's own tools run on the \
             server (GET /v1/agents lists them)",
            Some(param),
        )
        .with_code("unsupported_parameter"));
    }
    Ok(())
}

/// A request parsed into the turn it asks for.
struct TurnRequest {
    agent: AgentId,
    target: SessionTarget,
    text: MessageText,
    idempotency_key: Option<IdempotencyKey>,
}

impl TurnRequest {
    fn new(
        agent: AgentId,
        conversation: Conversation,
        messages: &[ContextMessage],
        headers: &HeaderMap,
    ) -> Result<Self, OpenAiError> {
        let text = turn_text(&conversation, messages)?;
        let target = match conversation {
            Conversation::Continued(target) => target,
            Conversation::Stateless => SessionTarget::New,
        };
        Ok(Self {
            agent,
            target,
            text,
            idempotency_key: idempotency_key(headers)?,
        })
    }
}

/// Accepts the turn through the one intake path (idempotency, audit, wake-up), already
/// subscribed to its session's live events.
async fn accept_turn(
    state: &AppState,
    caller: &Authenticated,
    request: TurnRequest,
    trace: TraceContext,
    door: &str,
) -> Result<(AcceptedTurn, Option<sable_bus::EventSubscription>), OpenAiError> {
    let inbound = Inbound {
        org_id: caller.org_id,
        channel: Channel::Api,
        target: request.target,
        agent: Some(request.agent),
        text: request.text,
        idempotency_key: request.idempotency_key,
        trace,
        actor: caller.actor.clone(),
    };
    let tags = vec!["channel:api".to_owned(), format!("door:{door}")];
    let accepted = messages::accept(state, inbound, true, tags).await?;
    Ok(accepted)
}

/// How an answered turn ended, for the OpenAI routes.
struct Answer {
    text: String,
    usage: Usage,
}

/// A turn's token counts (0 when its provider reported none).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    input: i64,
    output: i64,
    cached_input: i64,
}

impl Usage {
    async fn of_turn(state: &AppState, org_id: OrgId, turn_id: TurnId) -> Self {
        match state.store.turn(org_id, turn_id).await {
            Ok(turn) => Self {
                input: turn.input_tokens.unwrap_or_default(),
                output: turn.output_tokens.unwrap_or_default(),
                cached_input: turn.cached_input_tokens.unwrap_or_default(),
            },
            Err(error) => {
                tracing::warn!(%error, %turn_id, "cannot read the turn's usage; reporting 0");
                Self::default()
            }
        }
    }

    fn chat_json(self) -> ChatUsage {
        ChatUsage {
            prompt_tokens: self.input,
            completion_tokens: self.output,
            total_tokens: self.input + self.output,
            prompt_tokens_details: CachedTokens {
                cached_tokens: self.cached_input,
            },
        }
    }

    fn responses_json(self) -> ResponsesUsage {
        ResponsesUsage {
            input_tokens: self.input,
            output_tokens: self.output,
            total_tokens: self.input + self.output,
            input_tokens_details: CachedTokens {
                cached_tokens: self.cached_input,
            },
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: 0,
            },
        }
    }
}

/// A chat completion's tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ChatUsage {
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    prompt_tokens_details: CachedTokens,
}

/// A response's tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ResponsesUsage {
    input_tokens: i64,
    output_tokens: i64,
    total_tokens: i64,
    input_tokens_details: CachedTokens,
    output_tokens_details: ReasoningTokens,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CachedTokens {
    cached_tokens: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReasoningTokens {
    reasoning_tokens: i64,
}

/// Waits for the turn and turns its end into an answer or an OpenAI error, calling
/// `on_delta` with each piece of streamed text.
async fn answer_of(
    state: &AppState,
    org_id: OrgId,
    accepted: &AcceptedTurn,
    subscription: Option<sable_bus::EventSubscription>,
    retry_is_safe: bool,
    on_delta: impl FnMut(String),
) -> Result<Answer, OpenAiError> {
    let outcome = wait_for_turn(state, org_id, accepted, subscription, on_delta).await?;
    match outcome {
        WaitOutcome::Finished(finished) if finished.status == "done" => Ok(Answer {
            text: finished.reply_text,
            usage: Usage::of_turn(state, org_id, accepted.turn_id).await,
        }),
        WaitOutcome::Finished(finished) => Err(OpenAiError::turn_failed(accepted, &finished)),
        WaitOutcome::StillRunning(sable_core::TurnStatus::WaitingApproval) => {
            Err(OpenAiError::awaiting_approval(accepted))
        }
        WaitOutcome::StillRunning(_) => Err(OpenAiError::still_running(accepted, retry_is_safe)),
        WaitOutcome::Interrupted(_) => Err(OpenAiError::interrupted(accepted, retry_is_safe)),
    }
}

/// Names the turn and its session on the answer, so a client can continue the session
/// (`X-Sable-Session`) or read the turn (`GET /v1/turns/{id}`).
fn with_turn_headers(mut response: Response, accepted: &AcceptedTurn) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-sable-session-id", accepted.session_id.to_string()),
        ("x-sable-turn-id", accepted.turn_id.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// Seconds since the Unix epoch, as OpenAI's `created` fields count.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The streamed text so far and the reply: what is left to send so the stream adds up
/// to the reply (all of it when nothing streamed, as when live events were missed).
/// A stream that went astray (a provider attempt that failed over after some text) is
/// not retracted: nothing more is sent.
fn unsent_rest<'a>(streamed: &str, reply: &'a str) -> &'a str {
    match reply.strip_prefix(streamed) {
        Some(rest) => rest,
        None => {
            tracing::warn!("the streamed text is not a prefix of the reply; its rest is not sent");
            ""
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, text: &str) -> ContextMessage {
        ContextMessage {
            role: role.to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_continued_session_gets_only_the_last_user_message() {
        let continued = Conversation::Continued(SessionTarget::New);
        let messages = [
            message("system", "be terse"),
            message("user", "first"),
            message("assistant", "ok"),
            message("user", "second"),
        ];
        assert_eq!(turn_text(&continued, &messages).unwrap().as_str(), "second");
    }

    #[test]
    fn a_stateless_request_carries_its_whole_conversation() {
        let messages = [
            message("system", "be terse"),
            message("user", "first"),
            message("assistant", "ok"),
            message("user", "second"),
        ];
        let text = turn_text(&Conversation::Stateless, &messages).unwrap();
        assert!(text.as_str().contains("\nsystem: be terse\n"));
        assert!(text.as_str().ends_with("\nassistant: ok\n\nuser: second\n"));
        let lone = turn_text(&Conversation::Stateless, &[message("user", "hi")]).unwrap();
        assert_eq!(lone.as_str(), "hi");
    }

    #[test]
    fn a_conversation_must_end_with_the_user() {
        let error = turn_text(
            &Conversation::Stateless,
            &[message("user", "a"), message("assistant", "b")],
        );
        assert!(error.is_err());
        assert!(turn_text(&Conversation::Stateless, &[]).is_err());
    }

    #[test]
    fn the_unsent_rest_completes_a_stream_that_is_a_prefix() {
        assert_eq!(unsent_rest("echo: ", "echo: hi"), "hi");
        assert_eq!(unsent_rest("", "echo: hi"), "echo: hi");
        assert_eq!(unsent_rest("partial ", "echo: hi"), "");
    }
}
