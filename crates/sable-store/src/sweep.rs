//! Finding work whose wake-up was lost: live turns of sessions nobody holds, and pending
//! deliveries, left alone longer than a threshold. Each row found is stamped so that
//! concurrent sweepers (one per worker or gateway) split the work instead of repeating it.

use std::time::Duration;

use uuid::Uuid;

use crate::{PgStore, StoreError};

/// A row whose wake-up should be published again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct StaleWakeup {
    pub id: Uuid,
    pub org_id: Uuid,
    pub session_id: Uuid,
}

/// A pending delivery whose wake-up should be published again.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StaleDelivery {
    pub id: Uuid,
    pub org_id: Uuid,
    pub channel: String,
}

impl PgStore {
    /// Queued or running turns older than `older_than` whose session lease is free or
    /// expired: their wake-up was lost or their worker died.
    pub async fn claim_stale_turns(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<StaleWakeup>, StoreError> {
        let rows = sqlx::query_as(
            "UPDATE turns SET wakeup_at = now() WHERE id IN ( \
                 SELECT t.id FROM turns t JOIN sessions s ON s.id = t.session_id \
                 WHERE t.status IN ('queued', 'running') \
               AND NOT EXISTS (SELECT 1 FROM turns w WHERE w.session_id = t.session_id AND w.status = 'waiting_approval' AND w.seq < t.seq) \
                   AND t.wakeup_at < now() - make_interval(secs => $1) \
                   AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now()) \
                 ORDER BY t.wakeup_at LIMIT $2 FOR UPDATE OF t SKIP LOCKED) \
             RETURNING id, org_id, session_id",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Pending deliveries whose wake-up is older than `older_than`.
    pub async fn claim_stale_deliveries(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<StaleDelivery>, StoreError> {
        let rows = sqlx::query_as(
            "UPDATE deliveries SET wakeup_at = now() WHERE id IN ( \
                 SELECT id FROM deliveries WHERE status = 'pending' \
                   AND wakeup_at < now() - make_interval(secs => $1) \
                 ORDER BY wakeup_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id, org_id, channel",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
