//! Provider calls recorded per turn, and the session summary written by compaction, in
//! SQLite.

use sable_core::{OrgId, TurnId};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::sessions::HistoryRow;
use super::{stored_now, stored_time};
use crate::{HistoryEntry, ProviderCallRecord, RunnableTurn, SessionSummary, StoreError};

/// Appends provider calls as they happen, so a resumed turn keeps the record.
pub(crate) async fn record_provider_calls(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    calls: &[ProviderCallRecord],
) -> Result<(), StoreError> {
    let mut tx = super::begin_write(pool).await?;
    insert_provider_calls(&mut tx, turn, calls).await?;
    let events = crate::audit::record::provider_calls(turn, calls);
    super::audit::insert_events(&mut tx, &events, &stored_now()).await?;
    tx.commit().await?;
    Ok(())
}

/// Writes the calls on `connection` (alone, or inside the caller's transaction).
pub(super) async fn insert_provider_calls(
    connection: &mut sqlx::SqliteConnection,
    turn: &RunnableTurn,
    calls: &[ProviderCallRecord],
) -> Result<(), StoreError> {
    let now = stored_now();
    for call in calls {
        sqlx::query(
            "INSERT INTO provider_calls (id, org_id, turn_id, turn_attempt, purpose, profile, provider, provider_kind, \
                 model, outcome, error_message, retry_number, failover_reason, started_at, time_to_first_token_ms, \
                 duration_ms, input_tokens, output_tokens, cached_input_tokens, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(Uuid::now_v7().hyphenated())
        .bind(turn.org_id.as_uuid().hyphenated())
        .bind(turn.id.as_uuid().hyphenated())
        .bind(call.turn_attempt)
        .bind(&call.purpose)
        .bind(&call.profile)
        .bind(&call.provider)
        .bind(&call.provider_kind)
        .bind(&call.model)
        .bind(&call.outcome)
        .bind(call.error_message.as_ref().map(|message| message.replace('\0', "")))
        .bind(call.retry_number)
        .bind(&call.failover_reason)
        .bind(stored_time(call.started_at))
        .bind(call.time_to_first_token_ms)
        .bind(call.duration_ms)
        .bind(call.input_tokens)
        .bind(call.output_tokens)
        .bind(call.cached_input_tokens)
        .bind(&now)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// The turn's provider calls in the order they started.
pub(crate) async fn provider_calls(
    pool: &SqlitePool,
    org_id: OrgId,
    turn_id: TurnId,
) -> Result<Vec<ProviderCallRecord>, StoreError> {
    // Ids are time-ordered, so they break ties of calls recorded in one batch.
    let rows = sqlx::query_as(
        "SELECT turn_attempt, purpose, profile, provider, provider_kind, model, outcome, error_message, retry_number, \
                failover_reason, started_at, time_to_first_token_ms, duration_ms, input_tokens, output_tokens, \
                cached_input_tokens \
         FROM provider_calls WHERE turn_id = $1 AND org_id = $2 ORDER BY started_at, created_at, id",
    )
    .bind(turn_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

pub(crate) async fn session_summary(
    pool: &SqlitePool,
    turn: &RunnableTurn,
) -> Result<SessionSummary, StoreError> {
    let summary: Option<(Option<String>, i64)> = sqlx::query_as(
        "SELECT summary, summary_through_seq FROM sessions WHERE id = $1 AND org_id = $2",
    )
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .fetch_optional(pool)
    .await?;
    let (text, through_seq) = summary.ok_or(StoreError::NotFound("session"))?;
    Ok(SessionSummary { text, through_seq })
}

/// User and assistant messages of turns `after_seq < seq <= through_seq`, oldest first.
pub(crate) async fn messages_between(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    after_seq: i64,
    through_seq: i64,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT role, content FROM messages \
         WHERE session_id = $1 AND org_id = $2 AND turn_seq > $3 AND turn_seq <= $4 AND role IN ('user', 'assistant') \
         ORDER BY turn_seq, position",
    )
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(after_seq)
    .bind(through_seq)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(HistoryEntry::try_from).collect()
}

/// Stores a new summary covering every turn up to `through_seq`. Messages are kept; only
/// the model's view of the session changes.
pub(crate) async fn save_summary(
    pool: &SqlitePool,
    turn: &RunnableTurn,
    summary: &str,
    through_seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET summary = $3, summary_through_seq = $4, updated_at = $5 \
         WHERE id = $1 AND org_id = $2 AND summary_through_seq < $4",
    )
    .bind(turn.session_id.as_uuid().hyphenated())
    .bind(turn.org_id.as_uuid().hyphenated())
    .bind(summary.replace('\0', ""))
    .bind(through_seq)
    .bind(stored_now())
    .execute(pool)
    .await?;
    Ok(())
}
