//! A turn's tool calls, persisted round by round as they start and finish, and the
//! approvals that park a turn until someone decides.
//!
//! A round's calls are written before any of them runs, so a turn resumed after a crash
//! or an approval knows exactly which calls were asked for, which finished, and which
//! still need running.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sable_core::{OrgId, TurnId};
use uuid::Uuid;

use crate::audit::{pg_insert_events, pg_write_events, record};
use crate::sweep::StaleWakeup;
use crate::{Actor, PgStore, RunnableTurn, StoreError};

/// A call the model asked for in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToolCall {
    pub call_id: String,
    pub tool: String,
    pub arguments: String,
}

/// One recorded tool call, with the decision on its approval when it needed one.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ToolCallRecord {
    pub turn_attempt: i32,
    pub round: i32,
    pub position: i32,
    pub call_id: String,
    pub tool: String,
    pub arguments: String,
    pub round_text: Option<String>,
    /// `running`, `waiting_approval`, `ok`, `error` or `denied`.
    pub status: String,
    pub result: Option<String>,
    pub error_code: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub approval_id: Option<Uuid>,
    pub approval_status: Option<String>,
    pub approval_comment: Option<String>,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct ToolCallResult {
    pub round: i32,
    pub position: i32,
    /// The call's tool and the model's id for the call (for the audit).
    pub tool: String,
    pub call_id: String,
    /// `ok`, `error` or `denied`.
    pub status: String,
    pub result: String,
    pub error_code: Option<String>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
}

/// The approval a parked call waits for.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub round: i32,
    pub position: i32,
    pub tool: String,
    pub arguments: String,
    pub expires_in: Duration,
}

/// An approval as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApprovalRecord {
    pub id: Uuid,
    pub session_id: Uuid,
    pub turn_id: Uuid,
    pub tool: String,
    pub arguments: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    pub scope: Option<String>,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Who decided, when known (`feishu:<open_id>` for a press on an approval card).
    pub decided_by: Option<String>,
}

/// Someone's answer to a pending approval.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    pub org_id: OrgId,
    pub approval_id: Uuid,
    pub approve: bool,
    /// `once` or `session`.
    pub scope: String,
    pub comment: Option<String>,
    /// Who decided (its id is recorded with the decision as `decided_by`).
    pub actor: Actor,
}

/// What deciding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// Recorded; the turn is queued again and needs this wake-up.
    Decided(StaleWakeup),
    /// It was decided (or expired) before; its status now.
    AlreadyDecided(String),
}

pub(crate) const TOOL_CALL_COLUMNS: &str = "c.turn_attempt, c.round, c.position, c.call_id, c.tool, c.arguments, \
     c.round_text, c.status, c.result, c.error_code, c.started_at, c.duration_ms, \
     a.id AS approval_id, a.status AS approval_status, a.comment AS approval_comment";

pub(crate) const APPROVAL_COLUMNS: &str = "id, session_id, turn_id, tool, arguments, status, scope, comment, \
     created_at, expires_at, decided_at, decided_by";

impl PgStore {
    /// Writes a round's calls as `running` before any of them runs. A round written by an
    /// earlier attempt is kept as it is.
    pub async fn begin_tool_round(
        &self,
        turn: &RunnableTurn,
        attempt: i32,
        round: i32,
        text: &str,
        calls: &[NewToolCall],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (position, call) in calls.iter().enumerate() {
            sqlx::query(
                "INSERT INTO tool_calls (id, org_id, turn_id, turn_attempt, round, position, call_id, tool, arguments, round_text, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running') \
                 ON CONFLICT (turn_id, round, position) DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(turn.org_id.as_uuid())
            .bind(turn.id.as_uuid())
            .bind(attempt)
            .bind(round)
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
            .bind(call.call_id.replace('\0', ""))
            .bind(call.tool.replace('\0', ""))
            .bind(call.arguments.replace('\0', ""))
            .bind((position == 0).then(|| text.replace('\0', "")))
            .execute(&mut *tx)
            .await?;
        }
        let events = record::tool_round(turn, attempt, round, calls);
        pg_write_events(&mut tx, &self.audit_json(&events)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records how a call ended.
    pub async fn finish_tool_call(
        &self,
        turn: &RunnableTurn,
        result: &ToolCallResult,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "WITH finished AS ( \
                 UPDATE tool_calls SET status = $4, result = $5, error_code = $6, started_at = $7, duration_ms = $8 \
                 WHERE turn_id = $1 AND round = $2 AND position = $3 AND org_id = $9 RETURNING turn_attempt \
             ), audit AS ({}) SELECT 1",
            pg_insert_events(
                "$10",
                Some("finished"),
                &[(
                    "details",
                    "(e.details::jsonb || jsonb_build_object('attempt', finished.turn_attempt))::json"
                )]
            )
        );
        sqlx::query(&sql)
            .bind(turn.id.as_uuid())
            .bind(result.round)
            .bind(result.position)
            .bind(&result.status)
            .bind(result.result.replace('\0', ""))
            .bind(&result.error_code)
            .bind(result.started_at)
            .bind(result.duration_ms)
            .bind(turn.org_id.as_uuid())
            .bind(self.audit_json(&[record::tool_finished(turn, 0, result)]))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The turn's tool calls by round and position.
    pub async fn tool_calls(
        &self,
        org_id: OrgId,
        turn_id: TurnId,
    ) -> Result<Vec<ToolCallRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOOL_CALL_COLUMNS} FROM tool_calls c \
             LEFT JOIN approvals a ON a.turn_id = c.turn_id AND a.round = c.round AND a.position = c.position \
             WHERE c.turn_id = $1 AND c.org_id = $2 ORDER BY c.round, c.position"
        );
        Ok(sqlx::query_as(&sql)
            .bind(turn_id.as_uuid())
            .bind(org_id.as_uuid())
            .fetch_all(&self.pool)
            .await?)
    }

    /// True when someone approved `tool` for the rest of the turn's session.
    pub async fn tool_approved_for_session(
        &self,
        turn: &RunnableTurn,
        tool: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<(i32,)> = sqlx::query_as(
            "SELECT 1 FROM approvals WHERE session_id = $1 AND org_id = $2 AND tool = $3 \
               AND status = 'approved' AND scope = 'session' LIMIT 1",
        )
        .bind(turn.session_id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(tool)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Parks the turn on an approval, all or nothing: the approval row, the call marked
    /// `waiting_approval`, the turn `waiting_approval` (fenced by `attempt`). False when
    /// the attempt was fenced out.
    pub async fn park_turn(
        &self,
        turn: &RunnableTurn,
        attempt: i32,
        approval: &NewApproval,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let parked = sqlx::query(
            "UPDATE turns SET status = 'waiting_approval' \
             WHERE id = $1 AND org_id = $2 AND status = 'running' AND attempt = $3",
        )
        .bind(turn.id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        if parked.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE tool_calls SET status = 'waiting_approval' WHERE turn_id = $1 AND round = $2 AND position = $3",
        )
        .bind(turn.id.as_uuid())
        .bind(approval.round)
        .bind(approval.position)
        .execute(&mut *tx)
        .await?;
        let approval_id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, org_id, session_id, turn_id, round, position, tool, arguments, status, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', now() + make_interval(secs => $9)) \
             ON CONFLICT (turn_id, round, position) DO NOTHING",
        )
        .bind(approval_id)
        .bind(turn.org_id.as_uuid())
        .bind(turn.session_id.as_uuid())
        .bind(turn.id.as_uuid())
        .bind(approval.round)
        .bind(approval.position)
        .bind(&approval.tool)
        .bind(approval.arguments.replace('\0', ""))
        .bind(approval.expires_in.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            let event = record::approval_requested(turn, attempt, approval_id, approval);
            pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The org's approvals, newest first, optionally only those in `status`.
    pub async fn approvals(
        &self,
        org_id: OrgId,
        status: Option<&str>,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE org_id = $1 AND ($2::text IS NULL OR status = $2) \
             ORDER BY created_at DESC LIMIT 500"
        );
        // An API read: row-level security holds it to the org whatever the SQL says.
        let mut scoped = self.scoped(org_id).await?;
        let approvals = sqlx::query_as(&sql)
            .bind(org_id.as_uuid())
            .bind(status)
            .fetch_all(&mut *scoped)
            .await?;
        scoped.commit().await?;
        Ok(approvals)
    }

    /// The org's approval with this id.
    pub async fn approval(
        &self,
        org_id: OrgId,
        approval_id: Uuid,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 AND org_id = $2");
        Ok(sqlx::query_as(&sql)
            .bind(approval_id)
            .bind(org_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a decision on a pending approval and queues its turn again, atomically.
    pub async fn decide_approval(
        &self,
        decision: ApprovalDecision,
    ) -> Result<DecisionOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: Option<(String, bool, String, Option<String>)> = sqlx::query_as(
            "SELECT a.status, a.expires_at < now(), a.tool, t.trace_parent FROM approvals a \
             JOIN turns t ON t.id = a.turn_id WHERE a.id = $1 AND a.org_id = $2 FOR UPDATE OF a",
        )
        .bind(decision.approval_id)
        .bind(decision.org_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let (status, expired, tool, trace_parent) =
            current.ok_or(StoreError::NotFound("approval"))?;
        if status != "pending" || expired {
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
        let wakeup: StaleWakeup = sqlx::query_as(
            "UPDATE approvals SET status = $3, scope = $4, comment = $5, decided_at = now(), \
             decided_by = $6 WHERE id = $1 AND org_id = $2 RETURNING turn_id AS id, org_id, session_id",
        )
        .bind(decision.approval_id)
        .bind(decision.org_id.as_uuid())
        .bind(new_status)
        .bind(&decision.scope)
        .bind(
            decision
                .comment
                .as_ref()
                .map(|comment| comment.replace('\0', "")),
        )
        .bind(decision.actor.id.replace('\0', ""))
        .fetch_one(&mut *tx)
        .await?;
        requeue_parked_turn(&mut tx, wakeup.id).await?;
        let event = record::approval_decided(&decision, wakeup.id, wakeup.session_id, &tool)
            .trace(trace_parent.as_deref());
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(DecisionOutcome::Decided(wakeup))
    }

    /// Turns pending approvals past their expiry into denials and queues their turns
    /// again; returns the wake-ups to publish.
    pub async fn expire_approvals(&self, limit: i64) -> Result<Vec<StaleWakeup>, StoreError> {
        let mut tx = self.pool.begin().await?;
        type Expired = (Uuid, Uuid, Uuid, Uuid, String, Option<String>);
        let expired: Vec<Expired> = sqlx::query_as(
            "UPDATE approvals SET status = 'expired', decided_at = now() WHERE id IN ( \
                 SELECT id FROM approvals WHERE status = 'pending' AND expires_at < now() \
                 ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, turn_id, org_id, session_id, tool, \
                 (SELECT t.trace_parent FROM turns t WHERE t.id = approvals.turn_id)",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::new();
        let mut wakeups = Vec::new();
        for (approval_id, turn_id, org_id, session_id, tool, trace_parent) in expired {
            requeue_parked_turn(&mut tx, turn_id).await?;
            events.push(
                record::approval_expired(org_id, approval_id, turn_id, session_id, &tool)
                    .trace(trace_parent.as_deref()),
            );
            wakeups.push(StaleWakeup {
                id: turn_id,
                org_id,
                session_id,
            });
        }
        pg_write_events(&mut tx, &self.audit_json(&events)).await?;
        tx.commit().await?;
        Ok(wakeups)
    }
}

async fn requeue_parked_turn(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    turn_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE turns SET status = 'queued', wakeup_at = now() WHERE id = $1 AND status = 'waiting_approval'",
    )
    .bind(turn_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
