//! Accepting an inbound message: one statement writes the message and its queued turn, or
//! returns the original turn when the idempotency key was seen before.

use sable_core::{
    AgentId, Channel, ConversationKey, IdempotencyKey, MessageId, MessageText, OrgId, SessionId,
    TurnId, TurnStatus,
};
use uuid::Uuid;

use crate::audit::{pg_insert_events, record};
use crate::records::parse_stored;
use crate::{Actor, PgStore, StoreError};

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
    /// Who sent it (audited with the acceptance).
    pub actor: Actor,
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
    /// Another turn of the session was unfinished, or its lease held, when this one was
    /// accepted: a worker draining the session may run it before its own wake-up arrives.
    pub behind_others: bool,
}

#[derive(sqlx::FromRow)]
struct ExistingTurn {
    id: Uuid,
    session_id: Uuid,
    seq: i64,
    status: String,
}

#[derive(sqlx::FromRow)]
struct IntakeRow {
    id: Uuid,
    session_id: Uuid,
    seq: i64,
    status: String,
    created: bool,
    behind_others: bool,
}

impl PgStore {
    /// Writes the message and a queued turn atomically, in one statement. Repeating an
    /// idempotency key returns the first turn and writes nothing; when two requests with
    /// one key race, the loser's statement fails on the key's unique index as a whole
    /// (its session slot included) and it returns the winner's turn.
    pub async fn accept_message(&self, message: NewMessage) -> Result<AcceptedTurn, StoreError> {
        let turn_id = TurnId::new();
        let (slot, session_id) = session_slot(&message.target);
        let audit = pg_insert_events(
            "$11",
            Some("turn"),
            &[
                ("subject_id", "turn.id::text"),
                ("turn_id", "turn.id"),
                ("session_id", "turn.session_id"),
            ],
        );
        let sql = format!(
            "WITH existing AS ( \
                 SELECT id, session_id, seq, status FROM turns WHERE org_id = $2 AND idempotency_key = $4 \
             ), slot AS ({slot}), \
             turn AS ( \
                 INSERT INTO turns (id, org_id, session_id, seq, agent_id, binding_rule, status, idempotency_key, trace_parent) \
                 SELECT $1, $2, slot.id, slot.seq, $3, $6, 'queued', $4, $5 FROM slot \
                 RETURNING id, session_id, seq, status \
             ), message AS ( \
                 INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content) \
                 SELECT $7, $2, turn.session_id, turn.id, turn.seq, 0, 'user', $8 FROM turn \
             ), audit AS ({audit}) \
             SELECT turn.id, turn.session_id, turn.seq, turn.status, true AS created, \
                    slot.leased OR EXISTS (SELECT 1 FROM turns ahead WHERE ahead.session_id = turn.session_id \
                        AND ahead.status IN ('queued', 'running', 'waiting_approval') AND ahead.seq < turn.seq) \
                        AS behind_others \
             FROM turn, slot \
             UNION ALL SELECT id, session_id, seq, status, false, false FROM existing"
        );
        let mut query = sqlx::query_as::<_, IntakeRow>(&sql)
            .bind(turn_id.as_uuid())
            .bind(message.org_id.as_uuid())
            .bind(message.agent.as_str())
            .bind(message.idempotency_key.as_ref().map(IdempotencyKey::as_str))
            .bind(&message.trace_parent)
            .bind(&message.binding_rule)
            .bind(MessageId::new().as_uuid())
            .bind(message.text.as_str())
            .bind(message.channel.as_str())
            .bind(session_id)
            .bind(self.audit_json(&[record::message_accepted(&message, true)]));
        if let SessionTarget::Conversation { key, user_id } = &message.target {
            query = query.bind(key.as_str()).bind(user_id);
        }
        let accepted = match query.fetch_optional(&self.pool).await {
            Ok(Some(row)) => AcceptedTurn {
                turn_id: row.id.into(),
                session_id: row.session_id.into(),
                seq: row.seq,
                status: parse_stored(&row.status)?,
                created: row.created,
                behind_others: row.behind_others,
            },
            // Neither a turn nor an earlier one: the session named does not exist here.
            Ok(None) => return Err(StoreError::NotFound("session")),
            Err(error) if is_idempotency_race(&error) => {
                let key = message
                    .idempotency_key
                    .as_ref()
                    .ok_or(StoreError::NotFound("turn"))?;
                self.turn_by_idempotency_key(message.org_id, key)
                    .await?
                    .ok_or(StoreError::NotFound("turn"))?
            }
            Err(error) => return Err(error.into()),
        };
        if !accepted.created {
            // A repeat writes nothing else; its acceptance is still on record.
            let mut event = record::message_accepted(&message, false)
                .in_turn(accepted.turn_id, accepted.session_id);
            event.subject_id = accepted.turn_id.to_string();
            self.record_audit(&[event]).await?;
        }
        Ok(accepted)
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
                behind_others: false,
            })
        })
        .transpose()
    }
}

/// True when a concurrent request with the same idempotency key committed first.
fn is_idempotency_race(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error)
        if database_error.constraint() == Some("turns_idempotency_key"))
}

/// The statement part that finds or creates the session and takes the next sequence
/// number in it (skipped when the idempotency key matched an earlier turn), with the id
/// it binds as `$10`; a conversation also binds its key and user as `$12` and `$13`. The
/// row lock this takes orders concurrent messages to one session.
fn session_slot(target: &SessionTarget) -> (&'static str, Uuid) {
    match target {
        SessionTarget::Existing(session_id) => (
            "UPDATE sessions SET next_seq = next_seq + 1, updated_at = now() \
             WHERE id = $10 AND org_id = $2 AND NOT EXISTS (SELECT 1 FROM existing) \
             RETURNING id, next_seq - 1 AS seq, coalesce(lease_expires_at > now(), false) AS leased",
            session_id.as_uuid(),
        ),
        SessionTarget::Conversation { .. } => (
            "INSERT INTO sessions (id, org_id, channel, conversation_key, user_id, agent_id, next_seq) \
             SELECT $10, $2, $9, $12, $13, $3, 2 WHERE NOT EXISTS (SELECT 1 FROM existing) \
             ON CONFLICT (org_id, channel, conversation_key) WHERE conversation_key IS NOT NULL \
             DO UPDATE SET next_seq = sessions.next_seq + 1, updated_at = now() \
             RETURNING id, next_seq - 1 AS seq, coalesce(lease_expires_at > now(), false) AS leased",
            SessionId::new().as_uuid(),
        ),
        SessionTarget::New => (
            "INSERT INTO sessions (id, org_id, channel, agent_id, next_seq) \
             SELECT $10, $2, $9, $3, 2 WHERE NOT EXISTS (SELECT 1 FROM existing) \
             RETURNING id, next_seq - 1 AS seq, coalesce(lease_expires_at > now(), false) AS leased",
            SessionId::new().as_uuid(),
        ),
    }
}
