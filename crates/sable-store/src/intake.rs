//! Accepting an inbound message: one transaction writes the message and its queued turn,
//! or returns the original turn when the idempotency key was seen before.

use sable_core::{
    AgentId, Channel, ConversationKey, IdempotencyKey, MessageId, MessageRole, MessageText, OrgId,
    SessionId, TurnId, TurnStatus,
};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::records::parse_stored;
use crate::{PgStore, StoreError};

/// Which session an inbound message belongs to.
#[derive(Debug, Clone)]
pub enum SessionTarget {
    /// Start a new session.
    New,
    /// Continue a session the caller already knows.
    Existing(SessionId),
    /// The session of this conversation, created on its first message.
    Conversation {
        key: ConversationKey,
        user_id: Option<String>,
    },
}

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub org_id: OrgId,
    pub channel: Channel,
    pub target: SessionTarget,
    /// The agent that answers, chosen by the bindings.
    pub agent: AgentId,
    /// The binding rule that chose the agent (recorded on the turn).
    pub binding_rule: String,
    pub text: MessageText,
    pub idempotency_key: Option<IdempotencyKey>,
    pub trace_parent: Option<String>,
}

/// The turn that answers an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedTurn {
    pub turn_id: TurnId,
    pub session_id: SessionId,
    pub seq: i64,
    pub status: TurnStatus,
    /// False when the idempotency key matched an earlier turn, which is returned instead.
    pub created: bool,
}

#[derive(sqlx::FromRow)]
struct SessionSlot {
    id: Uuid,
    seq: i64,
}

#[derive(sqlx::FromRow)]
struct ExistingTurn {
    id: Uuid,
    session_id: Uuid,
    seq: i64,
    status: String,
}

impl PgStore {
    /// Writes the message and a queued turn atomically. Repeating an idempotency key
    /// (even concurrently) returns the first turn and writes nothing.
    pub async fn accept_message(&self, message: NewMessage) -> Result<AcceptedTurn, StoreError> {
        if let Some(key) = &message.idempotency_key
            && let Some(existing) = self.turn_by_idempotency_key(message.org_id, key).await?
        {
            return Ok(existing);
        }
        let mut tx = self.pool.begin().await?;
        let slot = reserve_session_slot(&mut tx, &message).await?;
        let turn_id = TurnId::new();
        let inserted = sqlx::query(
            "INSERT INTO turns (id, org_id, session_id, seq, agent_id, binding_rule, status, idempotency_key, trace_parent) \
             VALUES ($1, $2, $3, $4, $5, $8, 'queued', $6, $7) \
             ON CONFLICT (org_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(turn_id.as_uuid())
        .bind(message.org_id.as_uuid())
        .bind(slot.id)
        .bind(slot.seq)
        .bind(message.agent.as_str())
        .bind(message.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .bind(&message.trace_parent)
        .bind(&message.binding_rule)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // A concurrent request with the same key won; return its turn.
            tx.rollback().await?;
            let key = message
                .idempotency_key
                .as_ref()
                .ok_or(StoreError::NotFound("turn"))?;
            return self
                .turn_by_idempotency_key(message.org_id, key)
                .await?
                .ok_or(StoreError::NotFound("turn"));
        }
        insert_user_message(&mut tx, &message, turn_id, slot.id, slot.seq).await?;
        tx.commit().await?;
        Ok(AcceptedTurn {
            turn_id,
            session_id: slot.id.into(),
            seq: slot.seq,
            status: TurnStatus::Queued,
            created: true,
        })
    }

    async fn turn_by_idempotency_key(
        &self,
        org_id: OrgId,
        key: &IdempotencyKey,
    ) -> Result<Option<AcceptedTurn>, StoreError> {
        let row: Option<ExistingTurn> = sqlx::query_as(
            "SELECT id, session_id, seq, status FROM turns WHERE org_id = $1 AND idempotency_key = $2",
        )
        .bind(org_id.as_uuid())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(AcceptedTurn {
                turn_id: row.id.into(),
                session_id: row.session_id.into(),
                seq: row.seq,
                status: parse_stored(&row.status)?,
                created: false,
            })
        })
        .transpose()
    }
}

/// Finds or creates the session and takes the next sequence number in it. The row lock
/// this takes orders concurrent messages to one session.
async fn reserve_session_slot(
    tx: &mut Transaction<'_, Postgres>,
    message: &NewMessage,
) -> Result<SessionSlot, StoreError> {
    let agent = message.agent.as_str();
    let slot = match &message.target {
        SessionTarget::Existing(session_id) => sqlx::query_as(
            "UPDATE sessions SET next_seq = next_seq + 1, updated_at = now() \
             WHERE id = $1 AND org_id = $2 RETURNING id, next_seq - 1 AS seq",
        )
        .bind(session_id.as_uuid())
        .bind(message.org_id.as_uuid())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound("session"))?,
        SessionTarget::Conversation { key, user_id } => sqlx::query_as(
            "INSERT INTO sessions (id, org_id, channel, conversation_key, user_id, agent_id, next_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, 2) \
             ON CONFLICT (org_id, channel, conversation_key) WHERE conversation_key IS NOT NULL \
             DO UPDATE SET next_seq = sessions.next_seq + 1, updated_at = now() \
             RETURNING id, next_seq - 1 AS seq",
        )
        .bind(SessionId::new().as_uuid())
        .bind(message.org_id.as_uuid())
        .bind(message.channel.as_str())
        .bind(key.as_str())
        .bind(user_id)
        .bind(agent)
        .fetch_one(&mut **tx)
        .await?,
        SessionTarget::New => sqlx::query_as(
            "INSERT INTO sessions (id, org_id, channel, agent_id, next_seq) VALUES ($1, $2, $3, $4, 2) \
             RETURNING id, next_seq - 1 AS seq",
        )
        .bind(SessionId::new().as_uuid())
        .bind(message.org_id.as_uuid())
        .bind(message.channel.as_str())
        .bind(agent)
        .fetch_one(&mut **tx)
        .await?,
    };
    Ok(slot)
}

async fn insert_user_message(
    tx: &mut Transaction<'_, Postgres>,
    message: &NewMessage,
    turn_id: TurnId,
    session_id: Uuid,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
    )
    .bind(MessageId::new().as_uuid())
    .bind(message.org_id.as_uuid())
    .bind(session_id)
    .bind(turn_id.as_uuid())
    .bind(seq)
    .bind(MessageRole::User.as_str())
    .bind(message.text.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
