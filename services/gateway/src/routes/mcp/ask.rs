//! The `ask_<agent>` tools: a message to one agent through the API's one intake path
//! (`messages::accept`: idempotency, audit with the key as actor, the wake-up), answered
//! with the reply and the session to continue once the turn ends.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorData, JsonObject, Tool,
};
use rmcp::service::RequestContext;
use sable_core::{Channel, MessageText, SessionId, TurnStatus};
use sable_runtime::{AgentDefinition, Inbound};
use sable_store::{AcceptedTurn, SessionTarget};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::http_parts;
use crate::auth::Authenticated;
use crate::routes::messages::{self, continue_trace};
use crate::waiter::{WaitOutcome, wait_for_turn};
use crate::{ApiError, AppState};

/// A tool's name is this prefix and the agent's id.
const TOOL_PREFIX: &str = "ask_";

/// The tool that asks `agent`.
pub(super) fn tool(agent: &AgentDefinition) -> Tool {
    let description = format!(
        "Send a message to the Sable agent '{}' ({}) and return its reply{}. Without \
         session_id a new conversation starts; pass the session_id of an earlier reply to \
         continue that conversation.",
        agent.id,
        agent.name,
        if agent.description.is_empty() {
            String::new()
        } else {
            format!(": {}", agent.description)
        },
    );
    let mut tool = Tool::new(
        format!("{TOOL_PREFIX}{}", agent.id),
        description,
        object(&input_schema()),
    );
    tool.title = Some(format!("Ask {}", agent.name));
    tool.output_schema = Some(Arc::new(object(&output_schema())));
    tool
}

fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "What to say to the agent."},
            "session_id": {"type": "string", "description": "The session to continue (the session_id of an earlier reply); omit to start a new one."},
        },
        "required": ["message"],
        "additionalProperties": false,
    })
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "reply": {"type": "string"},
            "session_id": {"type": "string"},
            "turn_id": {"type": "string"},
        },
        "required": ["reply", "session_id", "turn_id"],
    })
}

fn object(value: &Value) -> JsonObject {
    value.as_object().cloned().unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskArguments {
    message: String,
    session_id: Option<String>,
}

/// Runs one `ask_<agent>` call in its own span, continuing the HTTP request's
/// `traceparent` like `POST /v1/messages`: the root of the turn's trace. A tool this org
/// is not offered is a protocol error; everything that goes wrong after is a tool error
/// the client shows.
pub(super) async fn call(
    state: &AppState,
    caller: Authenticated,
    request: CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let agent = agent_of_tool(state, &caller, &request.name).await?;
    let span = tracing::info_span!(
        "mcp.call_tool",
        otel.name = %format!("MCP tools/call {}", request.name),
        otel.kind = "server",
        http.route = super::PATH,
        mcp.method.name = "tools/call",
        gen_ai.tool.name = %request.name,
        org_id = %caller.org_id,
        turn_id = tracing::field::Empty,
    );
    let trace = match http_parts(context) {
        Some(parts) => continue_trace(&span, &parts.headers),
        None => continue_trace(&span, &axum::http::HeaderMap::new()),
    };
    let arguments = Value::Object(request.arguments.unwrap_or_default());
    async move {
        let inbound = match inbound(&caller, agent, arguments, trace) {
            Ok(inbound) => inbound,
            Err(message) => return Ok(tool_error(message)),
        };
        let tags = vec!["channel:api".to_owned(), "door:mcp".to_owned()];
        let (accepted, subscription) = match messages::accept(state, inbound, true, tags).await {
            Ok(accepted) => accepted,
            Err(error) => return Ok(tool_error(refusal(&error))),
        };
        let waited = tokio::select! {
            waited = wait_for_turn(state, caller.org_id, &accepted, subscription, |_| {}) => waited,
            // The client gave up (`notifications/cancelled`, or it went away): the turn
            // goes on and its reply lands in the session.
            () = context.ct.cancelled() => return Ok(tool_error(format!(
                "cancelled; turn {} goes on in session {}", accepted.turn_id, accepted.session_id
            ))),
        };
        Ok(match waited {
            Ok(outcome) => result_of(&accepted, outcome),
            Err(error) => tool_error(refusal(&error)),
        })
    }
    .instrument(span)
    .await
}

/// The agent an `ask_<agent>` name asks, when the caller's org sees it.
async fn agent_of_tool(
    state: &AppState,
    caller: &Authenticated,
    name: &str,
) -> Result<sable_core::AgentId, ErrorData> {
    let unknown = || ErrorData::invalid_params(format!("no tool named '{name}'"), None);
    let id = name.strip_prefix(TOOL_PREFIX).ok_or_else(unknown)?;
    super::agents_of(state, caller.org_id)
        .await?
        .into_iter()
        .find(|agent| agent.id.as_str() == id)
        .map(|agent| agent.id.clone())
        .ok_or_else(unknown)
}

/// The call's arguments as the message to accept, or why they are refused.
fn inbound(
    caller: &Authenticated,
    agent: sable_core::AgentId,
    arguments: Value,
    trace: sable_telemetry::TraceContext,
) -> Result<Inbound, String> {
    let arguments: AskArguments =
        serde_json::from_value(arguments).map_err(|error| format!("arguments: {error}"))?;
    let target = match arguments.session_id {
        Some(session_id) => SessionTarget::Existing(
            session_id
                .parse::<SessionId>()
                .map_err(|error| format!("session_id: {error}"))?,
        ),
        None => SessionTarget::New,
    };
    Ok(Inbound {
        org_id: caller.org_id,
        channel: Channel::Api,
        target,
        agent: Some(agent),
        text: MessageText::parse(arguments.message).map_err(|error| error.to_string())?,
        // MCP has no per-call idempotency key: each call is a new turn.
        idempotency_key: None,
        trace,
        actor: caller.actor.clone(),
    })
}

/// What the client is told when the API would have answered `error`.
fn refusal(error: &ApiError) -> String {
    match error {
        ApiError::NotFound("session") => {
            "session_id: no such session in this org (start a new one by leaving it out)".to_owned()
        }
        ApiError::Internal(cause) => {
            tracing::error!(error = %format!("{cause:#}"), "an MCP tool call failed");
            error.to_string()
        }
        other => other.to_string(),
    }
}

/// The tool's answer to how the wait ended.
fn result_of(accepted: &AcceptedTurn, outcome: WaitOutcome) -> CallToolResult {
    let (turn, session) = (accepted.turn_id, accepted.session_id);
    match outcome {
        WaitOutcome::Finished(finished) if finished.status == TurnStatus::Done.to_string() => {
            let mut result = CallToolResult::success(vec![
                ContentBlock::text(finished.reply_text.clone()),
                ContentBlock::text(format!(
                    "session_id: {session} (pass it as session_id to continue this conversation)"
                )),
            ]);
            result.structured_content = Some(json!({
                "reply": finished.reply_text,
                "session_id": session,
                "turn_id": turn,
            }));
            result
        }
        WaitOutcome::Finished(finished) => tool_error(format!(
            "the turn {turn} failed ({}): {}; session_id: {session}",
            finished
                .error_code
                .as_deref()
                .unwrap_or(finished.status.as_str()),
            finished.error_message.as_deref().unwrap_or("no detail"),
        )),
        WaitOutcome::StillRunning(TurnStatus::WaitingApproval) => tool_error(format!(
            "turn {turn} waits for a person's approval of a tool call (GET /v1/approvals?status=pending); \
             its reply will be in sable://sessions/{session}"
        )),
        WaitOutcome::StillRunning(status) => tool_error(format!(
            "no reply in time: turn {turn} is still {status}; its reply will be in sable://sessions/{session}"
        )),
        WaitOutcome::Interrupted(status) => tool_error(format!(
            "this gateway is stopping; turn {turn} ({status}) goes on and its reply will be in \
             sable://sessions/{session}"
        )),
    }
}

fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}
