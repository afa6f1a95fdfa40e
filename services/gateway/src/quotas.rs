//! Per-org quotas at intake: the gateway's short-lived copy of every org's limits, and
//! the checks a message passes before it becomes a turn.
//!
//! An org without intake limits costs one map lookup: the copy is the whole quota table
//! (only orgs that have quotas have rows), refreshed when its version changes, checked at
//! most once per `quota_cache` by whichever request finds it stale. Limited orgs are
//! checked against shared state in the database (the requests-per-minute counter, their
//! live turns, their consumed tokens), so every gateway enforces the same limits. A
//! refusal is remembered here until it can change (the minute's end; a short recheck for
//! concurrent turns; the cached token count), so an org flooding past its limit costs
//! the database nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use sable_core::OrgId;
use sable_store::{
    OrgQuotas, OrgUsage, Quota, QuotaExceeded, QuotaVersion, Store, next_day_and_month,
    seconds_until,
};

/// How long a `concurrent_turns` refusal is reused before the live turns are counted
/// again (its `Retry-After` is one second).
const CONCURRENCY_RECHECK: Duration = Duration::from_millis(100);

/// What a `concurrent_turns` refusal asks the caller to wait, in seconds.
const CONCURRENCY_RETRY_SECS: u64 = 1;

/// The gateway's view of every org's quotas.
pub(crate) struct QuotaGuard {
    store: Store,
    cache_for: Duration,
    started: Instant,
    /// Milliseconds after `started` of the last version check (`u64::MAX`: never).
    checked_at: AtomicU64,
    refreshing: tokio::sync::Mutex<QuotaVersion>,
    limits: RwLock<Arc<HashMap<OrgId, OrgQuotas>>>,
    /// Per limited org: refusals that still hold and its cached token usage.
    memo: Mutex<HashMap<OrgId, Memo>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Memo {
    /// The quotas the memo was made under; a change of limits forgets it.
    under: OrgQuotas,
    refused: Option<(QuotaExceeded, Instant)>,
    tokens: Option<(OrgUsage, Instant)>,
}

impl QuotaGuard {
    pub(crate) fn new(store: Store, cache_for: Duration) -> Self {
        Self {
            store,
            cache_for,
            started: Instant::now(),
            checked_at: AtomicU64::new(u64::MAX),
            refreshing: tokio::sync::Mutex::new(QuotaVersion::default()),
            limits: RwLock::default(),
            memo: Mutex::default(),
        }
    }

    /// The org's limits as this gateway knows them (at most `quota_cache` old).
    pub(crate) async fn limits_of(&self, org_id: OrgId) -> OrgQuotas {
        self.refresh_if_stale().await;
        self.cached(org_id)
    }

    fn cached(&self, org_id: OrgId) -> OrgQuotas {
        let limits = self
            .limits
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        limits.get(&org_id).copied().unwrap_or_default()
    }

    /// Records limits this gateway just wrote, so its next request sees them at once.
    pub(crate) fn remember(&self, org_id: OrgId, quotas: OrgQuotas) {
        let mut limits = self
            .limits
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut updated = HashMap::clone(&limits);
        updated.insert(org_id, quotas);
        *limits = Arc::new(updated);
    }

    async fn refresh_if_stale(&self) {
        let checked = self.checked_at.load(Ordering::Relaxed);
        let now = self.elapsed_ms();
        let fresh = checked != u64::MAX
            && now.saturating_sub(checked)
                < u64::try_from(self.cache_for.as_millis()).unwrap_or(u64::MAX);
        if fresh {
            return;
        }
        // The first request ever waits for the table; later ones use the old copy while
        // one of them refreshes it.
        let mut known = if checked == u64::MAX {
            self.refreshing.lock().await
        } else {
            match self.refreshing.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            }
        };
        if self.checked_at.load(Ordering::Relaxed) != checked {
            return;
        }
        match self.reload(*known).await {
            Ok(version) => *known = version,
            Err(error) => {
                tracing::warn!(%error, "the quota table could not be read; using the last copy");
            }
        }
        self.checked_at.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    async fn reload(&self, known: QuotaVersion) -> Result<QuotaVersion, sable_store::StoreError> {
        let version = self.store.quota_version().await?;
        if version == known && self.checked_at.load(Ordering::Relaxed) != u64::MAX {
            return Ok(version);
        }
        let table = self.store.quota_table().await?;
        let limits: HashMap<OrgId, OrgQuotas> = table.orgs.into_iter().collect();
        *self
            .limits
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(limits);
        Ok(table.version)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Whether the org may have one more message accepted now; counts it against its
    /// requests-per-minute quota when it may. Nothing is asked of the database for an
    /// org without intake limits.
    pub(crate) async fn admit(&self, org_id: OrgId) -> Result<(), QuotaExceeded> {
        let quotas = self.limits_of(org_id).await;
        if quotas.intake_unlimited() {
            return Ok(());
        }
        if let Some(refused) = self.remembered_refusal(org_id, &quotas) {
            return Err(rejected(refused));
        }
        match self.check(org_id, &quotas).await {
            Ok(()) => Ok(()),
            Err(Refusal::Quota(refused, holds_for)) => {
                self.remember_refusal(org_id, &quotas, refused, holds_for);
                Err(rejected(refused))
            }
            Err(Refusal::Unknown(error)) => {
                // The intake's own statement will meet the same database: let it decide.
                tracing::warn!(%error, %org_id, "quota usage could not be read; admitting");
                Ok(())
            }
        }
    }

    async fn check(&self, org_id: OrgId, quotas: &OrgQuotas) -> Result<(), Refusal> {
        if let Some(limit) = quotas.concurrent_turns {
            let live = self.store.live_turns(org_id).await?;
            if live >= limit {
                let refused = exceeded(Quota::ConcurrentTurns, limit, CONCURRENCY_RETRY_SECS);
                return Err(Refusal::Quota(refused, CONCURRENCY_RECHECK));
            }
        }
        if quotas.tokens_per_day.is_some() || quotas.tokens_per_month.is_some() {
            self.check_tokens(org_id, quotas).await?;
        }
        if let Some(limit) = quotas.requests_per_minute {
            let window = self.store.take_request(org_id, limit).await?;
            if !window.admitted {
                let wait = (window.window_end() - window.now)
                    .to_std()
                    .unwrap_or_default();
                let refused = exceeded(
                    Quota::RequestsPerMinute,
                    limit,
                    seconds_until(window.now, window.window_end()),
                );
                return Err(Refusal::Quota(refused, wait));
            }
        }
        Ok(())
    }

    /// Refuses once the org's provider calls consumed its day's or month's tokens (read
    /// at most once per `quota_cache`).
    async fn check_tokens(&self, org_id: OrgId, quotas: &OrgQuotas) -> Result<(), Refusal> {
        let usage = match self.cached_tokens(org_id, quotas) {
            Some(usage) => usage,
            None => {
                let usage = self.store.org_usage(org_id).await?;
                let mut memo = self
                    .memo
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                let entry = memo_of(&mut memo, org_id, quotas);
                entry.tokens = Some((usage, Instant::now()));
                usage
            }
        };
        let now = Utc::now().max(usage.now);
        let (next_day, next_month) = next_day_and_month(now);
        let checks = [
            (
                Quota::TokensPerDay,
                quotas.tokens_per_day,
                usage.tokens_today,
                next_day,
            ),
            (
                Quota::TokensPerMonth,
                quotas.tokens_per_month,
                usage.tokens_this_month,
                next_month,
            ),
        ];
        for (quota, limit, used, resets_at) in checks {
            if let Some(limit) = limit.filter(|limit| used >= *limit) {
                let refused = exceeded(quota, limit, seconds_until(now, resets_at));
                return Err(Refusal::Quota(refused, self.cache_for));
            }
        }
        Ok(())
    }

    fn cached_tokens(&self, org_id: OrgId, quotas: &OrgQuotas) -> Option<OrgUsage> {
        let memo = self
            .memo
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = memo.get(&org_id).filter(|entry| entry.under == *quotas)?;
        let (usage, read_at) = entry.tokens?;
        (read_at.elapsed() < self.cache_for).then_some(usage)
    }

    fn remembered_refusal(&self, org_id: OrgId, quotas: &OrgQuotas) -> Option<QuotaExceeded> {
        let memo = self
            .memo
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = memo.get(&org_id).filter(|entry| entry.under == *quotas)?;
        let (refused, until) = entry.refused?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(QuotaExceeded {
            retry_after_secs: refused.retry_after_secs.min(left.as_secs() + 1).max(1),
            ..refused
        })
    }

    fn remember_refusal(
        &self,
        org_id: OrgId,
        quotas: &OrgQuotas,
        refused: QuotaExceeded,
        holds_for: Duration,
    ) {
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = memo_of(&mut memo, org_id, quotas);
        entry.refused = Some((refused, Instant::now() + holds_for));
    }
}

/// The org's memo, forgotten first when its limits changed since it was made.
fn memo_of<'memo>(
    memo: &'memo mut HashMap<OrgId, Memo>,
    org_id: OrgId,
    quotas: &OrgQuotas,
) -> &'memo mut Memo {
    let entry = memo.entry(org_id).or_default();
    if entry.under != *quotas {
        *entry = Memo {
            under: *quotas,
            ..Memo::default()
        };
    }
    entry
}

enum Refusal {
    /// Refused, and the verdict holds this long.
    Quota(QuotaExceeded, Duration),
    Unknown(sable_store::StoreError),
}

impl From<sable_store::StoreError> for Refusal {
    fn from(error: sable_store::StoreError) -> Self {
        Self::Unknown(error)
    }
}

fn exceeded(quota: Quota, limit: i64, retry_after_secs: u64) -> QuotaExceeded {
    QuotaExceeded {
        quota,
        limit,
        retry_after_secs,
    }
}

/// Counts the refusal (`sable_quota_rejections_total{quota}`) and passes it on.
pub(crate) fn rejected(refused: QuotaExceeded) -> QuotaExceeded {
    metrics::counter!("sable_quota_rejections_total", "quota" => refused.quota.as_str())
        .increment(1);
    refused
}
