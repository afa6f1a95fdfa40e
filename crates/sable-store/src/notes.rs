//! What the builtin `memory` and `session` tools keep and read: per-user notes, and the
//! sessions of a user with the conversation each is bound to.

use chrono::{DateTime, Utc};
use sable_core::{OrgId, SessionId};
use uuid::Uuid;

use crate::{PgStore, StoreError};

/// A change to a user's notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryEdit {
    /// Adds a line at the end.
    Append(String),
    Replace(String),
    Delete,
}

/// A session as the `session` tool shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: Uuid,
    pub channel: String,
    pub conversation_key: Option<String>,
    pub user_id: Option<String>,
    pub agent_id: String,
    pub turns: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which sessions `list_sessions` returns: every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub conversation: Option<String>,
    pub user_id: Option<String>,
    pub agent: Option<String>,
    pub channel: Option<String>,
    /// Only sessions older than this one (the previous page's last id).
    pub before: Option<SessionId>,
    pub limit: i64,
}

/// The listing query of both backends; `id_type` is how a bound id compares with
/// `sessions.id` (`uuid` in Postgres, `TEXT` in SQLite).
pub(crate) fn list_sessions_sql(id_type: &str) -> String {
    format!(
        "SELECT {SESSION_INFO_COLUMNS} FROM sessions s WHERE s.org_id = $1 \
         AND (CAST($2 AS TEXT) IS NULL OR s.conversation_key = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR s.user_id = $3) \
         AND (CAST($4 AS TEXT) IS NULL OR s.agent_id = $4) \
         AND (CAST($5 AS TEXT) IS NULL OR s.channel = $5) \
         AND (CAST($6 AS {id_type}) IS NULL OR s.id < CAST($6 AS {id_type})) \
         ORDER BY s.id DESC LIMIT $7"
    )
}

pub(crate) const SESSION_INFO_COLUMNS: &str = "s.id, s.channel, s.conversation_key, s.user_id, s.agent_id, \
     s.next_seq - 1 AS turns, s.created_at, s.updated_at";

impl PgStore {
    pub async fn memory_note(
        &self,
        org_id: OrgId,
        user_key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT content FROM memory_notes WHERE org_id = $1 AND user_key = $2")
                .bind(org_id.as_uuid())
                .bind(user_key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(content,)| content))
    }

    /// Applies the edit and returns the notes after it (`None` once deleted).
    pub async fn edit_memory_note(
        &self,
        org_id: OrgId,
        user_key: &str,
        edit: MemoryEdit,
    ) -> Result<Option<String>, StoreError> {
        let (sql, text) = match &edit {
            MemoryEdit::Append(text) => (
                "INSERT INTO memory_notes (org_id, user_key, content) VALUES ($1, $2, $3) \
                 ON CONFLICT (org_id, user_key) DO UPDATE \
                 SET content = memory_notes.content || E'\\n' || EXCLUDED.content, updated_at = now() \
                 RETURNING content",
                text,
            ),
            MemoryEdit::Replace(text) => (
                "INSERT INTO memory_notes (org_id, user_key, content) VALUES ($1, $2, $3) \
                 ON CONFLICT (org_id, user_key) DO UPDATE SET content = EXCLUDED.content, updated_at = now() \
                 RETURNING content",
                text,
            ),
            MemoryEdit::Delete => {
                sqlx::query("DELETE FROM memory_notes WHERE org_id = $1 AND user_key = $2")
                    .bind(org_id.as_uuid())
                    .bind(user_key)
                    .execute(&self.pool)
                    .await?;
                return Ok(None);
            }
        };
        let (content,): (String,) = sqlx::query_as(sql)
            .bind(org_id.as_uuid())
            .bind(user_key)
            .bind(text.replace('\0', ""))
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(content))
    }

    pub async fn session_info(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<SessionInfo, StoreError> {
        let sql = format!(
            "SELECT {SESSION_INFO_COLUMNS} FROM sessions s WHERE s.id = $1 AND s.org_id = $2"
        );
        sqlx::query_as(&sql)
            .bind(session_id.as_uuid())
            .bind(org_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("session"))
    }

    /// The user's sessions, most recently active first.
    pub async fn user_sessions(
        &self,
        org_id: OrgId,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let sql = format!(
            "SELECT {SESSION_INFO_COLUMNS} FROM sessions s WHERE s.org_id = $1 AND s.user_id = $2 \
             ORDER BY s.updated_at DESC LIMIT $3"
        );
        Ok(sqlx::query_as(&sql)
            .bind(org_id.as_uuid())
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn list_sessions(
        &self,
        org_id: OrgId,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        // An API read: row-level security holds it to the org whatever the SQL says.
        let mut scoped = self.scoped(org_id).await?;
        let sessions = sqlx::query_as(&list_sessions_sql("uuid"))
            .bind(org_id.as_uuid())
            .bind(filter.conversation.as_deref())
            .bind(filter.user_id.as_deref())
            .bind(filter.agent.as_deref())
            .bind(filter.channel.as_deref())
            .bind(filter.before.map(|id| id.as_uuid()))
            .bind(filter.limit)
            .fetch_all(&mut *scoped)
            .await?;
        scoped.commit().await?;
        Ok(sessions)
    }

    /// Moves the conversation `from` is bound to onto `to` (one of the same user's
    /// sessions on the same channel), or onto a new session when `to` is `None`; the next
    /// message of the conversation goes there. Returns the session now bound, or `None`
    /// when `from` is bound to no conversation or `to` is not the same named user's (a
    /// session without a user can only start a new session, never take over another).
    pub async fn move_conversation(
        &self,
        org_id: OrgId,
        from: SessionId,
        to: Option<SessionId>,
    ) -> Result<Option<SessionId>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let source: Option<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
            "SELECT channel, conversation_key, user_id, agent_id FROM sessions WHERE id = $1 AND org_id = $2 FOR UPDATE",
        )
        .bind(from.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((channel, Some(key), user_id, agent_id)) = source else {
            return Ok(None);
        };
        if to == Some(from) {
            return Ok(Some(from));
        }
        sqlx::query(
            "UPDATE sessions SET conversation_key = NULL, updated_at = now() WHERE id = $1",
        )
        .bind(from.as_uuid())
        .execute(&mut *tx)
        .await?;
        let target = match to {
            Some(to) => {
                let moved = sqlx::query(
                    "UPDATE sessions SET conversation_key = $3, updated_at = now() \
                     WHERE id = $1 AND org_id = $2 AND channel = $4 AND user_id = $5",
                )
                .bind(to.as_uuid())
                .bind(org_id.as_uuid())
                .bind(&key)
                .bind(&channel)
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                to
            }
            None => {
                let id = SessionId::new();
                sqlx::query(
                    "INSERT INTO sessions (id, org_id, channel, conversation_key, user_id, agent_id) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id.as_uuid())
                .bind(org_id.as_uuid())
                .bind(&channel)
                .bind(&key)
                .bind(&user_id)
                .bind(&agent_id)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(Some(target))
    }
}
