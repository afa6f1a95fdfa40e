//! `GET /v1/turns/{id}`: a turn's status, reply, error, usage, timings, the model
//! profile that answered (and why), every provider call it made, its step timeline,
//! trace id and, when spans go to Langfuse, a link to the trace there.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use sable_core::TurnId;
use sable_store::{ProviderCallRecord, ToolCallRecord, TurnRecord};
use serde_json::{Value, json};

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/turns/{turn_id}", get(get_turn))
}

async fn get_turn(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(turn_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let turn_id: TurnId = turn_id.parse().map_err(|_| ApiError::NotFound("turn"))?;
    let turn = state.store.turn(caller.org_id, turn_id).await?;
    let calls = state.store.provider_calls(caller.org_id, turn_id).await?;
    let tool_calls = state.store.tool_calls(caller.org_id, turn_id).await?;
    let mut body = turn_json(&turn);
    body["provider_calls"] = calls.iter().map(provider_call_json).collect();
    body["tool_calls"] = tool_calls.iter().map(tool_call_json).collect();
    body["timeline"] = timeline(&turn, &calls, &tool_calls);
    if let (Some(host), Some(trace_id)) = (&state.config.langfuse_host, body["trace_id"].as_str()) {
        body["langfuse_url"] = json!(sable_telemetry::LangfuseProject::trace_url(
            host,
            state.config.langfuse_project_id.as_deref(),
            trace_id
        ));
    }
    Ok(Json(body))
}

/// The turn's steps in time order: queued, started, each provider attempt and each tool
/// call (by when it started), finished.
fn timeline(
    turn: &TurnRecord,
    calls: &[ProviderCallRecord],
    tool_calls: &[ToolCallRecord],
) -> Value {
    let mut steps = vec![json!({"step": "queued", "at": turn.created_at})];
    if let Some(started) = turn.started_at {
        steps.push(json!({"step": "started", "at": started, "attempt": turn.attempt}));
    }
    let mut work: Vec<(chrono::DateTime<chrono::Utc>, Value)> = calls
        .iter()
        .map(|call| {
            let step = json!({
                "step": "provider_call",
                "at": call.started_at,
                "purpose": call.purpose,
                "profile": call.profile,
                "outcome": call.outcome,
                "time_to_first_token_ms": call.time_to_first_token_ms,
                "duration_ms": call.duration_ms,
            });
            (call.started_at, step)
        })
        .collect();
    work.extend(tool_calls.iter().filter_map(|call| {
        let at = call.started_at?;
        Some((
            at,
            json!({
                "step": "tool_call",
                "at": at,
                "tool": call.tool,
                "round": call.round,
                "status": call.status,
                "duration_ms": call.duration_ms,
            }),
        ))
    }));
    work.sort_by_key(|(at, _)| *at);
    steps.extend(work.into_iter().map(|(_, step)| step));
    if let Some(finished) = turn.finished_at {
        steps.push(json!({"step": "finished", "at": finished, "status": turn.status}));
    }
    Value::Array(steps)
}

/// One tool call: which tool with which arguments, how it ended, its result and timing,
/// and the approval it waited for.
fn tool_call_json(call: &ToolCallRecord) -> Value {
    json!({
        "turn_attempt": call.turn_attempt,
        "round": call.round,
        "position": call.position,
        "call_id": call.call_id,
        "tool": call.tool,
        "source": tool_source(&call.tool),
        "server": mcp_server(&call.tool),
        "arguments": call.arguments,
        "status": call.status,
        "result": call.result,
        "error_code": call.error_code,
        "started_at": call.started_at,
        "duration_ms": call.duration_ms,
        "approval": call.approval_id.map(|id| json!({
            "approval_id": id,
            "status": call.approval_status,
        })),
    })
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

/// One provider call: which profile and provider, how it ended, why it failed over,
/// time to first token, duration and tokens.
fn provider_call_json(call: &ProviderCallRecord) -> Value {
    json!({
        "turn_attempt": call.turn_attempt,
        "purpose": call.purpose,
        "profile": call.profile,
        "provider": call.provider,
        "provider_kind": call.provider_kind,
        "model": call.model,
        "outcome": call.outcome,
        "error_message": call.error_message,
        "retry_number": call.retry_number,
        "failover_reason": call.failover_reason,
        "started_at": call.started_at,
        "time_to_first_token_ms": call.time_to_first_token_ms,
        "duration_ms": call.duration_ms,
        "usage": {
            "input_tokens": call.input_tokens,
            "output_tokens": call.output_tokens,
            "cached_input_tokens": call.cached_input_tokens,
        },
    })
}

/// The public shape of a turn, shared by every route that shows one.
pub(crate) fn turn_json(turn: &TurnRecord) -> Value {
    let mut body = json!({
        "turn_id": turn.id,
        "session_id": turn.session_id,
        "seq": turn.seq,
        "agent": turn.agent_id,
        "binding_rule": turn.binding_rule,
        "status": turn.status,
        "attempt": turn.attempt,
        "worker_id": turn.worker_id,
        "reply": turn.reply_text.as_ref().map(|text| json!({"text": text})),
        "created_at": turn.created_at,
        "started_at": turn.started_at,
        "finished_at": turn.finished_at,
    });
    if let Some(profile) = &turn.model_profile {
        body["model"] = json!({"profile": profile, "route_reason": turn.route_reason});
    }
    if let Some(code) = &turn.error_code {
        body["error"] = json!({"code": code, "message": turn.error_message});
    }
    if let (Some(input), Some(output)) = (turn.input_tokens, turn.output_tokens) {
        body["usage"] = json!({
            "input_tokens": input,
            "output_tokens": output,
            "cached_input_tokens": turn.cached_input_tokens.unwrap_or(0),
        });
    }
    if let Some(trace) = turn
        .trace_parent
        .as_deref()
        .and_then(sable_telemetry::TraceContext::parse)
    {
        body["trace_id"] = json!(trace.trace_id());
    }
    body
}
