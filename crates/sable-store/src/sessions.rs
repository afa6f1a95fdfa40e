//! The worker's side of a session: its lease, its runnable turns, its history, and the
//! transaction that ends a turn and queues the reply.
//!
//! The lease makes one worker at a time the runner of a session; the turn's `attempt`
//! fences out a worker that lost its lease, so a late writer can never end a turn twice.

use std::time::Duration;

use sable_core::{
    DeliveryId, DeliveryStatus, MessageId, MessageRole, OrgId, SessionId, TurnId, TurnStatus,
};
use uuid::Uuid;

use crate::records::parse_stored;
use crate::{HistoryEntry, PgStore, StoreError};

/// A turn the lease holder should run next.
#[derive(Debug, Clone)]
pub struct RunnableTurn {
    pub id: TurnId,
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub seq: i64,
    pub agent_id: String,
    pub channel: String,
    /// The conversation's user, when the channel named one.
    pub user_id: Option<String>,
    pub trace_parent: Option<String>,
    /// When the turn was accepted (queue wait is measured from here).
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Tokens a turn consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
}

/// Which model profile a turn used and the rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRoute {
    pub profile: String,
    pub reason: String,
}

/// How a turn ended.
#[derive(Debug, Clone)]
pub enum TurnOutcome {
    Replied {
        text: String,
    },
    /// The turn failed; `reply_text` tells the user so.
    Failed {
        code: String,
        message: String,
        reply_text: String,
    },
}

/// Ends a turn started as `attempt`.
#[derive(Debug, Clone)]
pub struct FinishTurn<'a> {
    pub turn: &'a RunnableTurn,
    pub attempt: i32,
    pub outcome: TurnOutcome,
    /// Tokens of every provider call of the turn.
    pub usage: Option<Usage>,
    pub route: Option<TurnRoute>,
}

/// What happened when a worker tried to start a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnStart {
    Started {
        attempt: i32,
    },
    /// The turn ended meanwhile (a duplicate wake-up); nothing to do.
    AlreadyEnded,
    /// The worker no longer holds the session's lease; it must stop draining.
    LeaseLost,
}

/// What happened when the lease holder tried to let go of an idle session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRelease {
    Released,
    /// Turns arrived meanwhile; keep draining.
    WorkRemains,
    /// Another worker holds the lease now.
    Lost,
}

#[derive(sqlx::FromRow)]
struct RunnableRow {
    id: Uuid,
    org_id: Uuid,
    session_id: Uuid,
    seq: i64,
    agent_id: String,
    channel: String,
    user_id: Option<String>,
    status: String,
    trace_parent: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    role: String,
    content: String,
}

impl PgStore {
    /// Takes the session's lease if it is free, expired, or already ours.
    pub async fn claim_session(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE sessions SET lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4) \
             WHERE id = $1 AND org_id = $2 \
               AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < now())",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Extends a lease we hold; false when it was lost.
    pub async fn renew_session(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE sessions SET lease_expires_at = now() + make_interval(secs => $4) \
             WHERE id = $1 AND org_id = $2 AND lease_owner = $3",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(owner)
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Lets go of the lease only if no turn is queued or running. The session row is
    /// locked first: intake updates that row in the transaction that adds a turn, so a
    /// turn being added is either committed before the check below (and seen) or added
    /// after the release (and its wake-up finds the lease free).
    pub async fn release_session_if_idle(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        owner: &str,
    ) -> Result<LeaseRelease, StoreError> {
        let mut tx = self.pool.begin().await?;
        let holder: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT lease_owner FROM sessions WHERE id = $1 AND org_id = $2 FOR UPDATE",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if !matches!(holder, Some((Some(ref holder),)) if holder == owner) {
            return Ok(LeaseRelease::Lost);
        }
        let (live_turns,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM turns t WHERE t.session_id = $1 AND t.org_id = $2 AND t.status IN ('queued', 'running') \
               AND NOT EXISTS (SELECT 1 FROM turns w WHERE w.session_id = t.session_id AND w.status = 'waiting_approval' AND w.seq < t.seq)",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
        if live_turns > 0 {
            return Ok(LeaseRelease::WorkRemains);
        }
        sqlx::query("UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND org_id = $2")
            .bind(session_id.as_uuid())
            .bind(org_id.as_uuid())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(LeaseRelease::Released)
    }

    /// Lets go of the lease whatever remains (shutdown); the sweeper hands the rest on.
    pub async fn release_session(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND org_id = $2 AND lease_owner = $3",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session's oldest unfinished turn. A `running` one here was orphaned by a worker
    /// whose lease expired, and is run again.
    pub async fn next_runnable_turn(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<Option<RunnableTurn>, StoreError> {
        let row: Option<RunnableRow> = sqlx::query_as(
            "SELECT t.id, t.org_id, t.session_id, t.seq, t.agent_id, s.channel, t.trace_parent, s.user_id, t.status, \
                t.created_at \
             FROM turns t JOIN sessions s ON s.id = t.session_id \
             WHERE t.session_id = $1 AND t.org_id = $2 AND t.status IN ('queued', 'running', 'waiting_approval') \
             ORDER BY t.seq LIMIT 1",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        // A turn parked on an approval blocks the session's later turns until it is decided.
        Ok(row
            .filter(|row| row.status != "waiting_approval")
            .map(|row| RunnableTurn {
                id: row.id.into(),
                org_id: row.org_id.into(),
                session_id: row.session_id.into(),
                seq: row.seq,
                agent_id: row.agent_id,
                channel: row.channel,
                user_id: row.user_id,
                trace_parent: row.trace_parent,
                created_at: row.created_at,
            }))
    }

    /// Marks the turn running as a new attempt, only while `worker_id` holds the
    /// session's lease.
    pub async fn start_turn(
        &self,
        turn: &RunnableTurn,
        worker_id: &str,
    ) -> Result<TurnStart, StoreError> {
        let attempt: Option<(i32,)> = sqlx::query_as(
            "UPDATE turns t SET status = 'running', attempt = t.attempt + 1, worker_id = $3, started_at = now() \
             FROM sessions s \
             WHERE t.id = $1 AND t.org_id = $2 AND t.status IN ('queued', 'running') \
               AND s.id = t.session_id AND s.lease_owner = $3 AND s.lease_expires_at > now() \
             RETURNING t.attempt",
        )
        .bind(turn.id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((attempt,)) = attempt {
            return Ok(TurnStart::Started { attempt });
        }
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM turns WHERE id = $1 AND org_id = $2")
                .bind(turn.id.as_uuid())
                .bind(turn.org_id.as_uuid())
                .fetch_one(&self.pool)
                .await?;
        let status: TurnStatus = parse_stored(&status)?;
        Ok(if status.is_final() {
            TurnStart::AlreadyEnded
        } else {
            TurnStart::LeaseLost
        })
    }

    /// The newest `limit` user and assistant messages up to and including `turn` and after
    /// the session's summary, oldest first. Error replies are left out: the model never
    /// sees them.
    pub async fn history(
        &self,
        turn: &RunnableTurn,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut rows: Vec<HistoryRow> = sqlx::query_as(
            "SELECT role, content FROM messages \
             WHERE session_id = $1 AND org_id = $2 AND turn_seq <= $3 AND role IN ('user', 'assistant') \
               AND turn_seq > (SELECT summary_through_seq FROM sessions WHERE id = $1) \
             ORDER BY turn_seq DESC, position DESC LIMIT $4",
        )
        .bind(turn.session_id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(turn.seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.reverse();
        rows.into_iter()
            .map(|row| {
                Ok(HistoryEntry {
                    role: parse_stored(&row.role)?,
                    content: row.content,
                })
            })
            .collect()
    }

    /// Ends the turn, appends its reply and queues the delivery, all or nothing. Returns
    /// `None` when the attempt was fenced out (another worker took the turn over).
    pub async fn finish_turn(
        &self,
        finish: FinishTurn<'_>,
    ) -> Result<Option<DeliveryId>, StoreError> {
        let turn = finish.turn;
        let (status, role, reply, code, message) = match &finish.outcome {
            TurnOutcome::Replied { text } => {
                (TurnStatus::Done, MessageRole::Assistant, text, None, None)
            }
            TurnOutcome::Failed {
                code,
                message,
                reply_text,
            } => (
                TurnStatus::Failed,
                MessageRole::Error,
                reply_text,
                Some(code),
                Some(message),
            ),
        };
        let usage = finish.usage;
        let route = finish.route.as_ref();
        let mut tx = self.pool.begin().await?;
        let ended = sqlx::query(
            "UPDATE turns SET status = $3, finished_at = now(), error_code = $4, error_message = $5, \
                 input_tokens = $6, output_tokens = $7, cached_input_tokens = $9, \
                 model_profile = $10, route_reason = $11 \
             WHERE id = $1 AND status = 'running' AND attempt = $2 AND org_id = $8",
        )
        .bind(turn.id.as_uuid())
        .bind(finish.attempt)
        .bind(status.as_str())
        .bind(code)
        .bind(message.map(|message| message.replace('\0', "")))
        .bind(usage.map(|usage| usage.input_tokens))
        .bind(usage.map(|usage| usage.output_tokens))
        .bind(turn.org_id.as_uuid())
        .bind(usage.map(|usage| usage.cached_input_tokens))
        .bind(route.map(|route| route.profile.as_str()))
        .bind(route.map(|route| route.reason.as_str()))
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7)",
        )
        .bind(MessageId::new().as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(turn.session_id.as_uuid())
        .bind(turn.id.as_uuid())
        .bind(turn.seq)
        .bind(role.as_str())
        .bind(reply.replace('\0', ""))
        .execute(&mut *tx)
        .await?;
        let delivery_id = DeliveryId::new();
        sqlx::query(
            "INSERT INTO deliveries (id, org_id, turn_id, session_id, channel, status) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(delivery_id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(turn.id.as_uuid())
        .bind(turn.session_id.as_uuid())
        .bind(&turn.channel)
        .bind(DeliveryStatus::Pending.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(delivery_id))
    }
}
