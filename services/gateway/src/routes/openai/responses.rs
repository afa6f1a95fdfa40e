//! `POST /v1/responses` (OpenAI's Responses API) and `GET /v1/responses/{id}`: one turn
//! of the agent the `model` names. A response's id is its turn's, `resp_<turn id>`, so
//! `previous_response_id` continues that turn's session with nothing else stored.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sable_core::{OrgId, TurnId, TurnStatus};
use sable_store::{AcceptedTurn, SessionTarget, TurnRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::Instrument;
use utoipa::ToSchema;

use super::chat::content_text;
use super::{
    AGENT_PREFIX, ContextMessage, Conversation, OpenAiError, OpenAiErrorBody, ResponsesUsage,
    TurnRequest, Usage, accept_turn, answer_of, conversation_of, refuse_client_tools,
    refuse_unknown_fields, resolve_model, unix_now, unsent_rest, with_turn_headers,
};
use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::routes::messages::continue_trace;
use crate::{ApiError, AppState};

/// A response id is `resp_` and its turn's id.
const RESPONSE_PREFIX: &str = "resp_";

/// A Responses API request. Sable reads `model` (an agent), `input` (a string, or
/// messages of text parts), `instructions`, `previous_response_id`, `stream` and `user`;
/// it ignores OpenAI's sampling fields and refuses client-side tools and unknown fields.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ResponsesBody {
    /// `agent:<id>` or `<id>` (`GET /v1/models`).
    model: Option<String>,
    /// A string, or an array of messages whose content is text.
    input: Option<Value>,
    instructions: Option<String>,
    /// `resp_<turn id>`: continues that response's session.
    previous_response_id: Option<String>,
    #[serde(default)]
    stream: bool,
    user: Option<String>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    #[serde(default)]
    background: bool,
    conversation: Option<Value>,
    stream_options: Option<Value>,
    /// Everything else: known fields Sable ignores, or unknown ones it refuses.
    #[serde(flatten)]
    #[schema(ignore)]
    rest: Map<String, Value>,
}

/// OpenAI's response object; its one output item is the agent's reply.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ResponseObject {
    /// `resp_<turn id>`.
    id: String,
    /// Always `response`.
    object: &'static str,
    created_at: i64,
    /// `queued`, `in_progress`, `completed`, `failed` or `cancelled`.
    status: &'static str,
    error: Option<ResponseError>,
    incomplete_details: Option<Value>,
    instructions: Option<String>,
    model: String,
    output: Vec<OutputMessage>,
    parallel_tool_calls: bool,
    previous_response_id: Option<String>,
    tool_choice: &'static str,
    tools: Vec<Value>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    metadata: Map<String, Value>,
    text: Value,
    truncation: &'static str,
    usage: Option<ResponsesUsage>,
}

/// Why a response has no answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ResponseError {
    code: String,
    message: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct OutputMessage {
    /// `msg_<turn id>`.
    id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    /// Always `assistant`.
    role: &'static str,
    content: Vec<OutputText>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct OutputText {
    /// Always `output_text`.
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    annotations: Vec<Value>,
    logprobs: Vec<Value>,
}

/// Creates a response: one turn of the agent `model` names, answered when it ends, or
/// streamed as Responses API events (`"stream": true`).
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "openai",
    security(("api_key" = [])),
    request_body = ResponsesBody,
    responses(
        (status = 200, description = "The response, or its event stream", content(
            (ResponseObject = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 404, description = "The model names no agent, or previous_response_id no response", body = OpenAiErrorBody),
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
    body: Result<ApiJson<ResponsesBody>, ApiError>,
) -> Result<Response, OpenAiError> {
    let caller = caller?;
    let ApiJson(body) = body?;
    let span = tracing::info_span!(
        "http.responses",
        otel.name = "POST /v1/responses",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/responses",
        org_id = %caller.org_id,
        turn_id = tracing::field::Empty,
    );
    let trace = continue_trace(&span, &headers);
    async move {
        let echo = Echo {
            model: body.model.clone().unwrap_or_default(),
            instructions: body.instructions.clone(),
            previous_response_id: body.previous_response_id.clone(),
        };
        let stream = body.stream;
        let request = parse(&state, &caller, &headers, body).await?;
        let retry_is_safe = request.idempotency_key.is_some();
        let (accepted, subscription) =
            accept_turn(&state, &caller, request, trace, "responses").await?;
        let reply = Reply {
            echo,
            accepted,
            created_at: unix_now(),
        };
        if stream {
            return Ok(reply.stream(state, caller.org_id, subscription, retry_is_safe));
        }
        let answer = answer_of(
            &state,
            caller.org_id,
            &reply.accepted,
            subscription,
            retry_is_safe,
            |_| {},
        )
        .await;
        let response = match answer {
            Ok(answer) => {
                Json(reply.response("completed", &answer.text, Some(answer.usage))).into_response()
            }
            Err(error) => error.into_response(),
        };
        Ok(with_turn_headers(response, &reply.accepted))
    }
    .instrument(span)
    .await
}

/// `GET /v1/responses/{id}`: the response as its turn stands now.
#[utoipa::path(
    get,
    path = "/v1/responses/{response_id}",
    tag = "openai",
    security(("api_key" = [])),
    params(("response_id" = String, Path, description = "`resp_<turn id>`")),
    responses(
        (status = 200, description = "The response", body = ResponseObject),
        (status = 404, description = "No response of the caller's org has this id", body = OpenAiErrorBody),
    ),
)]
pub(super) async fn retrieve(
    State(state): State<AppState>,
    caller: Result<Authenticated, ApiError>,
    Path(response_id): Path<String>,
) -> Result<Json<ResponseObject>, OpenAiError> {
    let caller = caller?;
    let turn = turn_of_response(&state, caller.org_id, &response_id, "response_id").await?;
    let usage = Usage {
        input: turn.input_tokens.unwrap_or_default(),
        output: turn.output_tokens.unwrap_or_default(),
        cached_input: turn.cached_input_tokens.unwrap_or_default(),
    };
    let status = match turn.status {
        TurnStatus::Queued => "queued",
        TurnStatus::Running | TurnStatus::WaitingApproval => "in_progress",
        TurnStatus::Done => "completed",
        TurnStatus::Failed => "failed",
        TurnStatus::Cancelled => "cancelled",
    };
    let reply = Reply {
        echo: Echo {
            model: format!("{AGENT_PREFIX}{}", turn.agent_id),
            instructions: None,
            previous_response_id: None,
        },
        accepted: AcceptedTurn {
            turn_id: turn.id,
            session_id: turn.session_id,
            seq: turn.seq,
            status: turn.status,
            created: false,
            behind_others: false,
        },
        created_at: turn.created_at.timestamp(),
    };
    let mut body = reply.response(
        status,
        turn.reply_text.as_deref().unwrap_or_default(),
        turn.status.is_final().then_some(usage),
    );
    if let Some(code) = turn.error_code {
        body.error = Some(ResponseError {
            code,
            message: turn.error_message,
        });
    }
    Ok(Json(body))
}

/// The turn a response id names, in the caller's org (404 for anything else).
async fn turn_of_response(
    state: &AppState,
    org_id: OrgId,
    response_id: &str,
    param: &str,
) -> Result<TurnRecord, OpenAiError> {
    let not_found = || OpenAiError::not_found("response", param);
    let turn_id: TurnId = response_id
        .strip_prefix(RESPONSE_PREFIX)
        .and_then(|id| id.parse().ok())
        .ok_or_else(not_found)?;
    match state.store.turn(org_id, turn_id).await {
        Ok(turn) => Ok(turn),
        Err(sable_store::StoreError::NotFound(_)) => Err(not_found()),
        Err(error) => Err(ApiError::from(error).into()),
    }
}

/// Checks the body and finds the agent, the session (`previous_response_id`'s, a
/// header's, the `user`'s, or a fresh one) and the turn's text.
async fn parse(
    state: &AppState,
    caller: &Authenticated,
    headers: &HeaderMap,
    body: ResponsesBody,
) -> Result<TurnRequest, OpenAiError> {
    refuse_unknown_fields(&body.rest)?;
    refuse_client_tools(body.tools.as_ref(), body.tool_choice.as_ref())?;
    for (given, param) in [
        (body.background, "background"),
        (body.conversation.is_some(), "conversation"),
        (body.stream_options.is_some(), "stream_options"),
    ] {
        if given {
            return Err(OpenAiError::invalid(
                format!("{param} is not supported by Sable's Responses API"),
                Some(param),
            )
            .with_code("unsupported_parameter"));
        }
    }
    let agent = resolve_model(state, caller.org_id, body.model.as_deref()).await?;
    let input = body
        .input
        .as_ref()
        .ok_or_else(|| OpenAiError::missing("input"))?;
    let mut messages = input_messages(input)?;
    let conversation = match &body.previous_response_id {
        Some(previous) => {
            if !matches!(conversation_of(headers, None)?, Conversation::Stateless) {
                return Err(OpenAiError::invalid(
                    "give previous_response_id or a session header, not both",
                    Some("previous_response_id"),
                ));
            }
            let turn =
                turn_of_response(state, caller.org_id, previous, "previous_response_id").await?;
            Conversation::Continued(SessionTarget::Existing(turn.session_id))
        }
        None => conversation_of(headers, body.user.as_deref())?,
    };
    // Instructions are part of a stateless request's context; a continued session
    // answers with its agent's own prompt.
    if let (Conversation::Stateless, Some(instructions)) = (&conversation, body.instructions) {
        messages.insert(
            0,
            ContextMessage {
                role: "system".to_owned(),
                text: instructions,
            },
        );
    }
    TurnRequest::new(agent, conversation, &messages, headers)
}

/// `input` as a string (one user message) or a list of message items whose content is
/// text (a string, or `input_text` / `output_text` parts).
fn input_messages(input: &Value) -> Result<Vec<ContextMessage>, OpenAiError> {
    let items = match input {
        Value::String(text) => {
            return Ok(vec![ContextMessage {
                role: "user".to_owned(),
                text: text.clone(),
            }]);
        }
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            return Err(OpenAiError::invalid(
                "input: must be a string or a non-empty list of message items",
                Some("input"),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let param = format!("input[{index}]");
            let kind = item["type"].as_str().unwrap_or("message");
            let role = item["role"].as_str().unwrap_or_default();
            if kind != "message" || !matches!(role, "system" | "developer" | "user" | "assistant") {
                return Err(OpenAiError::invalid(
                    format!("{param}: only message items of role system, developer, user or assistant are supported (tools run on the server)"),
                    Some(&param),
                ));
            }
            let text = content_text(&item["content"], &["input_text", "output_text", "text"])
                .map_err(|reason| OpenAiError::invalid(format!("{param}.content: {reason}"), Some(&format!("{param}.content"))))?;
            Ok(ContextMessage { role: role.to_owned(), text })
        })
        .collect()
}

/// What the request said that its response repeats.
struct Echo {
    model: String,
    instructions: Option<String>,
    previous_response_id: Option<String>,
}

struct Reply {
    echo: Echo,
    accepted: AcceptedTurn,
    created_at: i64,
}

impl Reply {
    fn id(&self) -> String {
        format!("{RESPONSE_PREFIX}{}", self.accepted.turn_id)
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.accepted.turn_id)
    }

    fn message(&self, status: &'static str, text: &str) -> OutputMessage {
        OutputMessage {
            id: self.message_id(),
            kind: "message",
            status,
            role: "assistant",
            content: vec![output_text(text)],
        }
    }

    /// The response object; its one output item is the reply (none while in progress).
    fn response(&self, status: &'static str, text: &str, usage: Option<Usage>) -> ResponseObject {
        let output = match status {
            "completed" => vec![self.message("completed", text)],
            _ => Vec::new(),
        };
        ResponseObject {
            id: self.id(),
            object: "response",
            created_at: self.created_at,
            status,
            error: None,
            incomplete_details: None,
            instructions: self.echo.instructions.clone(),
            model: self.echo.model.clone(),
            output,
            parallel_tool_calls: false,
            previous_response_id: self.echo.previous_response_id.clone(),
            tool_choice: "auto",
            tools: Vec::new(),
            temperature: None,
            top_p: None,
            metadata: Map::new(),
            text: json!({"format": {"type": "text"}}),
            truncation: "disabled",
            usage: usage.map(Usage::responses_json),
        }
    }

    /// Streams `response.created`, `response.in_progress`, the output item and its text
    /// part opening, `response.output_text.delta` as text comes, their closing events and
    /// `response.completed`; a turn without an answer ends with `response.failed`.
    fn stream(
        self,
        state: AppState,
        org_id: OrgId,
        subscription: Option<sable_bus::EventSubscription>,
        retry_is_safe: bool,
    ) -> Response {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let accepted = self.accepted.clone();
        tokio::spawn(async move {
            let mut events = Events {
                sender,
                sequence: 0,
            };
            let (item_id, in_progress) =
                (self.message_id(), self.response("in_progress", "", None));
            events.send("response.created", json!({"response": in_progress}));
            events.send("response.in_progress", json!({"response": in_progress}));
            let part = |text: &str| json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": output_text(text)});
            events.send("response.output_item.added", json!({"output_index": 0, "item": {
                "id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
            events.send("response.content_part.added", part(""));
            let mut streamed = String::new();
            let answer = answer_of(
                &state,
                org_id,
                &self.accepted,
                subscription,
                retry_is_safe,
                |text| {
                    streamed.push_str(&text);
                    events.send_delta(&item_id, &text);
                },
            )
            .await;
            match answer {
                Ok(answer) => {
                    let rest = unsent_rest(&streamed, &answer.text);
                    if !rest.is_empty() {
                        events.send_delta(&item_id, rest);
                    }
                    events.send("response.output_text.done", json!({
                        "item_id": item_id, "output_index": 0, "content_index": 0, "text": answer.text, "logprobs": []}));
                    events.send("response.content_part.done", part(&answer.text));
                    events.send(
                        "response.output_item.done",
                        json!({"output_index": 0, "item": self.message("completed", &answer.text)}),
                    );
                    events.send("response.completed", json!({"response": self.response("completed", &answer.text, Some(answer.usage))}));
                }
                Err(error) => {
                    let mut failed = self.response("failed", "", None);
                    failed.error = Some(ResponseError {
                        code: error.code().to_owned(),
                        message: Some(error.message().to_owned()),
                    });
                    events.send("response.failed", json!({"response": failed}));
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

fn output_text(text: &str) -> OutputText {
    OutputText {
        kind: "output_text",
        text: text.to_owned(),
        annotations: Vec::new(),
        logprobs: Vec::new(),
    }
}

/// The stream's events, each named by its `type` and numbered in order.
struct Events {
    sender: tokio::sync::mpsc::UnboundedSender<Event>,
    sequence: u64,
}

impl Events {
    fn send(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        let _ = self
            .sender
            .send(Event::default().event(kind).data(data.to_string()));
    }

    fn send_delta(&mut self, item_id: &str, text: &str) {
        self.send(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
        );
    }
}
