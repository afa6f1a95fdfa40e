//! The reply outbox: deliveries written with the turn's end, sent once by a dispatcher.

use chrono::{DateTime, Utc};
use sable_core::{DeliveryId, DeliveryStatus, OrgId, SessionId, TurnId};
use uuid::Uuid;

use crate::records::parse_stored;
use crate::{PgStore, StoreError};

/// One reply in the outbox.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub org_id: OrgId,
    pub turn_id: TurnId,
    pub session_id: SessionId,
    pub channel: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub reply_text: String,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The session's user on its channel (for the delivery's trace labels).
    pub user_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    org_id: Uuid,
    turn_id: Uuid,
    session_id: Uuid,
    channel: String,
    status: String,
    attempts: i32,
    reply_text: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    user_id: Option<String>,
}

impl PgStore {
    pub async fn delivery(
        &self,
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
        .bind(delivery_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or(StoreError::NotFound("delivery"))?;
        Ok(DeliveryRecord {
            id: row.id.into(),
            org_id: row.org_id.into(),
            turn_id: row.turn_id.into(),
            session_id: row.session_id.into(),
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
    pub async fn mark_delivered(
        &self,
        org_id: OrgId,
        delivery_id: DeliveryId,
    ) -> Result<bool, StoreError> {
        let marked = sqlx::query(
            "UPDATE deliveries SET status = 'delivered', delivered_at = now(), attempts = attempts + 1 \
             WHERE id = $1 AND org_id = $2 AND status = 'pending'",
        )
        .bind(delivery_id.as_uuid())
        .bind(org_id.as_uuid())
        .execute(&self.pool)
        .await?;
        Ok(marked.rows_affected() == 1)
    }

    /// Records a failed send attempt; the delivery stays pending for the sweeper.
    pub async fn record_delivery_failure(
        &self,
        org_id: OrgId,
        delivery_id: DeliveryId,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = $3 WHERE id = $1 AND org_id = $2",
        )
        .bind(delivery_id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
