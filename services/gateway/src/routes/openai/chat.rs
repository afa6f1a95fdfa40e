//! `POST /v1/chat/completions`: one turn of the agent the `model` names, answered as a
//! `chat.completion` or streamed as `chat.completion.chunk` events ending `[DONE]`.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sable_core::OrgId;
use sable_store::AcceptedTurn;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::Instrument;
use utoipa::ToSchema;

use super::{
    Answer, ChatUsage, ContextMessage, OpenAiError, OpenAiErrorBody, TurnRequest, accept_turn,
    answer_of, conversation_of, refuse_client_tools, refuse_unknown_fields, resolve_model,
    unix_now, unsent_rest, with_turn_headers,
};
use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::routes::messages::continue_trace;
use crate::{ApiError, AppState};

/// A Chat Completions request. Sable reads `model` (an agent), `messages` (text only),
/// `stream`, `stream_options.include_usage` and `user`; it ignores OpenAI's sampling
/// fields and refuses client-side tools, `n` other than 1 and unknown fields.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatBody {
    /// `agent:<id>` or `<id>` (`GET /v1/models`).
    model: Option<String>,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    user: Option<String>,
    n: Option<u32>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    functions: Option<Value>,
    function_call: Option<Value>,
    /// Everything else: known fields Sable ignores, or unknown ones it refuses.
    #[serde(flatten)]
    #[schema(ignore)]
    rest: Map<String, Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    role: String,
    /// A string, or an array of `text` parts.
    #[serde(default)]
    content: Value,
    tool_calls: Option<Value>,
    #[serde(flatten)]
    #[schema(ignore)]
    _rest: Map<String, Value>,
}

/// OpenAI's `chat.completion`: the agent's reply as its one choice.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatCompletion {
    /// `chatcmpl-<turn id>`.
    id: String,
    /// Always `chat.completion`.
    object: &'static str,
    created: i64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: ChatUsage,
    system_fingerprint: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChatChoice {
    index: u32,
    message: AssistantMessage,
    /// Always `stop`.
    finish_reason: &'static str,
    logprobs: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AssistantMessage {
    /// Always `assistant`.
    role: &'static str,
    content: String,
    refusal: Option<String>,
}

/// One turn of the agent `model` names, answered as a `chat.completion` or streamed as
/// `chat.completion.chunk` events ending `[DONE]` (`"stream": true`).
///
/// Runs the request in its own span, like `POST /v1/messages`: the root of the turn's
/// trace, or a child of the caller's `traceparent`.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    security(("api_key" = [])),
    request_body = ChatBody,
    responses(
        (status = 200, description = "The completion, or its chunk stream", content(
            (ChatCompletion = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 404, description = "The model names no agent", body = OpenAiErrorBody),
        (status = 409, description = "The turn waits for a person's approval", body = OpenAiErrorBody),
        (status = 429, description = "One of the org's quotas is reached (`quota_exceeded`, with `quota` and `Retry-After`)", body = OpenAiErrorBody),
        (status = 502, description = "The turn ended without an answer", body = OpenAiErrorBody),
        (status = 504, description = "The turn did not end in time; it goes on", body = OpenAiErrorBody),
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Result<Authenticated, ApiError>,
    headers: HeaderMap,
    body: Result<ApiJson<ChatBody>, ApiError>,
) -> Result<Response, OpenAiError> {
    let caller = caller?;
    let ApiJson(body) = body?;
    let span = tracing::info_span!(
        "http.chat_completions",
        otel.name = "POST /v1/chat/completions",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/chat/completions",
        org_id = %caller.org_id,
        turn_id = tracing::field::Empty,
    );
    let trace = continue_trace(&span, &headers);
    async move {
        let (stream, include_usage, model) = (
            body.stream,
            body.stream_options
                .as_ref()
                .is_some_and(|options| options.include_usage),
            body.model.clone().unwrap_or_default(),
        );
        let request = parse(&state, caller.org_id, &headers, body).await?;
        let retry_is_safe = request.idempotency_key.is_some();
        let (accepted, subscription) =
            accept_turn(&state, &caller, request, trace, "chat_completions").await?;
        let reply = Reply {
            model,
            accepted,
            retry_is_safe,
        };
        if stream {
            Ok(reply.stream(state, caller.org_id, subscription, include_usage))
        } else {
            let answer = answer_of(
                &state,
                caller.org_id,
                &reply.accepted,
                subscription,
                retry_is_safe,
                |_| {},
            )
            .await;
            Ok(with_turn_headers(
                match answer {
                    Ok(answer) => Json(reply.completion(&answer)).into_response(),
                    Err(error) => error.into_response(),
                },
                &reply.accepted,
            ))
        }
    }
    .instrument(span)
    .await
}

/// Checks the body and finds the agent, the session and the turn's text.
async fn parse(
    state: &AppState,
    org_id: sable_core::OrgId,
    headers: &HeaderMap,
    body: ChatBody,
) -> Result<TurnRequest, OpenAiError> {
    refuse_unknown_fields(&body.rest)?;
    refuse_client_tools(
        body.tools.as_ref().or(body.functions.as_ref()),
        body.tool_choice.as_ref().or(body.function_call.as_ref()),
    )?;
    if body.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid(
            "n: an agent gives one answer per turn",
            Some("n"),
        ));
    }
    let agent = resolve_model(state, org_id, body.model.as_deref()).await?;
    if body.messages.is_empty() {
        return Err(OpenAiError::missing("messages"));
    }
    let messages = body
        .messages
        .iter()
        .enumerate()
        .map(|(index, message)| context_message(index, message))
        .collect::<Result<Vec<_>, _>>()?;
    let conversation = conversation_of(headers, body.user.as_deref())?;
    TurnRequest::new(agent, conversation, &messages, headers)
}

/// A chat message's role and text: text content only (a string or `text` parts), no
/// tool calls or tool results (the agent's tools run on the server).
fn context_message(index: usize, message: &ChatMessage) -> Result<ContextMessage, OpenAiError> {
    let param = format!("messages[{index}]");
    if !matches!(
        message.role.as_str(),
        "system" | "developer" | "user" | "assistant"
    ) {
        return Err(OpenAiError::invalid(
            format!(
                "{param}.role: '{}' is not one of system, developer, user, assistant (tool results come from the agent's own tools)",
                message.role.chars().take(32).collect::<String>()
            ),
            Some(&format!("{param}.role")),
        ));
    }
    if message
        .tool_calls
        .as_ref()
        .is_some_and(|calls| !calls.is_null())
    {
        return Err(OpenAiError::invalid(
            format!("{param}.tool_calls: client-side tool calls are not supported"),
            Some(&format!("{param}.tool_calls")),
        ));
    }
    let text = content_text(&message.content, &["text"]).map_err(|reason| {
        OpenAiError::invalid(
            format!("{param}.content: {reason}"),
            Some(&format!("{param}.content")),
        )
    })?;
    Ok(ContextMessage {
        role: message.role.clone(),
        text,
    })
}

/// The text of a content value: a string, or an array of parts whose `type` is one of
/// `text_types` (their `text` joined). Anything else (images, audio, files) is refused.
pub(super) fn content_text(content: &Value, text_types: &[&str]) -> Result<String, String> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|part| {
                let kind = part["type"].as_str().unwrap_or_default();
                match part["text"].as_str() {
                    Some(text) if text_types.contains(&kind) => Ok(text),
                    _ => Err(format!(
                        "only text parts are supported (got type '{}')",
                        kind.chars().take(32).collect::<String>()
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.concat()),
        Value::Null => Err("must be given".to_owned()),
        _ => Err("must be a string or an array of text parts".to_owned()),
    }
}

/// What every answer to the request names.
struct Reply {
    model: String,
    accepted: AcceptedTurn,
    retry_is_safe: bool,
}

impl Reply {
    fn id(&self) -> String {
        format!("chatcmpl-{}", self.accepted.turn_id)
    }

    fn completion(&self, answer: &Answer) -> ChatCompletion {
        ChatCompletion {
            id: self.id(),
            object: "chat.completion",
            created: unix_now(),
            model: self.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: answer.text.clone(),
                    refusal: None,
                },
                finish_reason: "stop",
                logprobs: None,
            }],
            usage: answer.usage.chat_json(),
            system_fingerprint: None,
        }
    }

    /// A `chat.completion.chunk`; with `include_usage`, each carries `"usage": null`
    /// until the last, which carries only the usage (OpenAI's convention).
    fn chunk(&self, choices: Value, include_usage: bool) -> Event {
        let mut chunk = json!({
            "id": self.id(),
            "object": "chat.completion.chunk",
            "created": unix_now(),
            "model": self.model,
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        Event::default().data(chunk.to_string())
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>, include_usage: bool) -> Event {
        self.chunk(
            json!([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}]),
            include_usage,
        )
    }

    /// Streams a role chunk, the text as it comes, a closing chunk, the usage when
    /// asked, then `[DONE]`; an error ends the stream with OpenAI's error object.
    fn stream(
        self,
        state: AppState,
        org_id: OrgId,
        subscription: Option<sable_bus::EventSubscription>,
        include_usage: bool,
    ) -> Response {
        // Unbounded: a delta is never dropped, so the streamed text adds up to the reply.
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let accepted = self.accepted.clone();
        tokio::spawn(async move {
            let _ = sender.send(self.delta(
                json!({"role": "assistant", "content": ""}),
                None,
                include_usage,
            ));
            let mut streamed = String::new();
            let answer = answer_of(
                &state,
                org_id,
                &self.accepted,
                subscription,
                self.retry_is_safe,
                |text| {
                    streamed.push_str(&text);
                    let _ = sender.send(self.delta(json!({"content": text}), None, include_usage));
                },
            )
            .await;
            match answer {
                Ok(answer) => {
                    let rest = unsent_rest(&streamed, &answer.text);
                    if !rest.is_empty() {
                        let _ =
                            sender.send(self.delta(json!({"content": rest}), None, include_usage));
                    }
                    let _ = sender.send(self.delta(json!({}), Some("stop"), include_usage));
                    if include_usage {
                        let usage = json!({
                            "id": self.id(), "object": "chat.completion.chunk", "created": unix_now(),
                            "model": self.model, "choices": [], "usage": answer.usage.chat_json(),
                        });
                        let _ = sender.send(Event::default().data(usage.to_string()));
                    }
                    let _ = sender.send(Event::default().data("[DONE]"));
                }
                Err(error) => {
                    let _ = sender.send(Event::default().data(json!(error.body()).to_string()));
                }
            }
        });
        let stream = UnboundedReceiverStream::new(receiver).map(Ok::<Event, Infallible>);
        with_turn_headers(
            Sse::new(stream)
                .keep_alive(KeepAlive::default())
                .into_response(),
            &accepted,
        )
    }
}
