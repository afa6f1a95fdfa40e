//! `GET /v1/approvals?status=pending` lists the org's approvals; `POST /v1/approvals/{id}`
//! with `{"decision":"approve"|"deny","scope":"once"|"session","comment"?}` decides one
//! and wakes its parked turn, which resumes exactly the call that waited.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use sable_proto::v1::TurnWakeup;
use sable_store::{ApprovalDecision, ApprovalRecord, DecisionOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::body::ApiJson;
use crate::error::ErrorBody;
use crate::routes::messages::wake_turn;
use crate::{ApiError, AppState};

/// Longest comment kept with a decision.
const MAX_COMMENT_CHARS: usize = 2_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_approvals))
        .routes(routes!(decide))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// `pending`, `approved`, `denied` or `expired`; every approval when absent.
    #[param(pattern = "^(pending|approved|denied|expired)$")]
    status: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalList {
    approvals: Vec<ApprovalView>,
}

/// A tool call that waits, or waited, for a person's decision.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApprovalView {
    approval_id: Uuid,
    session_id: Uuid,
    turn_id: Uuid,
    tool: String,
    /// The call's arguments (as the model sent them).
    arguments: Value,
    /// `pending`, `approved`, `denied` or `expired`.
    status: String,
    /// `once` or `session`, once decided.
    scope: Option<String>,
    comment: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    decided_by: Option<String>,
}

/// The org's approvals, newest first.
#[utoipa::path(
    get,
    path = "/v1/approvals",
    tag = "approvals",
    security(("api_key" = [])),
    params(ListQuery),
    responses((status = 200, description = "The approvals", body = ApprovalList)),
)]
async fn list_approvals(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
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
    Ok(Json(ApprovalList {
        approvals: approvals.iter().map(approval_view).collect(),
    }))
}

/// A decision on a pending approval.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    /// `approve` or `deny`.
    #[schema(pattern = "^(approve|deny)$")]
    decision: String,
    /// `once` (default: this call) or `session` (this tool, for the rest of the session).
    #[serde(default)]
    #[schema(pattern = "^(once|session)$")]
    scope: Option<String>,
    /// Kept with the decision (at most 2000 characters).
    #[serde(default)]
    comment: Option<String>,
}

/// The decision taken.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Decided {
    approval_id: Uuid,
    /// `approved` or `denied`.
    status: &'static str,
    scope: String,
    /// The turn that resumes.
    turn_id: String,
}

/// Decides a pending approval and wakes its parked turn, which resumes exactly the call
/// that waited.
#[utoipa::path(
    post,
    path = "/v1/approvals/{approval_id}",
    tag = "approvals",
    security(("api_key" = [])),
    params(("approval_id" = String, Path, description = "The approval's id")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "Decided; the turn resumes", body = Decided),
        (status = 404, description = "No approval of the caller's org has this id", body = ErrorBody),
        (status = 409, description = "The approval is already decided or expired", body = ErrorBody),
    ),
)]
async fn decide(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(approval_id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<Decided>, ApiError> {
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
    Ok(Json(Decided {
        approval_id,
        status,
        scope,
        turn_id,
    }))
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

fn approval_view(approval: &ApprovalRecord) -> ApprovalView {
    ApprovalView {
        approval_id: approval.id,
        session_id: approval.session_id,
        turn_id: approval.turn_id,
        tool: approval.tool.clone(),
        arguments: serde_json::from_str::<Value>(&approval.arguments)
            .unwrap_or_else(|_| json!(approval.arguments)),
        status: approval.status.clone(),
        scope: approval.scope.clone(),
        comment: approval.comment.clone(),
        created_at: approval.created_at,
        expires_at: approval.expires_at,
        decided_at: approval.decided_at,
        decided_by: approval.decided_by.clone(),
    }
}
