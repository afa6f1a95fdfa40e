//! A turn's tool calls and the approvals that park it, in SQLite.

use chrono::{DateTime, Utc};
use sable_core::{OrgId, TurnId};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::sweep::StaleTurnRow;
use super::{begin_write, later_by, stored_now, stored_time};
use crate::audit::record;
use crate::tools::{APPROVAL_COLUMNS, TOOL_CALL_COLUMNS};
use crate::{
    ApprovalDecision, ApprovalRecord, DecisionOutcome, NewApproval, NewToolCall, RunnableTurn,
    StaleWakeup, StoreError, ToolCallRecord, ToolCallResult,
};

#[derive(sqlx::FromRow)]
struct ToolCallRow {
    turn_attempt: i32,
    round: i32,
    position: i32,
    call_id: String,
    tool: String,
    arguments: String,
    round_text: Option<String>,
    status: String,
    result: Option<String>,
    error_code: Option<String>,
    started_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    approval_id: Option<Hyphenated>,
    approval_status: Option<String>,
    approval_comment: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ApprovalRow {
    id: Hyphenated,
    session_id: Hyphenated,
    turn_id: Hyphenated,
    tool: String,
    arguments: String,
    status: String,
    scope: Option<String>,
    comment: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    decided_by: Option<String>,
}

impl From<ApprovalRow> for ApprovalRecord {
    fn from(row: ApprovalRow) -> Self {
        Self {
            id: row.id.into_uuid(),
            session_id: row.session_id.into_uuid(),
            turn_id: row.turn_id.into_uuid(),
            tool: row.tool,
            arguments: row.arguments,
            status: row.status,
            scope: row.scope,
            comment: row.comment,
            created_at: row.created_at,
            expires_at: row.expires_at,
            decided_at: row.decided_at,
            decided_by: row.decided_by,
        }
    }
}

pub(crate) async fn begin_tool_round(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    attempt: i32,
    round: i32,
    text: &str,
    calls: &[NewToolCall],
) -> Result<(), StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    for (position, call) in calls.iter().enumerate() {
        sqlx::query(
            "INSERT INTO tool_calls (id, org_id, turn_id, turn_attempt, round, position, call_id, tool, arguments, \
                 round_text, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running', $11) \
             ON CONFLICT (turn_id, round, position) DO NOTHING",
        )
        .bind(Uuid::now_v7().hyphenated())
        .bind(turn.org_id.as_uuid().hyphenated())
        .bind(turn.id.as_uuid().hyphenated())
        .bind(attempt)
        .bind(round)
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .bind(call.call_id.replace('\0', ""))
        .bind(call.tool.replace('\0', ""))
        .bind(call.arguments.replace('\0', ""))
        .bind((position == 0).then(|| text.replace('\0', "")))
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    }
    let events = record::tool_round(turn, attempt, round, calls);
    insert_events(&mut tx, &events, &now).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn finish_tool_call(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    result: &ToolCallResult,
) -> Result<(), StoreError> {
    let mut tx = begin_write(pool).await?;
    let attempt: Option<(i32,)> = sqlx::query_as(
        "UPDATE tool_calls SET status = $4, result = $5, error_code = $6, started_at = $7, duration_ms = $8 \
         WHERE turn_id = $1 AND round = $2 AND position = $3 AND org_id = $9 RETURNING turn_attempt",
    )
    .bind(turn.id.as_uuid().hyphenated())
    .bind(result.round)
    .bind(result.position)
    .bind(&result.status)
    .bind(result.result.replace('\0', ""))
    .bind(&result.error_code)
    .bind(stored_time(result.started_at))
    .bind(result.duration_ms)
    .bind(turn.org_id.as_uuid().hyphenated())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((attempt,)) = attempt {
        let event = record::tool_finished(turn, attempt, result);
        insert_events(&mut tx, &[event], &stored_now()).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn tool_calls(
    pool: &SqlitePool,
    org_id: OrgId,
    turn_id: TurnId,
) -> Result<Vec<ToolCallRecord>, StoreError> {
    let sql = format!(
        "SELECT {TOOL_CALL_COLUMNS} FROM tool_calls c \
         LEFT JOIN approvals a ON a.turn_id = c.turn_id AND a.round = c.round AND a.position = c.position \
         WHERE c.turn_id = $1 AND c.org_id = $2 ORDER BY c.round, c.position"
    );
    let rows: Vec<ToolCallRow> = sqlx::query_as(&sql)
        .bind(turn_id.as_uuid().hyphenated())
        .bind(org_id.as_uuid().hyphenated())
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| ToolCallRecord {
            turn_attempt: row.turn_attempt,
            round: row.round,
            position: row.position,
            call_id: row.call_id,
            tool: row.tool,
            arguments: row.arguments,
            round_text: row.round_text,
            status: row.status,
            result: row.result,
            error_code: row.error_code,
            started_at: row.started_at,
            duration_ms: row.duration_ms,
            approval_id: row.approval_id.map(Hyphenated::into_uuid),
            approval_status: row.approval_status,
            approval_comment: row.approval_comment,
        })
        .collect())
}

pub(crate) async fn tool_approved_for_session(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    tool: &str,
) -> Result<bool, StoreError> {
    let found: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM approvals WHERE session_id = $1 AND org_id = $2 AND tool = $3 \
           AND status = 'approved' AND scope = 'session' LIMIT 1",
    )
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(tool)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

pub(crate) async fn park_turn(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    attempt: i32,
    approval: &NewApproval,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let mut tx = begin_write(pool).await?;
    let parked = sqlx::query(
        "UPDATE turns SET status = 'waiting_approval' \
         WHERE id = $1 AND org_id = $2 AND status = 'running' AND attempt = $3",
    )
    .bind(turn.id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    if parked.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE tool_calls SET status = 'waiting_approval' WHERE turn_id = $1 AND round = $2 AND position = $3",
    )
    .bind(turn.id.as_uuid().hyphenated())
    .bind(approval.round)
    .bind(approval.position)
    .execute(&mut *tx)
    .await?;
    let approval_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO approvals (id, org_id, session_id, turn_id, round, position, tool, arguments, status, \
             created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) \
         ON CONFLICT (turn_id, round, position) DO NOTHING",
    )
    .bind(approval_id.hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.id.as_uuid().hyphenated())
    .bind(approval.round)
    .bind(approval.position)
    .bind(&approval.tool)
    .bind(approval.arguments.replace('\0', ""))
    .bind(stored_time(now))
    .bind(stored_time(later_by(now, approval.expires_in)))
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        let event = record::approval_requested(turn, attempt, approval_id, approval);
        insert_events(&mut tx, &[event], &stored_time(now)).await?;
    }
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn approvals(
    pool: &SqlitePool,
    org_id: OrgId,
    status: Option<&str>,
) -> Result<Vec<ApprovalRecord>, StoreError> {
    let sql = format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE org_id = $1 AND ($2 IS NULL OR status = $2) \
         ORDER BY created_at DESC LIMIT 500"
    );
    let rows: Vec<ApprovalRow> = sqlx::query_as(&sql)
        .bind(org_id.as_uuid().hyphenated())
        .bind(status)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(ApprovalRecord::from).collect())
}

pub(crate) async fn approval(
    pool: &SqlitePool,
    org_id: OrgId,
    approval_id: Uuid,
) -> Result<Option<ApprovalRecord>, StoreError> {
    let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 AND org_id = $2");
    let row: Option<ApprovalRow> = sqlx::query_as(&sql)
        .bind(approval_id.hyphenated())
        .bind(org_id.as_uuid().hyphenated())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(ApprovalRecord::from))
}

pub(crate) async fn decide_approval(
    pool: &SqlitePool,
    decision: ApprovalDecision,
) -> Result<DecisionOutcome, StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let current: Option<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT a.status, a.expires_at, a.tool, t.trace_parent FROM approvals a \
         JOIN turns t ON t.id = a.turn_id WHERE a.id = $1 AND a.org_id = $2",
    )
    .bind(decision.approval_id.hyphenated())
    .bind(decision.org_id.as_uuid().hyphenated())
    .fetch_optional(&mut *tx)
    .await?;
    let (status, expires_at, tool, trace_parent) =
        current.ok_or(StoreError::NotFound("approval"))?;
    if status != "pending" || expires_at < now {
        let status = if status == "pending" {
            "expired".to_owned()
        } else {
            status
        };
        return Ok(DecisionOutcome::AlreadyDecided(status));
    }
    let new_status = if decision.approve {
        "approved"
    } else {
        "denied"
    };
    let row: StaleTurnRow = sqlx::query_as(
        "UPDATE approvals SET status = $3, scope = $4, comment = $5, decided_at = $6, \
         decided_by = $7 WHERE id = $1 AND org_id = $2 RETURNING turn_id AS id, org_id, session_id",
    )
    .bind(decision.approval_id.hyphenated())
    .bind(decision.org_id.as_uuid().hyphenated())
    .bind(new_status)
    .bind(&decision.scope)
    .bind(
        decision
            .comment
            .as_ref()
            .map(|comment| comment.replace('\0', "")),
    )
    .bind(&now)
    .bind(decision.actor.id.replace('\0', ""))
    .fetch_one(&mut *tx)
    .await?;
    let wakeup = StaleWakeup::from(row);
    requeue_parked_turn(&mut tx, wakeup.id, &now).await?;
    let event = record::approval_decided(&decision, wakeup.id, wakeup.session_id, &tool)
        .trace(trace_parent.as_deref());
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(DecisionOutcome::Decided(wakeup))
}

pub(crate) async fn expire_approvals(
    pool: &SqlitePool,
    limit: i64,
) -> Result<Vec<StaleWakeup>, StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let rows: Vec<(Hyphenated, Hyphenated, Hyphenated, Hyphenated, String)> = sqlx::query_as(
        "UPDATE approvals SET status = 'expired', decided_at = $1 WHERE id IN ( \
             SELECT id FROM approvals WHERE status = 'pending' AND expires_at < $1 \
             ORDER BY expires_at LIMIT $2) \
         RETURNING id, turn_id, org_id, session_id, tool",
    )
    .bind(&now)
    .bind(limit.max(0))
    .fetch_all(&mut *tx)
    .await?;
    let mut expired = Vec::new();
    let mut events = Vec::new();
    for (approval_id, turn_id, org_id, session_id, tool) in rows {
        let wakeup = StaleWakeup {
            id: turn_id.into_uuid(),
            org_id: org_id.into_uuid(),
            session_id: session_id.into_uuid(),
        };
        requeue_parked_turn(&mut tx, wakeup.id, &now).await?;
        let (trace_parent,): (Option<String>,) =
            sqlx::query_as("SELECT trace_parent FROM turns WHERE id = $1")
                .bind(turn_id)
                .fetch_one(&mut *tx)
                .await?;
        events.push(
            record::approval_expired(
                wakeup.org_id,
                approval_id.into_uuid(),
                wakeup.id,
                wakeup.session_id,
                &tool,
            )
            .trace(trace_parent.as_deref()),
        );
        expired.push(wakeup);
    }
    insert_events(&mut tx, &events, &now).await?;
    tx.commit().await?;
    Ok(expired)
}

async fn requeue_parked_turn(
    tx: &mut SqliteConnection,
    turn_id: Uuid,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE turns SET status = 'queued', wakeup_at = $2 WHERE id = $1 AND status = 'waiting_approval'",
    )
    .bind(turn_id.hyphenated())
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}
