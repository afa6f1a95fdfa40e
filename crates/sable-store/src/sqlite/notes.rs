//! Per-user memory notes and the `session` tool's view of sessions, in SQLite.

use chrono::{DateTime, Utc};
use sable_core::{OrgId, SessionId};
use sqlx::SqlitePool;
use uuid::fmt::Hyphenated;

use super::{begin_write, stored_now};
use crate::notes::{SESSION_INFO_COLUMNS, list_sessions_sql};
use crate::{MemoryEdit, SessionFilter, SessionInfo, StoreError};

#[derive(sqlx::FromRow)]
struct SessionInfoRow {
    id: Hyphenated,
    channel: String,
    conversation_key: Option<String>,
    user_id: Option<String>,
    agent_id: String,
    turns: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<SessionInfoRow> for SessionInfo {
    fn from(row: SessionInfoRow) -> Self {
        Self {
            id: row.id.into_uuid(),
            channel: row.channel,
            conversation_key: row.conversation_key,
            user_id: row.user_id,
            agent_id: row.agent_id,
            turns: row.turns,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

pub(crate) async fn memory_note(
    pool: &SqlitePool,
    org_id: OrgId,
    user_key: &str,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT content FROM memory_notes WHERE org_id = $1 AND user_key = $2")
            .bind(org_id.as_uuid().hyphenated())
            .bind(user_key)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(content,)| content))
}

pub(crate) async fn edit_memory_note(
    pool: &SqlitePool,
    org_id: OrgId,
    user_key: &str,
    edit: MemoryEdit,
) -> Result<Option<String>, StoreError> {
    let sql = match &edit {
        MemoryEdit::Append(_) => {
            "INSERT INTO memory_notes (org_id, user_key, content, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, user_key) DO UPDATE \
             SET content = memory_notes.content || char(10) || excluded.content, updated_at = excluded.updated_at \
             RETURNING content"
        }
        MemoryEdit::Replace(_) => {
            "INSERT INTO memory_notes (org_id, user_key, content, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, user_key) DO UPDATE \
             SET content = excluded.content, updated_at = excluded.updated_at RETURNING content"
        }
        MemoryEdit::Delete => {
            sqlx::query("DELETE FROM memory_notes WHERE org_id = $1 AND user_key = $2")
                .bind(org_id.as_uuid().hyphenated())
                .bind(user_key)
                .execute(pool)
                .await?;
            return Ok(None);
        }
    };
    let (MemoryEdit::Append(text) | MemoryEdit::Replace(text)) = &edit else {
        return Ok(None);
    };
    let (content,): (String,) = sqlx::query_as(sql)
        .bind(org_id.as_uuid().hyphenated())
        .bind(user_key)
        .bind(text.replace('\0', ""))
        .bind(stored_now())
        .fetch_one(pool)
        .await?;
    Ok(Some(content))
}

pub(crate) async fn session_info(
    pool: &SqlitePool,
    org_id: OrgId,
    session_id: SessionId,
) -> Result<SessionInfo, StoreError> {
    let sql =
        format!("SELECT {SESSION_INFO_COLUMNS} FROM sessions s WHERE s.id = $1 AND s.org_id = $2");
    let row: Option<SessionInfoRow> = sqlx::query_as(&sql)
        .bind(session_id.as_uuid().hyphenated())
        .bind(org_id.as_uuid().hyphenated())
        .fetch_optional(pool)
        .await?;
    row.map(SessionInfo::from)
        .ok_or(StoreError::NotFound("session"))
}

pub(crate) async fn user_sessions(
    pool: &SqlitePool,
    org_id: OrgId,
    user_id: &str,
    limit: i64,
) -> Result<Vec<SessionInfo>, StoreError> {
    let sql = format!(
        "SELECT {SESSION_INFO_COLUMNS} FROM sessions s WHERE s.org_id = $1 AND s.user_id = $2 \
         ORDER BY s.updated_at DESC LIMIT $3"
    );
    let rows: Vec<SessionInfoRow> = sqlx::query_as(&sql)
        .bind(org_id.as_uuid().hyphenated())
        .bind(user_id)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(SessionInfo::from).collect())
}

pub(crate) async fn list_sessions(
    pool: &SqlitePool,
    org_id: OrgId,
    filter: &SessionFilter,
) -> Result<Vec<SessionInfo>, StoreError> {
    let rows: Vec<SessionInfoRow> = sqlx::query_as(&list_sessions_sql("TEXT"))
        .bind(org_id.as_uuid().hyphenated())
        .bind(filter.conversation.as_deref())
        .bind(filter.user_id.as_deref())
        .bind(filter.agent.as_deref())
        .bind(filter.channel.as_deref())
        .bind(filter.before.map(|id| id.as_uuid().hyphenated()))
        .bind(filter.limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(SessionInfo::from).collect())
}

pub(crate) async fn move_conversation(
    pool: &SqlitePool,
    org_id: OrgId,
    from: SessionId,
    to: Option<SessionId>,
) -> Result<Option<SessionId>, StoreError> {
    let now = stored_now();
    let org = org_id.as_uuid().hyphenated();
    let mut tx = begin_write(pool).await?;
    let source: Option<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT channel, conversation_key, user_id, agent_id FROM sessions WHERE id = $1 AND org_id = $2",
    )
    .bind(from.as_uuid().hyphenated())
    .bind(org)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((channel, Some(key), user_id, agent_id)) = source else {
        return Ok(None);
    };
    if to == Some(from) {
        return Ok(Some(from));
    }
    sqlx::query("UPDATE sessions SET conversation_key = NULL, updated_at = $2 WHERE id = $1")
        .bind(from.as_uuid().hyphenated())
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    let target = match to {
        Some(to) => {
            let moved = sqlx::query(
                "UPDATE sessions SET conversation_key = $3, updated_at = $6 \
                 WHERE id = $1 AND org_id = $2 AND channel = $4 AND user_id = $5",
            )
            .bind(to.as_uuid().hyphenated())
            .bind(org)
            .bind(&key)
            .bind(&channel)
            .bind(&user_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                return Ok(None);
            }
            to
        }
        None => {
            let id = SessionId::new();
            sqlx::query(
                "INSERT INTO sessions (id, org_id, channel, conversation_key, user_id, agent_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(id.as_uuid().hyphenated())
            .bind(org)
            .bind(&channel)
            .bind(&key)
            .bind(&user_id)
            .bind(&agent_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    tx.commit().await?;
    Ok(Some(target))
}
