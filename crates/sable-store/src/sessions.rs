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

use crate::audit::{pg_insert_events, record};
use crate::calls::pg_insert_provider_calls;
use crate::records::parse_stored;
use crate::{HistoryEntry, PgStore, ProviderCallRecord, SessionSummary, StoreError};

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
    /// The attempt's provider calls not recorded yet, written with the ending.
    pub provider_calls: Vec<ProviderCallRecord>,
    /// The lease holder: when given, the lease is let go in the same transaction if no
    /// later turn was queued.
    pub lease_owner: Option<&'a str>,
}

/// What ending a turn wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnEnded {
    pub delivery_id: DeliveryId,
    /// The reply needs no push (the API channel, whose callers read it): its delivery is
    /// recorded delivered at once and no dispatcher is woken.
    pub delivered: bool,
    /// The session's lease was let go: no later turn was queued.
    pub lease_released: bool,
}

impl TurnEnded {
    /// The delivery's status when it is written: API replies are delivered by the commit.
    pub(crate) fn initial_status(channel: &str) -> DeliveryStatus {
        if channel == sable_core::Channel::Api.as_str() {
            DeliveryStatus::Delivered
        } else {
            DeliveryStatus::Pending
        }
    }
}

/// A turn started by `begin_next_turn`, with what its first model request needs.
#[derive(Debug, Clone)]
pub struct BegunTurn {
    pub turn: RunnableTurn,
    pub attempt: i32,
    pub summary: SessionSummary,
    /// The newest user and assistant messages up to and including the turn and after the
    /// summary (at most the limit asked for), oldest first.
    pub history: Vec<HistoryEntry>,
    /// The org's configuration version when the turn began (per-org configuration
    /// caches compare it with theirs).
    pub config_version: i64,
}

/// What `begin_next_turn` found.
#[derive(Debug, Clone)]
pub enum NextTurn {
    /// The lease is ours and this turn runs now.
    Begun(Box<BegunTurn>),
    /// The lease is ours, but the turn it was taken for ended meanwhile: let it go with
    /// `release_session_if_idle`.
    LeaseWithoutTurn,
    /// Nothing was claimed: another worker holds the lease, or no turn can run (none is
    /// queued, or the oldest waits for an approval). The lease was not touched.
    NotClaimed,
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

/// `begin_next_turn`'s one row: the lease's side always, the turn's when one started.
#[derive(sqlx::FromRow)]
struct BegunRow {
    id: Option<Uuid>,
    org_id: Option<Uuid>,
    session_id: Option<Uuid>,
    seq: Option<i64>,
    agent_id: Option<String>,
    trace_parent: Option<String>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    attempt: Option<i32>,
    channel: String,
    user_id: Option<String>,
    summary: Option<String>,
    summary_through_seq: i64,
    /// `[[role, content], …]`, oldest first.
    history: String,
    config_version: i64,
}

impl BegunRow {
    fn into_next_turn(self) -> Result<NextTurn, StoreError> {
        let (
            Some(id),
            Some(org_id),
            Some(session_id),
            Some(seq),
            Some(agent_id),
            Some(created_at),
            Some(attempt),
        ) = (
            self.id,
            self.org_id,
            self.session_id,
            self.seq,
            self.agent_id,
            self.created_at,
            self.attempt,
        )
        else {
            return Ok(NextTurn::LeaseWithoutTurn);
        };
        let history = parse_history(&self.history)?;
        Ok(NextTurn::Begun(Box::new(BegunTurn {
            turn: RunnableTurn {
                id: id.into(),
                org_id: org_id.into(),
                session_id: session_id.into(),
                seq,
                agent_id,
                channel: self.channel,
                user_id: self.user_id,
                trace_parent: self.trace_parent,
                created_at,
            },
            attempt,
            summary: SessionSummary {
                text: self.summary,
                through_seq: self.summary_through_seq,
            },
            history,
            config_version: self.config_version,
        })))
    }
}

/// Reads a history aggregated by the database as `[[role, content], …]`.
pub(crate) fn parse_history(json: &str) -> Result<Vec<HistoryEntry>, StoreError> {
    let pairs: Vec<(String, String)> = serde_json::from_str(json)
        .map_err(|error| StoreError::Database(sqlx::Error::Decode(Box::new(error))))?;
    pairs
        .into_iter()
        .map(|(role, content)| {
            Ok(HistoryEntry {
                role: parse_stored(&role)?,
                content,
            })
        })
        .collect()
}

/// A turn's provider calls as the JSON array `json_to_recordset` reads (ids included;
/// NUL characters, which Postgres text refuses, stripped).
pub(crate) fn provider_calls_json(calls: &[ProviderCallRecord]) -> String {
    let strip = |text: &Option<String>| text.as_ref().map(|text| text.replace('\0', ""));
    let rows: Vec<serde_json::Value> = calls
        .iter()
        .map(|call| {
            let clean = ProviderCallRecord {
                error_message: strip(&call.error_message),
                failover_reason: strip(&call.failover_reason),
                ..call.clone()
            };
            let mut row = serde_json::to_value(clean).unwrap_or_default();
            row["id"] = serde_json::json!(Uuid::now_v7());
            row
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    role: String,
    content: String,
}

/// Claims a session's lease and starts its oldest unfinished turn (`begin_next_turn`):
/// `$1` session, `$2` org, `$3` owner, `$4` lease seconds, `$5` history limit, `$6` the
/// audit event's id, `$7` whether the audit is on.
const BEGIN_NEXT_TURN_SQL: &str = "WITH next AS ( \
                 SELECT id, seq, status FROM turns \
                 WHERE session_id = $1 AND org_id = $2 AND status IN ('queued', 'running', 'waiting_approval') \
                 ORDER BY seq LIMIT 1 \
             ), lease AS ( \
                 UPDATE sessions s SET lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4) \
                 WHERE s.id = $1 AND s.org_id = $2 \
                   AND (s.lease_owner IS NULL OR s.lease_owner = $3 OR s.lease_expires_at < now()) \
                   AND EXISTS (SELECT 1 FROM next WHERE next.status <> 'waiting_approval') \
                 RETURNING s.channel, s.user_id, s.summary, s.summary_through_seq \
             ), started AS ( \
                 UPDATE turns t SET status = 'running', attempt = t.attempt + 1, worker_id = $3, started_at = now() \
                 WHERE t.id = (SELECT id FROM next) AND t.session_id = $1 AND t.seq = (SELECT seq FROM next) \
                   AND t.status IN ('queued', 'running') AND EXISTS (SELECT 1 FROM lease) \
                 RETURNING t.id, t.org_id, t.session_id, t.seq, t.agent_id, t.trace_parent, t.created_at, t.attempt \
             ), audit AS ( \
                 INSERT INTO audit_events (id, org_id, actor, action, subject_kind, subject_id, outcome, severity, \
                     trace_id, turn_id, session_id, details) \
                 SELECT $6, started.org_id, 'system', 'turn.started', 'turn', started.id::text, 'ok', 'info', \
                     nullif(split_part(started.trace_parent, '-', 2), ''), started.id, started.session_id, \
                     json_build_object('attempt', started.attempt, 'agent', started.agent_id, 'worker', $3) \
                 FROM started WHERE $7 \
             ) \
             SELECT started.id, started.org_id, started.session_id, started.seq, started.agent_id, \
                    started.trace_parent, started.created_at, started.attempt, \
                    lease.channel, lease.user_id, lease.summary, lease.summary_through_seq, \
                    coalesce((SELECT o.config_version FROM orgs o WHERE o.id = $2), 0) AS config_version, \
                    (SELECT coalesce(json_agg(json_build_array(h.role, h.content) ORDER BY h.turn_seq, h.position), '[]'::json)::text \
                     FROM (SELECT m.role, m.content, m.turn_seq, m.position FROM messages m \
                           WHERE m.session_id = $1 AND m.org_id = $2 AND m.turn_seq <= started.seq \
                             AND m.role IN ('user', 'assistant') \
                             AND m.turn_seq = ANY (ARRAY(SELECT generate_series( \
                                 greatest(lease.summary_through_seq, started.seq - $5) + 1, started.seq))) \
                           ORDER BY m.turn_seq DESC, m.position DESC LIMIT $5) h) AS history \
             FROM lease LEFT JOIN started ON true";

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

    /// Claims the session's lease (free, expired or already ours) and starts its oldest
    /// unfinished turn as a new attempt, in one statement that also returns the session's
    /// summary and its newest `history_limit` messages. The lease is taken only when a
    /// turn can run.
    ///
    /// Both reads of the session's turns and messages name their rows exactly, so that
    /// whatever plan the statistics lead to, each index it scans is entered at those rows
    /// and no further: the turn by its id and `(session_id, seq)` as values (joined to
    /// `next`, the planner read the session's whole index of unfinished turns and filtered
    /// it, and by the id alone a partial index of live turns that its statistics said was
    /// small, whole); the history by the session's last `history_limit` turn numbers
    /// after the summary, as a list. Every turn has its user message, so the newest
    /// `history_limit` user and assistant messages lie within those turns. With a range
    /// for bounds the planner kept one bound in the index scan and filtered the rest of
    /// the session's history (docs/BENCHMARKS.md, the audit's cost): a claim's cost grew
    /// with the session.
    pub async fn begin_next_turn(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        owner: &str,
        ttl: Duration,
        history_limit: i64,
    ) -> Result<NextTurn, StoreError> {
        let row: Option<BegunRow> = sqlx::query_as(BEGIN_NEXT_TURN_SQL)
            .bind(session_id.as_uuid())
            .bind(org_id.as_uuid())
            .bind(owner)
            .bind(ttl.as_secs_f64())
            .bind(history_limit)
            .bind(Uuid::now_v7())
            .bind(self.audit)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => row.into_next_turn(),
            None => Ok(NextTurn::NotClaimed),
        }
    }

    /// `begin_next_turn` as `EXPLAIN (ANALYZE)` prints its generic plan (the one a pooled
    /// connection keeps using once it has prepared the statement), in a transaction rolled
    /// back after: for tests of what a claim reads.
    #[doc(hidden)]
    pub async fn explain_begin_next_turn(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        history_limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
            .execute(&mut *tx)
            .await?;
        let plan: Vec<(String,)> =
            sqlx::query_as(&format!("EXPLAIN (ANALYZE) {BEGIN_NEXT_TURN_SQL}"))
                .bind(session_id.as_uuid())
                .bind(org_id.as_uuid())
                .bind("explain")
                .bind(30.0_f64)
                .bind(history_limit)
                .bind(Uuid::now_v7())
                .bind(self.audit)
                .fetch_all(&mut *tx)
                .await?;
        tx.rollback().await?;
        Ok(plan.into_iter().map(|(line,)| line).collect())
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
               AND turn_seq > greatest((SELECT summary_through_seq FROM sessions WHERE id = $1), $3 - $4) \
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

    /// Ends the turn, appends its reply, queues the delivery, records the attempt's
    /// provider calls and, when `lease_owner` is given and no later turn was queued, lets
    /// the session's lease go: one statement, all or nothing. Returns `None` when the
    /// attempt was fenced out (another worker took the turn over).
    ///
    /// The release is decided on the session row itself (`next_seq`), which intake updates
    /// in the transaction that adds a turn: under READ COMMITTED a concurrent intake is
    /// either committed first (and `next_seq` shows its turn) or waited for and rechecked
    /// on the row's newest version, so a turn being added never finds the lease held by a
    /// worker that has stopped looking.
    pub async fn finish_turn(
        &self,
        finish: FinishTurn<'_>,
    ) -> Result<Option<TurnEnded>, StoreError> {
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
        let delivery_id = DeliveryId::new();
        let delivery_status = TurnEnded::initial_status(&turn.channel);
        let calls = pg_insert_provider_calls("$8", "$1", "$20", Some("ended"));
        let audit = pg_insert_events("$22", Some("ended"), &[]);
        let sql = format!(
            "WITH ended AS ( \
                 UPDATE turns SET status = $3, finished_at = now(), error_code = $4, error_message = $5, \
                     input_tokens = $6, output_tokens = $7, cached_input_tokens = $9, \
                     model_profile = $10, route_reason = $11 \
                 WHERE id = $1 AND status = 'running' AND attempt = $2 AND org_id = $8 \
                 RETURNING id \
             ), reply AS ( \
                 INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content) \
                 SELECT $12, $8, $13, $1, $14, 1, $15, $16 FROM ended \
             ), delivery AS ( \
                 INSERT INTO deliveries (id, org_id, turn_id, session_id, channel, status, delivered_at) \
                 SELECT $17, $8, $1, $13, $18, $19, CASE WHEN $19 = 'delivered' THEN now() END FROM ended \
             ), calls AS ({calls}), audit AS ({audit}\
             ), released AS ( \
                 UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $13 AND org_id = $8 AND lease_owner = $21 AND next_seq = $14 + 1 \
                   AND EXISTS (SELECT 1 FROM ended) \
                 RETURNING id \
             ) \
             SELECT EXISTS (SELECT 1 FROM ended), EXISTS (SELECT 1 FROM released)"
        );
        let (ended, lease_released): (bool, bool) = sqlx::query_as(&sql)
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
            .bind(MessageId::new().as_uuid())
            .bind(turn.session_id.as_uuid())
            .bind(turn.seq)
            .bind(role.as_str())
            .bind(reply.replace('\0', ""))
            .bind(delivery_id.as_uuid())
            .bind(&turn.channel)
            .bind(delivery_status.as_str())
            .bind(provider_calls_json(&finish.provider_calls))
            .bind(finish.lease_owner)
            .bind(self.audit_json(&record::turn_ended(&finish)))
            .fetch_one(&self.pool)
            .await?;
        Ok(ended.then_some(TurnEnded {
            delivery_id,
            delivered: delivery_status == DeliveryStatus::Delivered,
            lease_released,
        }))
    }
}
