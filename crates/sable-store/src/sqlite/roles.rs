//! Heartbeats of live processes and pool figures, on SQLite.

use std::time::Duration;

use chrono::Utc;
use sqlx::SqlitePool;

use super::{stored_now, stored_time};
use crate::{PoolStats, RoleInstance, StoreError};

pub(crate) async fn record_heartbeat(
    pool: &SqlitePool,
    instance: &RoleInstance,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO role_instances (instance_id, role, version, started_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (instance_id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
    )
    .bind(&instance.instance_id)
    .bind(&instance.role)
    .bind(&instance.version)
    .bind(stored_time(instance.started_at))
    .bind(stored_now())
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn live_roles(
    pool: &SqlitePool,
    seen_within: Duration,
) -> Result<Vec<RoleInstance>, StoreError> {
    let since = Utc::now() - chrono::TimeDelta::from_std(seen_within).unwrap_or_default();
    Ok(sqlx::query_as(
        "SELECT instance_id, role, version, started_at, last_seen_at FROM role_instances \
         WHERE last_seen_at > $1 ORDER BY role, started_at",
    )
    .bind(stored_time(since))
    .fetch_all(pool)
    .await?)
}

pub(crate) async fn pool_stats(pool: &SqlitePool) -> Result<PoolStats, StoreError> {
    Ok(PoolStats {
        size: pool.size(),
        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        max: pool.options().get_max_connections(),
    })
}
