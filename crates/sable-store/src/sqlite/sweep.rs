//! Finding work whose wake-up was lost, in SQLite: live turns of sessions nobody holds,
//! and pending deliveries, left alone longer than a threshold. Each row found is stamped
//! so the next sweep leaves it alone for another threshold.

use std::time::Duration;

use chrono::Utc;
use sqlx::SqlitePool;
use uuid::fmt::Hyphenated;

use super::{earlier_by, stored_time};
use crate::{StaleDelivery, StaleWakeup, StoreError};

#[derive(sqlx::FromRow)]
pub(super) struct StaleTurnRow {
    id: Hyphenated,
    org_id: Hyphenated,
    session_id: Hyphenated,
}

#[derive(sqlx::FromRow)]
struct StaleDeliveryRow {
    id: Hyphenated,
    org_id: Hyphenated,
    channel: String,
}

/// Queued or running turns older than `older_than` whose session lease is free or
/// expired: their wake-up was lost or their worker died. One statement, so no other
/// writer runs between finding the rows and stamping them.
pub(crate) async fn claim_stale_turns(
    pool: &SqlitePool,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<StaleWakeup>, StoreError> {
    let now = Utc::now();
    let rows: Vec<StaleTurnRow> = sqlx::query_as(
        "UPDATE turns SET wakeup_at = $1 WHERE id IN ( \
             SELECT t.id FROM turns t JOIN sessions s ON s.id = t.session_id \
             WHERE t.status IN ('queued', 'running') \
               AND NOT EXISTS (SELECT 1 FROM turns w WHERE w.session_id = t.session_id AND w.status = 'waiting_approval' AND w.seq < t.seq) \
               AND t.wakeup_at < $2 \
               AND (s.lease_expires_at IS NULL OR s.lease_expires_at < $1) \
             ORDER BY t.wakeup_at LIMIT $3) \
         RETURNING id, org_id, session_id",
    )
    .bind(stored_time(now))
    .bind(stored_time(earlier_by(now, older_than)))
    .bind(limit.max(0))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StaleWakeup::from).collect())
}

impl From<StaleTurnRow> for StaleWakeup {
    fn from(row: StaleTurnRow) -> Self {
        Self {
            id: row.id.into_uuid(),
            org_id: row.org_id.into_uuid(),
            session_id: row.session_id.into_uuid(),
        }
    }
}

/// Pending deliveries whose wake-up is older than `older_than`.
pub(crate) async fn claim_stale_deliveries(
    pool: &SqlitePool,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<StaleDelivery>, StoreError> {
    let now = Utc::now();
    let rows: Vec<StaleDeliveryRow> = sqlx::query_as(
        "UPDATE deliveries SET wakeup_at = $1 WHERE id IN ( \
             SELECT id FROM deliveries WHERE status = 'pending' AND wakeup_at < $2 \
             ORDER BY wakeup_at LIMIT $3) \
         RETURNING id, org_id, channel",
    )
    .bind(stored_time(now))
    .bind(stored_time(earlier_by(now, older_than)))
    .bind(limit.max(0))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| StaleDelivery {
            id: row.id.into_uuid(),
            org_id: row.org_id.into_uuid(),
            channel: row.channel,
        })
        .collect())
}
