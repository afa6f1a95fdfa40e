//! Read models returned to callers: turns and history, scoped by org.

use chrono::{DateTime, Utc};
use sable_core::{MessageId, MessageRole, OrgId, SessionId, TurnId, TurnStatus};
use uuid::Uuid;

use crate::{PgStore, StoreError};

/// A turn as the API shows it, with its reply when it has one.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub id: TurnId,
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub seq: i64,
    pub agent_id: String,
    pub status: TurnStatus,
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub model_profile: Option<String>,
    pub route_reason: Option<String>,
    /// The binding rule that chose the agent.
    pub binding_rule: Option<String>,
    pub reply_text: Option<String>,
    pub trace_parent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One entry of a session's history, in the order the session reads.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: MessageId,
    pub turn_id: TurnId,
    pub role: MessageRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

/// What the model is shown of an earlier exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub role: MessageRole,
    pub content: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TurnRow {
    id: Uuid,
    org_id: Uuid,
    session_id: Uuid,
    seq: i64,
    agent_id: String,
    status: String,
    attempt: i32,
    worker_id: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cached_input_tokens: Option<i64>,
    model_profile: Option<String>,
    route_reason: Option<String>,
    binding_rule: Option<String>,
    reply_text: Option<String>,
    trace_parent: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

pub(crate) const TURN_COLUMNS: &str = "t.id, t.org_id, t.session_id, t.seq, t.agent_id, t.status, \
     t.attempt, t.worker_id, t.error_code, t.error_message, t.input_tokens, t.output_tokens, \
     t.cached_input_tokens, t.model_profile, t.route_reason, t.binding_rule, \
     (SELECT m.content FROM messages m WHERE m.turn_id = t.id AND m.position > 0 \
      ORDER BY m.position DESC LIMIT 1) AS reply_text, \
     t.trace_parent, t.created_at, t.started_at, t.finished_at";

impl TryFrom<TurnRow> for TurnRecord {
    type Error = StoreError;

    fn try_from(row: TurnRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id.into(),
            org_id: row.org_id.into(),
            session_id: row.session_id.into(),
            seq: row.seq,
            agent_id: row.agent_id,
            status: parse_stored(&row.status)?,
            attempt: row.attempt,
            worker_id: row.worker_id,
            error_code: row.error_code,
            error_message: row.error_message,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cached_input_tokens: row.cached_input_tokens,
            model_profile: row.model_profile,
            route_reason: row.route_reason,
            binding_rule: row.binding_rule,
            reply_text: row.reply_text,
            trace_parent: row.trace_parent,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    turn_id: Uuid,
    role: String,
    content: String,
    created_at: DateTime<Utc>,
}

/// Parses a status column; a value the code does not know means a broken schema.
pub(crate) fn parse_stored<T: std::str::FromStr>(text: &str) -> Result<T, StoreError>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse()
        .map_err(|error: T::Err| StoreError::Database(sqlx::Error::Decode(Box::new(error))))
}

impl PgStore {
    /// The turn, if it exists in this org.
    pub async fn turn(&self, org_id: OrgId, turn_id: TurnId) -> Result<TurnRecord, StoreError> {
        let sql = format!("SELECT {TURN_COLUMNS} FROM turns t WHERE t.id = $1 AND t.org_id = $2");
        let row: Option<TurnRow> = sqlx::query_as(&sql)
            .bind(turn_id.as_uuid())
            .bind(org_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.ok_or(StoreError::NotFound("turn"))?.try_into()
    }

    /// The session's whole history in reading order.
    pub async fn session_messages(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.ensure_session_in_org(org_id, session_id).await?;
        // An API read: row-level security holds it to the org whatever the SQL says.
        let mut scoped = self.scoped(org_id).await?;
        let rows: Vec<MessageRow> = sqlx::query_as(
            "SELECT id, turn_id, role, content, created_at FROM messages \
             WHERE session_id = $1 AND org_id = $2 ORDER BY turn_seq, position",
        )
        .bind(session_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_all(&mut *scoped)
        .await?;
        scoped.commit().await?;
        rows.into_iter()
            .map(|row| {
                Ok(MessageRecord {
                    id: row.id.into(),
                    turn_id: row.turn_id.into(),
                    role: parse_stored(&row.role)?,
                    content: row.content,
                    created_at: row.created_at,
                })
            })
            .collect()
    }

    /// Turns of a session in sequence order.
    pub async fn session_turns(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        self.ensure_session_in_org(org_id, session_id).await?;
        let sql = format!(
            "SELECT {TURN_COLUMNS} FROM turns t WHERE t.session_id = $1 AND t.org_id = $2 ORDER BY t.seq"
        );
        let rows: Vec<TurnRow> = sqlx::query_as(&sql)
            .bind(session_id.as_uuid())
            .bind(org_id.as_uuid())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TurnRecord::try_from).collect()
    }

    async fn ensure_session_in_org(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<(), StoreError> {
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM sessions WHERE id = $1 AND org_id = $2")
                .bind(session_id.as_uuid())
                .bind(org_id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        found.map(|_| ()).ok_or(StoreError::NotFound("session"))
    }
}
