//! Live serving processes and pool figures for the runtime diagnostics: each gateway and
//! worker upserts a heartbeat row; the diagnostics list the rows seen recently.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{PgStore, StoreError};

/// One serving process as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RoleInstance {
    pub instance_id: String,
    pub role: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// Set by the store when the heartbeat is recorded.
    pub last_seen_at: DateTime<Utc>,
}

/// The connection pool of the process that asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl PgStore {
    pub async fn record_heartbeat(&self, instance: &RoleInstance) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO role_instances (instance_id, role, version, started_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (instance_id) DO UPDATE SET last_seen_at = now()",
        )
        .bind(&instance.instance_id)
        .bind(&instance.role)
        .bind(&instance.version)
        .bind(instance.started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn live_roles(&self, seen_within: Duration) -> Result<Vec<RoleInstance>, StoreError> {
        let millis = i64::try_from(seen_within.as_millis()).unwrap_or(i64::MAX);
        Ok(sqlx::query_as(
            "SELECT instance_id, role, version, started_at, last_seen_at FROM role_instances \
             WHERE last_seen_at > now() - make_interval(secs => $1::double precision / 1000) \
             ORDER BY role, started_at",
        )
        .bind(millis)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn pool_stats(&self) -> Result<PoolStats, StoreError> {
        Ok(PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        })
    }
}
