//! The audit sealer: one gateway at a time (a store lease) chains new audit events onto
//! their orgs' hash chains, and now and then drops sealed ranges past their retention.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sable_core::OrgId;
use sable_store::Store;
use tokio_util::sync::CancellationToken;

/// How the sealer runs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// How often the leader looks for unsealed events.
    pub seal_interval: Duration,
    /// Sealed events older than this are dropped (behind a checkpoint).
    pub retention: Duration,
    /// Orgs whose retention differs.
    pub retention_per_org: HashMap<OrgId, Duration>,
    /// How often retention runs.
    pub retention_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            seal_interval: Duration::from_secs(1),
            retention: Duration::from_secs(90 * 24 * 3600),
            retention_per_org: HashMap::new(),
            retention_interval: Duration::from_secs(3600),
        }
    }
}

/// The store lease that makes one gateway the sealer.
const SEALER_LEASE: &str = "audit-sealer";
/// Events sealed per transaction, every org's: a busy second of events in one pass, and
/// a bound on what a pass holds in memory after an outage (each further pass in a tick
/// starts where the last one stopped).
const SEAL_BATCH: i64 = 5000;

/// Seals until `shutdown`, while this gateway holds the sealer's lease.
pub(crate) async fn run(store: Store, config: AuditConfig, shutdown: CancellationToken) {
    let owner = format!("gateway-{}", uuid::Uuid::new_v4());
    let lease_ttl = (config.seal_interval * 5).max(Duration::from_secs(5));
    let mut ticks = tokio::time::interval(config.seal_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retained_at: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let leader = match store.acquire_lease(SEALER_LEASE, &owner, lease_ttl).await {
            Ok(leader) => leader,
            Err(error) => {
                tracing::warn!(%error, "audit sealer cannot reach the store");
                false
            }
        };
        if !leader {
            sable_telemetry::record_audit_sealer(Duration::ZERO, false);
            continue;
        }
        seal_pending(&store).await;
        if retained_at.is_none_or(|at| at.elapsed() >= config.retention_interval) {
            apply_retention(&store, &config).await;
            retained_at = Some(Instant::now());
        }
    }
    if let Err(error) = store.release_lease(SEALER_LEASE, &owner).await {
        tracing::debug!(%error, "audit sealer lease not released; it expires");
    }
}

/// Chains batches until one comes back short.
async fn seal_pending(store: &Store) {
    let mut lag = Duration::ZERO;
    loop {
        match store.seal_audit(SEAL_BATCH).await {
            Ok(report) => {
                if let Some(oldest) = report.oldest_unsealed
                    && lag.is_zero()
                {
                    lag = (chrono::Utc::now() - oldest).to_std().unwrap_or_default();
                }
                for (action, count) in &report.actions {
                    sable_telemetry::record_audit_events(action, *count);
                }
                if report.sealed < SEAL_BATCH as u64 {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "audit sealing failed; retrying next tick");
                break;
            }
        }
    }
    sable_telemetry::record_audit_sealer(lag, true);
}

/// Drops each org's sealed events past its retention.
async fn apply_retention(store: &Store, config: &AuditConfig) {
    let orgs = match store.list_orgs().await {
        Ok(orgs) => orgs,
        Err(error) => {
            tracing::warn!(%error, "audit retention cannot list orgs");
            return;
        }
    };
    for org in orgs {
        let keep = config
            .retention_per_org
            .get(&org.id)
            .copied()
            .unwrap_or(config.retention);
        let Some(before) = chrono::TimeDelta::from_std(keep)
            .ok()
            .and_then(|keep| chrono::Utc::now().checked_sub_signed(keep))
        else {
            continue;
        };
        match store.drop_sealed_audit(org.id, before).await {
            Ok(0) => {}
            Ok(dropped) => {
                tracing::info!(org_id = %org.id, dropped, "audit retention dropped sealed events")
            }
            Err(error) => tracing::warn!(org_id = %org.id, %error, "audit retention failed"),
        }
    }
}
