//! `GET /v1/turns/{id}`: a turn's status, reply, error, usage, timings, the model
//! profile that answered (and why), every provider call it made, its step timeline,
//! trace id and, when spans go to Langfuse, a link to the trace there.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use sable_core::{SessionId, TurnId};
use sable_store::{ProviderCallRecord, ToolCallRecord, TurnRecord};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Authenticated;
use crate::error::ErrorBody;
use crate::routes::messages::{ReplyText, TurnError};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_turn))
}

/// A turn with everything known of how it ran.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TurnDetail {
    #[serde(flatten)]
    turn: TurnView,
    provider_calls: Vec<ProviderCallView>,
    tool_calls: Vec<ToolCallView>,
    timeline: Vec<Step>,
    /// The turn's trace in Langfuse, when spans go there.
    #[serde(skip_serializing_if = "Option::is_none")]
    langfuse_url: Option<String>,
}

/// The public shape of a turn.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TurnView {
    #[schema(value_type = uuid::Uuid)]
    turn_id: TurnId,
    #[schema(value_type = uuid::Uuid)]
    session_id: SessionId,
    /// The turn's place in its session.
    seq: i64,
    agent: String,
    /// The binding rule that chose the agent.
    binding_rule: Option<String>,
    /// `queued`, `running`, `waiting_approval`, `done`, `failed` or `cancelled`.
    status: String,
    attempt: i32,
    worker_id: Option<String>,
    reply: Option<ReplyText>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// The model profile that answered, and why it was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<ModelChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<TurnError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    /// The W3C trace id of the turn's trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelChoice {
    profile: String,
    route_reason: Option<String>,
}

/// Tokens: the turn's total, or one provider call's (`null` when the provider said
/// nothing).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Usage {
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cached_input_tokens: Option<i64>,
}

/// One provider call: which profile and provider, how it ended, why it failed over,
/// time to first token, duration and tokens.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderCallView {
    turn_attempt: i32,
    purpose: String,
    profile: String,
    provider: String,
    provider_kind: String,
    model: String,
    outcome: String,
    error_message: Option<String>,
    retry_number: i32,
    failover_reason: Option<String>,
    started_at: DateTime<Utc>,
    time_to_first_token_ms: Option<i64>,
    duration_ms: i64,
    usage: Usage,
}

/// One tool call: which tool with which arguments, how it ended, its result and timing,
/// and the approval it waited for.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ToolCallView {
    turn_attempt: i32,
    round: i32,
    position: i32,
    call_id: String,
    tool: String,
    /// `builtin`, `mcp` or `skill`.
    source: &'static str,
    /// The MCP server of an MCP tool.
    server: Option<String>,
    /// The arguments as the model sent them (JSON text).
    arguments: String,
    /// `running`, `waiting_approval`, `ok`, `error` or `denied`.
    status: String,
    result: Option<String>,
    error_code: Option<String>,
    started_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    approval: Option<ApprovalRef>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalRef {
    approval_id: uuid::Uuid,
    status: Option<String>,
}

/// One step of a turn's timeline.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(crate) enum Step {
    Queued {
        at: DateTime<Utc>,
    },
    Started {
        at: DateTime<Utc>,
        attempt: i32,
    },
    ProviderCall {
        at: DateTime<Utc>,
        purpose: String,
        profile: String,
        outcome: String,
        time_to_first_token_ms: Option<i64>,
        duration_ms: i64,
    },
    ToolCall {
        at: DateTime<Utc>,
        tool: String,
        round: i32,
        status: String,
        duration_ms: Option<i64>,
    },
    Finished {
        at: DateTime<Utc>,
        /// `done`, `failed` or `cancelled`.
        status: String,
    },
}

/// A turn's status, reply, error, usage, timings, the model profile that answered (and
/// why), every provider and tool call it made, its step timeline and trace.
#[utoipa::path(
    get,
    path = "/v1/turns/{turn_id}",
    tag = "turns",
    security(("api_key" = [])),
    params(("turn_id" = String, Path, description = "The turn's id")),
    responses(
        (status = 200, description = "The turn", body = TurnDetail),
        (status = 404, description = "No turn of the caller's org has this id", body = ErrorBody),
    ),
)]
async fn get_turn(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(turn_id): Path<String>,
) -> Result<Json<TurnDetail>, ApiError> {
    let turn_id: TurnId = turn_id.parse().map_err(|_| ApiError::NotFound("turn"))?;
    let turn = state.store.turn(caller.org_id, turn_id).await?;
    let calls = state.store.provider_calls(caller.org_id, turn_id).await?;
    let tool_calls = state.store.tool_calls(caller.org_id, turn_id).await?;
    let view = turn_view(&turn);
    let langfuse_url = match (&state.config.langfuse_host, view.trace_id.as_deref()) {
        (Some(host), Some(trace_id)) => Some(sable_telemetry::LangfuseProject::trace_url(
            host,
            state.config.langfuse_project_id.as_deref(),
            trace_id,
        )),
        _ => None,
    };
    Ok(Json(TurnDetail {
        turn: view,
        provider_calls: calls.iter().map(provider_call_view).collect(),
        tool_calls: tool_calls.iter().map(tool_call_view).collect(),
        timeline: timeline(&turn, &calls, &tool_calls),
        langfuse_url,
    }))
}

/// The turn's steps in time order: queued, started, each provider attempt and each tool
/// call (by when it started), finished.
fn timeline(
    turn: &TurnRecord,
    calls: &[ProviderCallRecord],
    tool_calls: &[ToolCallRecord],
) -> Vec<Step> {
    let mut steps = vec![Step::Queued {
        at: turn.created_at,
    }];
    if let Some(started) = turn.started_at {
        steps.push(Step::Started {
            at: started,
            attempt: turn.attempt,
        });
    }
    let mut work: Vec<(DateTime<Utc>, Step)> = calls
        .iter()
        .map(|call| {
            let step = Step::ProviderCall {
                at: call.started_at,
                purpose: call.purpose.clone(),
                profile: call.profile.clone(),
                outcome: call.outcome.clone(),
                time_to_first_token_ms: call.time_to_first_token_ms,
                duration_ms: call.duration_ms,
            };
            (call.started_at, step)
        })
        .collect();
    work.extend(tool_calls.iter().filter_map(|call| {
        let at = call.started_at?;
        Some((
            at,
            Step::ToolCall {
                at,
                tool: call.tool.clone(),
                round: call.round,
                status: call.status.clone(),
                duration_ms: call.duration_ms,
            },
        ))
    }));
    work.sort_by_key(|(at, _)| *at);
    steps.extend(work.into_iter().map(|(_, step)| step));
    if let Some(finished) = turn.finished_at {
        steps.push(Step::Finished {
            at: finished,
            status: turn.status.to_string(),
        });
    }
    steps
}

fn tool_call_view(call: &ToolCallRecord) -> ToolCallView {
    ToolCallView {
        turn_attempt: call.turn_attempt,
        round: call.round,
        position: call.position,
        call_id: call.call_id.clone(),
        tool: call.tool.clone(),
        source: tool_source(&call.tool),
        server: mcp_server(&call.tool).map(str::to_owned),
        arguments: call.arguments.clone(),
        status: call.status.clone(),
        result: call.result.clone(),
        error_code: call.error_code.clone(),
        started_at: call.started_at,
        duration_ms: call.duration_ms,
        approval: call.approval_id.map(|id| ApprovalRef {
            approval_id: id,
            status: call.approval_status.clone(),
        }),
    }
}

/// Where a tool comes from, by its name: MCP tools are `mcp__<server>__<tool>` (server
/// names never contain `__`), skills are reached through `skill` and `skill_script`.
fn tool_source(tool: &str) -> &'static str {
    if tool.starts_with("mcp__") {
        "mcp"
    } else if matches!(tool, "skill" | "skill_script") {
        "skill"
    } else {
        "builtin"
    }
}

/// The MCP server of an MCP tool's name.
fn mcp_server(tool: &str) -> Option<&str> {
    tool.strip_prefix("mcp__")?
        .split_once("__")
        .map(|(server, _)| server)
}

fn provider_call_view(call: &ProviderCallRecord) -> ProviderCallView {
    ProviderCallView {
        turn_attempt: call.turn_attempt,
        purpose: call.purpose.clone(),
        profile: call.profile.clone(),
        provider: call.provider.clone(),
        provider_kind: call.provider_kind.clone(),
        model: call.model.clone(),
        outcome: call.outcome.clone(),
        error_message: call.error_message.clone(),
        retry_number: call.retry_number,
        failover_reason: call.failover_reason.clone(),
        started_at: call.started_at,
        time_to_first_token_ms: call.time_to_first_token_ms,
        duration_ms: call.duration_ms,
        usage: Usage {
            input_tokens: call.input_tokens,
            output_tokens: call.output_tokens,
            cached_input_tokens: call.cached_input_tokens,
        },
    }
}

/// The public shape of a turn.
fn turn_view(turn: &TurnRecord) -> TurnView {
    TurnView {
        turn_id: turn.id,
        session_id: turn.session_id,
        seq: turn.seq,
        agent: turn.agent_id.clone(),
        binding_rule: turn.binding_rule.clone(),
        status: turn.status.to_string(),
        attempt: turn.attempt,
        worker_id: turn.worker_id.clone(),
        reply: turn
            .reply_text
            .as_ref()
            .map(|text| ReplyText { text: text.clone() }),
        created_at: turn.created_at,
        started_at: turn.started_at,
        finished_at: turn.finished_at,
        model: turn.model_profile.as_ref().map(|profile| ModelChoice {
            profile: profile.clone(),
            route_reason: turn.route_reason.clone(),
        }),
        error: turn.error_code.as_ref().map(|code| TurnError {
            code: code.clone(),
            message: turn.error_message.clone(),
        }),
        usage: match (turn.input_tokens, turn.output_tokens) {
            (Some(input), Some(output)) => Some(Usage {
                input_tokens: Some(input),
                output_tokens: Some(output),
                cached_input_tokens: Some(turn.cached_input_tokens.unwrap_or(0)),
            }),
            _ => None,
        },
        trace_id: turn
            .trace_parent
            .as_deref()
            .and_then(sable_telemetry::TraceContext::parse)
            .map(|trace| trace.trace_id().to_string()),
    }
}
