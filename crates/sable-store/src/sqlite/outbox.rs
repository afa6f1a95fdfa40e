//! The reply outbox in SQLite: deliveries written with the turn's end, sent once.

use chrono::{DateTime, Utc};
use sable_core::{DeliveryId, OrgId};
use sqlx::SqlitePool;
use uuid::fmt::Hyphenated;

use super::stored_now;
use crate::records::parse_stored;
use crate::{DeliveryRecord, StoreError};

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Hyphenated,
    org_id: Hyphenated,
    turn_id: Hyphenated,
    session_id: Hyphenated,
    channel: String,
    status: String,
    attempts: i32,
    reply_text: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    user_id: Option<String>,
}

pub(crate) async fn delivery(
    pool: &SqlitePool,
    org_id: OrgId,
    delivery_id: DeliveryId,
) -> Result<DeliveryRecord, StoreError> {
    let row: Option<DeliveryRow> = sqlx::query_as(
        "SELECT d.id, d.org_id, d.turn_id, d.session_id, d.channel, d.status, d.attempts, \
                (SELECT m.content FROM messages m WHERE m.turn_id = d.turn_id AND m.position > 0 \
                 ORDER BY m.position DESC LIMIT 1) AS reply_text, d.delivered_at, \
                    (SELECT s.user_id FROM sessions s WHERE s.id = d.session_id) AS user_id \
         FROM deliveries d WHERE d.id = $1 AND d.org_id = $2",
    )
    .bind(delivery_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_optional(pool)
    .await?;
    let row = row.ok_or(StoreError::NotFound("delivery"))?;
    Ok(DeliveryRecord {
        id: row.id.into_uuid().into(),
        org_id: row.org_id.into_uuid().into(),
        turn_id: row.turn_id.into_uuid().into(),
        session_id: row.session_id.into_uuid().into(),
        channel: row.channel,
        status: parse_stored(&row.status)?,
        attempts: row.attempts,
        reply_text: row.reply_text.unwrap_or_default(),
        delivered_at: row.delivered_at,
        user_id: row.user_id,
    })
}

/// Records a successful send. False when it was already recorded (a redelivered
/// wake-up), so the caller knows not to count it twice.
pub(crate) async fn mark_delivered(
    pool: &SqlitePool,
    org_id: OrgId,
    delivery_id: DeliveryId,
) -> Result<bool, StoreError> {
    let marked = sqlx::query(
        "UPDATE deliveries SET status = 'delivered', delivered_at = $3, attempts = attempts + 1 \
         WHERE id = $1 AND org_id = $2 AND status = 'pending'",
    )
    .bind(delivery_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(stored_now())
    .execute(pool)
    .await?;
    Ok(marked.rows_affected() == 1)
}

/// Records a failed send attempt; the delivery stays pending for the sweeper.
pub(crate) async fn record_delivery_failure(
    pool: &SqlitePool,
    org_id: OrgId,
    delivery_id: DeliveryId,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE deliveries SET attempts = attempts + 1, last_error = $3 WHERE id = $1 AND org_id = $2",
    )
    .bind(delivery_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
