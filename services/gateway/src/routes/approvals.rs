//! `GET /v1/approvals?status=pending` lists the org's approvals; `POST /v1/approvals/{id}`
//! with `{"decision":"approve"|"deny","scope":"once"|"session","comment"?}` decides one
//! and wakes its parked turn, which resumes exactly the call that waited.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use sable_proto::v1::TurnWakeup;
use sable_store::{ApprovalDecision, ApprovalRecord, DecisionOutcome};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::routes::messages::wake_turn;
use crate::{ApiError, AppState};

/// Longest comment kept with a decision.
const MAX_COMMENT_CHARS: usize = 2_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{approval_id}", post(decide))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_approvals(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = &query.status
        && !matches!(
            status.as_str(),
            "pending" | "approved" | "denied" | "expired"
        )
    {
        return Err(ApiError::Validation(
            "status: one of pending, approved, denied, expired".into(),
        ));
    }
    let approvals = state
        .store
        .approvals(caller.org_id, query.status.as_deref())
        .await?;
    Ok(Json(
        json!({"approvals": approvals.iter().map(approval_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

async fn decide(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(approval_id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    let approval_id: Uuid = approval_id
        .parse()
        .map_err(|_| ApiError::NotFound("approval"))?;
    let approve = match body.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return Err(ApiError::Validation(
                "decision: \"approve\" or \"deny\"".into(),
            ));
        }
    };
    let scope = body.scope.unwrap_or_else(|| "once".to_owned());
    if !matches!(scope.as_str(), "once" | "session") {
        return Err(ApiError::Validation(
            "scope: \"once\" or \"session\"".into(),
        ));
    }
    if let Some(comment) = &body.comment
        && (comment.chars().count() > MAX_COMMENT_CHARS || comment.contains('\0'))
    {
        return Err(ApiError::Validation(format!(
            "comment: at most {MAX_COMMENT_CHARS} characters, no NUL"
        )));
    }
    let outcome = decide_and_wake(
        &state,
        ApprovalDecision {
            org_id: caller.org_id,
            approval_id,
            approve,
            scope: scope.clone(),
            comment: body.comment,
            actor: caller.actor.clone(),
        },
    )
    .await?;
    let turn_id = match outcome {
        DecisionOutcome::Decided(wakeup) => wakeup.id.to_string(),
        DecisionOutcome::AlreadyDecided(status) => {
            return Err(ApiError::Conflict(format!(
                "approval {approval_id} is already {status}"
            )));
        }
    };
    let status = if approve { "approved" } else { "denied" };
    Ok(Json(json!({
        "approval_id": approval_id,
        "status": status,
        "scope": scope,
        "turn_id": turn_id,
    })))
}

/// Records a decision on a pending approval and wakes its parked turn, which resumes
/// exactly the call that waited: the one path of `POST /v1/approvals/{id}` and of a press
/// on a Feishu approval card. A decided (or expired) approval changes nothing.
pub(crate) async fn decide_and_wake(
    state: &AppState,
    decision: ApprovalDecision,
) -> Result<DecisionOutcome, ApiError> {
    let approval_id = decision.approval_id;
    let outcome = state.store.decide_approval(decision).await?;
    if let DecisionOutcome::Decided(wakeup) = &outcome {
        let turn_id = wakeup.id.to_string();
        // A fresh message id: the turn's own id is likely still in the duplicate window.
        let message_id = format!("{turn_id}.approval.{approval_id}");
        wake_turn(
            state,
            TurnWakeup {
                turn_id,
                org_id: wakeup.org_id.to_string(),
                session_id: wakeup.session_id.to_string(),
            },
            &message_id,
            None,
        )
        .await;
    }
    Ok(outcome)
}

fn approval_json(approval: &ApprovalRecord) -> Value {
    json!({
        "approval_id": approval.id,
        "session_id": approval.session_id,
        "turn_id": approval.turn_id,
        "tool": approval.tool,
        "arguments": serde_json::from_str::<Value>(&approval.arguments).unwrap_or_else(|_| json!(approval.arguments)),
        "status": approval.status,
        "scope": approval.scope,
        "comment": approval.comment,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_at": approval.decided_at,
        "decided_by": approval.decided_by,
    })
}
