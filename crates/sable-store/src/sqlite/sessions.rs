//! The worker's side of a session in SQLite: its lease, its runnable turns, its history,
//! and the transaction that ends a turn and queues the reply.

use std::time::Duration;

use chrono::Utc;
use sable_core::{
    DeliveryId, DeliveryStatus, MessageId, MessageRole, OrgId, SessionId, TurnStatus,
};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::{begin_write, later_by, stored_now, stored_time};
use crate::audit::record;
use crate::records::parse_stored;
use crate::{
    BegunTurn, FinishTurn, HistoryEntry, LeaseRelease, NextTurn, RunnableTurn, SessionSummary,
    StoreError, TurnEnded, TurnOutcome,
};

#[derive(sqlx::FromRow)]
struct RunnableRow {
    id: Hyphenated,
    org_id: Hyphenated,
    session_id: Hyphenated,
    seq: i64,
    agent_id: String,
    channel: String,
    user_id: Option<String>,
    status: String,
    trace_parent: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct HistoryRow {
    role: String,
    content: String,
}

impl TryFrom<HistoryRow> for HistoryEntry {
    type Error = StoreError;

    fn try_from(row: HistoryRow) -> Result<Self, StoreError> {
        Ok(Self {
            role: parse_stored(&row.role)?,
            content: row.content,
        })
    }
}

/// Takes the session's lease if it is free, expired, or already ours.
pub(crate) async fn claim_session(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let mut connection = pool.acquire().await?;
    take_lease(&mut connection, org_id, session_id, owner, ttl).await
}

async fn take_lease(
    connection: &mut SqliteConnection,
    org_id: OrgId,
    session_id: SessionId,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let now = Utc::now();
    let claimed = sqlx::query(
        "UPDATE sessions SET lease_owner = $3, lease_expires_at = $5 \
         WHERE id = $1 AND org_id = $2 \
           AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < $4)",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(owner)
    .bind(stored_time(now))
    .bind(stored_time(later_by(now, ttl)))
    .execute(&mut *connection)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Extends a lease we hold; false when it was lost.
pub(crate) async fn renew_session(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let renewed = sqlx::query(
        "UPDATE sessions SET lease_expires_at = $4 WHERE id = $1 AND org_id = $2 AND lease_owner = $3",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(owner)
    .bind(stored_time(later_by(Utc::now(), ttl)))
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Lets go of the lease only if no turn is queued or running. The write transaction holds
/// the database's write lock, and intake adds turns under that lock too, so a turn being
/// added is either committed before the check below (and seen) or added after the
/// release (and its wake-up finds the lease free).
pub(crate) async fn release_session_if_idle(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
    owner: &str,
) -> Result<LeaseRelease, StoreError> {
    let mut tx = begin_write(pool).await?;
    let holder: Option<(Option<String>,)> =
        sqlx::query_as("SELECT lease_owner FROM sessions WHERE id = $1 AND org_id = $2")
            .bind(session_id.as_uuid().hyphenated())
            .bind(org_id.as_uuid().hyphenated())
            .fetch_optional(&mut *tx)
            .await?;
    if !matches!(holder, Some((Some(ref holder),)) if holder == owner) {
        return Ok(LeaseRelease::Lost);
    }
    let (live_turns,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM turns t WHERE t.session_id = $1 AND t.org_id = $2 AND t.status IN ('queued', 'running') \
               AND NOT EXISTS (SELECT 1 FROM turns w WHERE w.session_id = t.session_id AND w.status = 'waiting_approval' AND w.seq < t.seq)",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_one(&mut *tx)
    .await?;
    if live_turns > 0 {
        return Ok(LeaseRelease::WorkRemains);
    }
    sqlx::query(
        "UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND org_id = $2",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(LeaseRelease::Released)
}

/// Lets go of the lease whatever remains (shutdown); the sweeper hands the rest on.
pub(crate) async fn release_session(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND org_id = $2 AND lease_owner = $3",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// The session's oldest unfinished turn. A `running` one here was orphaned by a worker
/// whose lease expired, and is run again.
pub(crate) async fn next_runnable_turn(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
) -> Result<Option<RunnableTurn>, StoreError> {
    let mut connection = pool.acquire().await?;
    let row = oldest_unfinished(&mut connection, org_id, session_id).await?;
    // A turn parked on an approval blocks the session's later turns until it is decided.
    Ok(row
        .filter(|row| row.status != "waiting_approval")
        .map(|row| RunnableTurn {
            id: row.id.into_uuid().into(),
            org_id: row.org_id.into_uuid().into(),
            session_id: row.session_id.into_uuid().into(),
            seq: row.seq,
            agent_id: row.agent_id,
            channel: row.channel,
            user_id: row.user_id,
            trace_parent: row.trace_parent,
            created_at: row.created_at,
        }))
}

/// Claims the session's lease (free, expired or already ours) and starts its oldest
/// unfinished turn as a new attempt, returning the session's summary and newest
/// `history_limit` messages with it; one write transaction. The lease is taken only when
/// a turn can run.
pub(crate) async fn begin_next_turn(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
    owner: &str,
    ttl: Duration,
    history_limit: i64,
) -> Result<NextTurn, StoreError> {
    let mut tx = begin_write(pool).await?;
    let Some(next) = oldest_unfinished(&mut tx, org_id, session_id).await? else {
        return Ok(NextTurn::NotClaimed);
    };
    if next.status == "waiting_approval" {
        return Ok(NextTurn::NotClaimed);
    }
    if !take_lease(&mut tx, org_id, session_id, owner, ttl).await? {
        return Ok(NextTurn::NotClaimed);
    }
    let now = Utc::now();
    let (attempt,): (i32,) = sqlx::query_as(
        "UPDATE turns SET status = 'running', attempt = attempt + 1, worker_id = $3, started_at = $4 \
         WHERE id = $1 AND org_id = $2 RETURNING attempt",
    )
    .bind(next.id.into_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(owner)
    .bind(stored_time(now))
    .fetch_one(&mut *tx)
    .await?;
    let (summary, summary_through_seq): (Option<String>, i64) = sqlx::query_as(
        "SELECT summary, summary_through_seq FROM sessions WHERE id = $1 AND org_id = $2",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_one(&mut *tx)
    .await?;
    let turn = RunnableTurn {
        id: next.id.into_uuid().into(),
        org_id: next.org_id.into_uuid().into(),
        session_id: next.session_id.into_uuid().into(),
        seq: next.seq,
        agent_id: next.agent_id,
        channel: next.channel,
        user_id: next.user_id,
        trace_parent: next.trace_parent,
        created_at: next.created_at,
    };
    let history = history_on(&mut tx, &turn, history_limit).await?;
    let (config_version,): (i64,) = sqlx::query_as("SELECT config_version FROM orgs WHERE id = $1")
        .bind(org_id.as_uuid().hyphenated())
        .fetch_one(&mut *tx)
        .await?;
    let event = record::turn_started(&turn, attempt, owner);
    insert_events(&mut tx, &[event], &stored_time(now)).await?;
    tx.commit().await?;
    Ok(NextTurn::Begun(Box::new(BegunTurn {
        turn,
        attempt,
        summary: SessionSummary {
            text: summary,
            through_seq: summary_through_seq,
        },
        history,
        config_version,
    })))
}

async fn oldest_unfinished(
    connection: &mut SqliteConnection,
    org_id: OrgId,
    session_id: SessionId,
) -> Result<Option<RunnableRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.org_id, t.session_id, t.seq, t.agent_id, s.channel, t.trace_parent, s.user_id, t.status, \
                t.created_at \
         FROM turns t JOIN sessions s ON s.id = t.session_id \
         WHERE t.session_id = $1 AND t.org_id = $2 AND t.status IN ('queued', 'running', 'waiting_approval') \
         ORDER BY t.seq LIMIT 1",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_optional(&mut *connection)
    .await?)
}

/// The newest `limit` user and assistant messages up to and including `turn` and after
/// the session's summary, oldest first. Error replies are left out: the model never sees
/// them.
pub(crate) async fn history(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    limit: i64,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut connection = pool.acquire().await?;
    history_on(&mut connection, turn, limit).await
}

async fn history_on(
    connection: &mut SqliteConnection,
    turn: &RunnableTurn,
    limit: i64,
) -> Result<Vec<HistoryEntry>, StoreError> {
    // SQLite reads a negative LIMIT as "no limit"; none is asked for.
    let limit = limit.max(0);
    let mut rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT role, content FROM messages \
         WHERE session_id = $1 AND org_id = $2 AND turn_seq <= $3 AND role IN ('user', 'assistant') \
           AND turn_seq > (SELECT summary_through_seq FROM sessions WHERE id = $1) AND turn_seq > $3 - $4 \
         ORDER BY turn_seq DESC, position DESC LIMIT $4",
    )
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(turn.seq)
    .bind(limit)
    .fetch_all(&mut *connection)
    .await?;
    rows.reverse();
    rows.into_iter().map(HistoryEntry::try_from).collect()
}

/// Ends the turn, appends its reply, queues the delivery, records the attempt's provider
/// calls and, when `lease_owner` is given and no later turn was queued, lets the lease
/// go, all or nothing. Returns `None` when the attempt was fenced out (another worker
/// took the turn over). Intake takes the same write lock, so a turn being added is
/// committed either before the release's check of `next_seq` or after the release.
pub(crate) async fn finish_turn(
    pool: &SqlitePool,
    finish: FinishTurn<'_>,
) -> Result<Option<TurnEnded>, StoreError> {
    let ending = TurnEnding::of(&finish.outcome);
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    if !end_turn(&mut tx, &finish, &ending, &now).await? {
        return Ok(None);
    }
    append_reply(&mut tx, finish.turn, &ending, &now).await?;
    let status = TurnEnded::initial_status(&finish.turn.channel);
    let delivery_id = queue_delivery(&mut tx, finish.turn, status, &now).await?;
    super::calls::insert_provider_calls(&mut tx, finish.turn, &finish.provider_calls).await?;
    let lease_released = match finish.lease_owner {
        Some(owner) => release_if_last(&mut tx, finish.turn, owner).await?,
        None => false,
    };
    insert_events(&mut tx, &record::turn_ended(&finish), &now).await?;
    tx.commit().await?;
    Ok(Some(TurnEnded {
        delivery_id,
        delivered: status == DeliveryStatus::Delivered,
        lease_released,
    }))
}

/// Lets go of `owner`'s lease when `turn` is the session's last turn.
async fn release_if_last(
    tx: &mut SqliteConnection,
    turn: &RunnableTurn,
    owner: &str,
) -> Result<bool, StoreError> {
    let released = sqlx::query(
        "UPDATE sessions SET lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND org_id = $2 AND lease_owner = $3 AND next_seq = $4 + 1",
    )
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(owner)
    .bind(turn.seq)
    .execute(&mut *tx)
    .await?;
    Ok(released.rows_affected() == 1)
}

/// What a turn's outcome writes: its final status and error, and its reply.
struct TurnEnding<'a> {
    status: TurnStatus,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
    reply_role: MessageRole,
    reply: &'a str,
}

impl<'a> TurnEnding<'a> {
    fn of(outcome: &'a TurnOutcome) -> Self {
        match outcome {
            TurnOutcome::Replied { text } => Self {
                status: TurnStatus::Done,
                error_code: None,
                error_message: None,
                reply_role: MessageRole::Assistant,
                reply: text,
            },
            TurnOutcome::Failed {
                code,
                message,
                reply_text,
            } => Self {
                status: TurnStatus::Failed,
                error_code: Some(code.as_str()),
                error_message: Some(message.as_str()),
                reply_role: MessageRole::Error,
                reply: reply_text,
            },
        }
    }
}

/// Ends the turn if `finish.attempt` is still its running attempt; false when fenced out.
async fn end_turn(
    tx: &mut SqliteConnection,
    finish: &FinishTurn<'_>,
    ending: &TurnEnding<'_>,
    now: &str,
) -> Result<bool, StoreError> {
    let turn = finish.turn;
    let usage = finish.usage;
    let route = finish.route.as_ref();
    let ended = sqlx::query(
        "UPDATE turns SET status = $4, finished_at = $5, error_code = $6, error_message = $7, \
             input_tokens = $8, output_tokens = $9, cached_input_tokens = $10, \
             model_profile = $11, route_reason = $12 \
         WHERE id = $1 AND org_id = $2 AND status = 'running' AND attempt = $3",
    )
    .bind(turn.id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(finish.attempt)
    .bind(ending.status.as_str())
    .bind(now)
    .bind(ending.error_code)
    .bind(
        ending
            .error_message
            .map(|message| message.replace('\0', "")),
    )
    .bind(usage.map(|usage| usage.input_tokens))
    .bind(usage.map(|usage| usage.output_tokens))
    .bind(usage.map(|usage| usage.cached_input_tokens))
    .bind(route.map(|route| route.profile.as_str()))
    .bind(route.map(|route| route.reason.as_str()))
    .execute(&mut *tx)
    .await?;
    Ok(ended.rows_affected() == 1)
}

async fn append_reply(
    tx: &mut SqliteConnection,
    turn: &RunnableTurn,
    ending: &TurnEnding<'_>,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content, created_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8)",
    )
    .bind(MessageId::new().as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.id.as_uuid().hyphenated())
    .bind(turn.seq)
    .bind(ending.reply_role.as_str())
    .bind(ending.reply.replace('\0', ""))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn queue_delivery(
    tx: &mut SqliteConnection,
    turn: &RunnableTurn,
    status: DeliveryStatus,
    now: &str,
) -> Result<DeliveryId, StoreError> {
    let delivery_id = DeliveryId::new();
    let delivered_at = (status == DeliveryStatus::Delivered).then_some(now);
    sqlx::query(
        "INSERT INTO deliveries (id, org_id, turn_id, session_id, channel, status, created_at, wakeup_at, delivered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(delivery_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(turn.id.as_uuid().hyphenated())
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(&turn.channel)
    .bind(status.as_str())
    .bind(now)
    .bind(delivered_at)
    .execute(&mut *tx)
    .await?;
    Ok(delivery_id)
}
