//! Accepting an inbound message in SQLite: one write transaction finds or creates the
//! session, takes its next sequence number and writes the queued turn and the message.

use sable_core::{IdempotencyKey, MessageId, MessageRole, SessionId, TurnId, TurnStatus};
use sqlx::{SqliteConnection, SqliteExecutor, SqlitePool};
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::{begin_write, stored_now};
use crate::audit::record;
use crate::records::parse_stored;
use crate::{AcceptedTurn, NewMessage, SessionTarget, StoreError};

#[derive(sqlx::FromRow)]
struct SessionSlot {
    id: Hyphenated,
    seq: i64,
}

#[derive(sqlx::FromRow)]
struct ExistingTurn {
    id: Hyphenated,
    session_id: Hyphenated,
    seq: i64,
    status: String,
}

/// Writes the message and a queued turn atomically. Repeating an idempotency key (even
/// concurrently) returns the first turn and writes nothing.
pub(crate) async fn accept_message(
    pool: &SqlitePool,
    message: NewMessage,
) -> Result<AcceptedTurn, StoreError> {
    // Repeats are answered without waiting for the write lock.
    if let Some(existing) = turn_by_idempotency_key(pool, &message).await? {
        return audited_repeat(pool, &message, existing).await;
    }
    let mut tx = begin_write(pool).await?;
    // A concurrent request with the same key may have committed before the lock was ours;
    // under the lock, nothing can insert the key between this check and the insert.
    if let Some(existing) = turn_by_idempotency_key(&mut *tx, &message).await? {
        drop(tx);
        return audited_repeat(pool, &message, existing).await;
    }
    let now = stored_now();
    let slot = reserve_session_slot(&mut tx, &message, &now).await?;
    let turn_id = TurnId::new();
    sqlx::query(
        "INSERT INTO turns (id, org_id, session_id, seq, agent_id, binding_rule, status, idempotency_key, trace_parent, \
             created_at, wakeup_at) \
         VALUES ($1, $2, $3, $4, $5, $9, 'queued', $6, $7, $8, $8)",
    )
    .bind(turn_id.as_uuid().hyphenated())
    .bind(message.org_id.as_uuid().hyphenated())
    .bind(slot.id)
    .bind(slot.seq)
    .bind(message.agent.as_str())
    .bind(message.idempotency_key.as_ref().map(IdempotencyKey::as_str))
    .bind(&message.trace_parent)
    .bind(&now)
    .bind(&message.binding_rule)
    .execute(&mut *tx)
    .await?;
    insert_user_message(&mut tx, &message, turn_id, slot.id, slot.seq, &now).await?;
    let (behind_others,): (bool,) = sqlx::query_as(
        "SELECT (s.lease_owner IS NOT NULL AND s.lease_expires_at > $3) \
             OR EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.id \
                        AND t.status IN ('queued', 'running', 'waiting_approval') AND t.seq < $2) \
         FROM sessions s WHERE s.id = $1",
    )
    .bind(slot.id)
    .bind(slot.seq)
    .bind(&now)
    .fetch_one(&mut *tx)
    .await?;
    let session_id: SessionId = slot.id.into_uuid().into();
    let mut event = record::message_accepted(&message, true).in_turn(turn_id, session_id);
    event.subject_id = turn_id.to_string();
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(AcceptedTurn {
        turn_id,
        session_id: slot.id.into_uuid().into(),
        seq: slot.seq,
        status: TurnStatus::Queued,
        created: true,
        behind_others,
    })
}

/// A repeat writes nothing else; its acceptance is still on record.
async fn audited_repeat(
    pool: &SqlitePool,
    message: &NewMessage,
    existing: AcceptedTurn,
) -> Result<AcceptedTurn, StoreError> {
    let mut event =
        record::message_accepted(message, false).in_turn(existing.turn_id, existing.session_id);
    event.subject_id = existing.turn_id.to_string();
    super::audit::record_audit(pool, &[event]).await?;
    Ok(existing)
}

async fn turn_by_idempotency_key(
    executor: impl SqliteExecutor<'_>,
    message: &NewMessage,
) -> Result<Option<AcceptedTurn>, StoreError> {
    let Some(key) = &message.idempotency_key else {
        return Ok(None);
    };
    let row: Option<ExistingTurn> = sqlx::query_as(
        "SELECT id, session_id, seq, status FROM turns WHERE org_id = $1 AND idempotency_key = $2",
    )
    .bind(message.org_id.as_uuid().hyphenated())
    .bind(key.as_str())
    .fetch_optional(executor)
    .await?;
    row.map(|row| {
        Ok(AcceptedTurn {
            turn_id: row.id.into_uuid().into(),
            session_id: row.session_id.into_uuid().into(),
            seq: row.seq,
            status: parse_stored(&row.status)?,
            created: false,
            behind_others: false,
        })
    })
    .transpose()
}

/// Finds or creates the session and takes the next sequence number in it.
async fn reserve_session_slot(
    tx: &mut SqliteConnection,
    message: &NewMessage,
    now: &str,
) -> Result<SessionSlot, StoreError> {
    let org_id = message.org_id.as_uuid().hyphenated();
    let agent = message.agent.as_str();
    let slot = match &message.target {
        SessionTarget::Existing(session_id) => sqlx::query_as(
            "UPDATE sessions SET next_seq = next_seq + 1, updated_at = $3 \
             WHERE id = $1 AND org_id = $2 RETURNING id, next_seq - 1 AS seq",
        )
        .bind(session_id.as_uuid().hyphenated())
        .bind(org_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("session"))?,
        SessionTarget::Conversation { key, user_id } => sqlx::query_as(
            "INSERT INTO sessions (id, org_id, channel, conversation_key, user_id, agent_id, next_seq, \
                 created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 2, $7, $7) \
             ON CONFLICT (org_id, channel, conversation_key) WHERE conversation_key IS NOT NULL \
             DO UPDATE SET next_seq = sessions.next_seq + 1, updated_at = excluded.updated_at \
             RETURNING id, next_seq - 1 AS seq",
        )
        .bind(SessionId::new().as_uuid().hyphenated())
        .bind(org_id)
        .bind(message.channel.as_str())
        .bind(key.as_str())
        .bind(user_id)
        .bind(agent)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?,
        SessionTarget::New => sqlx::query_as(
            "INSERT INTO sessions (id, org_id, channel, agent_id, next_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 2, $5, $5) RETURNING id, next_seq - 1 AS seq",
        )
        .bind(SessionId::new().as_uuid().hyphenated())
        .bind(org_id)
        .bind(message.channel.as_str())
        .bind(agent)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?,
    };
    Ok(slot)
}

async fn insert_user_message(
    tx: &mut SqliteConnection,
    message: &NewMessage,
    turn_id: TurnId,
    session_id: Hyphenated,
    seq: i64,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content, created_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8)",
    )
    .bind(MessageId::new().as_uuid().hyphenated())
    .bind(message.org_id.as_uuid().hyphenated())
    .bind(session_id)
    .bind(turn_id.as_uuid().hyphenated())
    .bind(seq)
    .bind(MessageRole::User.as_str())
    .bind(message.text.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
