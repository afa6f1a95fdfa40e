//! Read models from SQLite: turns and history, scoped by org.

use chrono::{DateTime, Utc};
use sable_core::{OrgId, SessionId, TurnId};
use sqlx::SqlitePool;
use uuid::fmt::Hyphenated;

use crate::records::{TURN_COLUMNS, parse_stored};
use crate::{MessageRecord, StoreError, TurnRecord};

#[derive(sqlx::FromRow)]
struct TurnRow {
    id: Hyphenated,
    org_id: Hyphenated,
    session_id: Hyphenated,
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

impl TryFrom<TurnRow> for TurnRecord {
    type Error = StoreError;

    fn try_from(row: TurnRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.id.into_uuid().into(),
            org_id: row.org_id.into_uuid().into(),
            session_id: row.session_id.into_uuid().into(),
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
    id: Hyphenated,
    turn_id: Hyphenated,
    role: String,
    content: String,
    created_at: DateTime<Utc>,
}

/// The turn, if it exists in this org.
pub(crate) async fn turn(
    pool: &SqlitePool,
    org_id: OrgId,
    turn_id: TurnId,
) -> Result<TurnRecord, StoreError> {
    let sql = format!("SELECT {TURN_COLUMNS} FROM turns t WHERE t.id = $1 AND t.org_id = $2");
    let row: Option<TurnRow> = sqlx::query_as(&sql)
        .bind(turn_id.as_uuid().hyphenated())
        .bind(org_id.as_uuid().hyphenated())
        .fetch_optional(pool)
        .await?;
    row.ok_or(StoreError::NotFound("turn"))?.try_into()
}

/// The session's whole history in reading order.
pub(crate) async fn session_messages(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
) -> Result<Vec<MessageRecord>, StoreError> {
    ensure_session_in_org(pool, org_id, session_id).await?;
    let rows: Vec<MessageRow> = sqlx::query_as(
        "SELECT id, turn_id, role, content, created_at FROM messages \
         WHERE session_id = $1 AND org_id = $2 ORDER BY turn_seq, position",
    )
    .bind(session_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(MessageRecord {
                id: row.id.into_uuid().into(),
                turn_id: row.turn_id.into_uuid().into(),
                role: parse_stored(&row.role)?,
                content: row.content,
                created_at: row.created_at,
            })
        })
        .collect()
}

/// Turns of a session in sequence order.
pub(crate) async fn session_turns(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
) -> Result<Vec<TurnRecord>, StoreError> {
    ensure_session_in_org(pool, org_id, session_id).await?;
    let sql = format!(
        "SELECT {TURN_COLUMNS} FROM turns t WHERE t.session_id = $1 AND t.org_id = $2 ORDER BY t.seq"
    );
    let rows: Vec<TurnRow> = sqlx::query_as(&sql)
        .bind(session_id.as_uuid().hyphenated())
        .bind(org_id.as_uuid().hyphenated())
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(TurnRecord::try_from).collect()
}

async fn ensure_session_in_org(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
) -> Result<(), StoreError> {
    let found: Option<(Hyphenated,)> =
        sqlx::query_as("SELECT id FROM sessions WHERE id = $1 AND org_id = $2")
            .bind(session_id.as_uuid().hyphenated())
            .bind(org_id.as_uuid().hyphenated())
            .fetch_optional(pool)
            .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound("session"))
}
