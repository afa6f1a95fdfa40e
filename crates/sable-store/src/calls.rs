//! Provider calls recorded per turn, and the session summary written by compaction.

use chrono::{DateTime, Utc};
use sable_core::{OrgId, TurnId};

use crate::audit::{pg_insert_events, record};
use crate::records::parse_stored;
use crate::sessions::provider_calls_json;
use crate::{HistoryEntry, PgStore, RunnableTurn, StoreError};

/// One provider call of a turn.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ProviderCallRecord {
    pub turn_attempt: i32,
    pub purpose: String,
    pub profile: String,
    pub provider: String,
    pub provider_kind: String,
    pub model: String,
    pub outcome: String,
    pub error_message: Option<String>,
    pub retry_number: i32,
    pub failover_reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub time_to_first_token_ms: Option<i64>,
    pub duration_ms: i64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
}

/// A session's compacted past: a summary of every message up to `through_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionSummary {
    pub text: Option<String>,
    pub through_seq: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    role: String,
    content: String,
}

impl PgStore {
    /// Appends provider calls as they happen, so a resumed turn keeps the record.
    pub async fn record_provider_calls(
        &self,
        turn: &RunnableTurn,
        calls: &[ProviderCallRecord],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "WITH calls AS ({}), audit AS ({}) SELECT 1",
            pg_insert_provider_calls("$1", "$2", "$3", None),
            pg_insert_events("$4", None, &[]),
        );
        sqlx::query(&sql)
            .bind(turn.org_id.as_uuid())
            .bind(turn.id.as_uuid())
            .bind(provider_calls_json(calls))
            .bind(self.audit_json(&record::provider_calls(turn, calls)))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The turn's provider calls in the order they started.
    pub async fn provider_calls(
        &self,
        org_id: OrgId,
        turn_id: TurnId,
    ) -> Result<Vec<ProviderCallRecord>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT turn_attempt, purpose, profile, provider, provider_kind, model, outcome, error_message, retry_number, \
                    failover_reason, started_at, time_to_first_token_ms, duration_ms, input_tokens, output_tokens, \
                    cached_input_tokens \
             FROM provider_calls WHERE turn_id = $1 AND org_id = $2 ORDER BY started_at, created_at",
        )
        .bind(turn_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn session_summary(&self, turn: &RunnableTurn) -> Result<SessionSummary, StoreError> {
        let (text, through_seq): (Option<String>, i64) = sqlx::query_as(
            "SELECT summary, summary_through_seq FROM sessions WHERE id = $1 AND org_id = $2",
        )
        .bind(turn.session_id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .fetch_one(&self.pool)
        .await?;
        Ok(SessionSummary { text, through_seq })
    }

    /// User and assistant messages of turns `after_seq < seq <= through_seq`, oldest first.
    pub async fn messages_between(
        &self,
        turn: &RunnableTurn,
        after_seq: i64,
        through_seq: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows: Vec<HistoryRow> = sqlx::query_as(
            "SELECT role, content FROM messages \
             WHERE session_id = $1 AND org_id = $2 AND turn_seq > $3 AND turn_seq <= $4 AND role IN ('user', 'assistant') \
             ORDER BY turn_seq, position",
        )
        .bind(turn.session_id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(after_seq)
        .bind(through_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(HistoryEntry {
                    role: parse_stored(&row.role)?,
                    content: row.content,
                })
            })
            .collect()
    }

    /// Stores a new summary covering every turn up to `through_seq`. Messages are kept;
    /// only the model's view of the session changes.
    pub async fn save_summary(
        &self,
        turn: &RunnableTurn,
        summary: &str,
        through_seq: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET summary = $3, summary_through_seq = $4, updated_at = now() \
             WHERE id = $1 AND org_id = $2 AND summary_through_seq < $4",
        )
        .bind(turn.session_id.as_uuid())
        .bind(turn.org_id.as_uuid())
        .bind(summary.replace('\0', ""))
        .bind(through_seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A Postgres statement part inserting the provider calls of the JSON array bound as
/// `param` (see `provider_calls_json`) for the org and turn bound as `org` and `turn`, once
/// per row of `gate` when one is given.
pub(crate) fn pg_insert_provider_calls(
    org: &str,
    turn: &str,
    param: &str,
    gate: Option<&str>,
) -> String {
    let from = gate.map(|gate| format!("{gate}, ")).unwrap_or_default();
    format!(
        "INSERT INTO provider_calls (id, org_id, turn_id, turn_attempt, purpose, profile, provider, provider_kind, \
             model, outcome, error_message, retry_number, failover_reason, started_at, time_to_first_token_ms, \
             duration_ms, input_tokens, output_tokens, cached_input_tokens) \
         SELECT c.id, {org}, {turn}, c.turn_attempt, c.purpose, c.profile, c.provider, c.provider_kind, \
             c.model, c.outcome, c.error_message, c.retry_number, c.failover_reason, c.started_at, \
             c.time_to_first_token_ms, c.duration_ms, c.input_tokens, c.output_tokens, c.cached_input_tokens \
         FROM {from}json_to_recordset({param}::json) AS c(id uuid, turn_attempt integer, purpose text, profile text, \
             provider text, provider_kind text, model text, outcome text, error_message text, \
             retry_number integer, failover_reason text, started_at timestamptz, \
             time_to_first_token_ms bigint, duration_ms bigint, input_tokens bigint, output_tokens bigint, \
             cached_input_tokens bigint)"
    )
}
