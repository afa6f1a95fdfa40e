//! Bearer API keys: every `/v1` route takes an [`Authenticated`] caller.
//!
//! Keys found valid are remembered, so a request costs no database round trip. While the
//! gateway's change feed (`sable_runtime::ChangeFeed`, the deployment's change count
//! polled every second) confirms that no key changed since a key was read, the key is
//! kept for up to [`AUTH_CACHE_MAX_AGE`]; once the feed sees any change, every key read
//! before it is read again. A key revoked elsewhere so stops working within about a
//! second, and at most [`AUTH_CACHE_TTL`] when the feed cannot poll (on the gateway that
//! revoked it, at once). With thousands of orgs each key comes back less often than any
//! short time limit, and a time limit alone would cost a read per turn. Unknown keys are
//! never remembered.
//!
//! A key's last use is recorded at most once a minute per key, and the uses of every key
//! seen within [`KEY_USE_BATCH`] go to the store in one statement ([`KeyUses`]): with
//! many orgs each turn may present a key not seen for a minute, and one write per such
//! turn would cost more than the turn's own writes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sable_core::{ApiKeyId, OrgId, Role};
use sable_runtime::{CHANGE_POLL, ChangeFeed};
use sable_store::{Actor, AuthenticatedKey, Store, platform_org};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{ApiError, AppState};

/// How long a gateway trusts a key it authenticated when its change feed cannot confirm
/// the key (the feed's polls fail), and so the longest a revoked key keeps working on
/// another gateway.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);

/// The longest a gateway keeps a key its change feed confirms.
pub const AUTH_CACHE_MAX_AGE: Duration = Duration::from_secs(600);

/// More distinct live keys than this and the cache starts afresh (about 200 bytes each).
const AUTH_CACHE_CAPACITY: usize = 100_000;

/// How long key uses gather before they are written, in one statement for all of them.
/// A gateway that stops loses at most this long of last-use times (a listing detail).
const KEY_USE_BATCH: Duration = Duration::from_secs(1);

/// Key uses not yet written: the first use of a batch schedules its write.
#[derive(Debug, Default)]
pub(crate) struct KeyUses {
    pending: Mutex<HashSet<ApiKeyId>>,
}

impl KeyUses {
    /// Records `key_id`'s use within [`KEY_USE_BATCH`], off the request's path: last use
    /// is never worth a slower answer or a failed one.
    fn record(self: &Arc<Self>, store: &Store, key_id: ApiKeyId) {
        let first = {
            let mut pending = self.pending.lock().expect("key use lock");
            pending.insert(key_id) && pending.len() == 1
        };
        if !first {
            return;
        }
        let (uses, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            tokio::time::sleep(KEY_USE_BATCH).await;
            let keys: Vec<ApiKeyId> = uses.pending.lock().expect("key use lock").drain().collect();
            if let Err(error) = store.record_key_uses(&keys).await {
                tracing::debug!(%error, keys = keys.len(), "cannot record the keys' last use");
            }
        });
    }
}

/// Keys authenticated by this gateway, by the SHA-256 of what was presented (the secret
/// itself is not kept), each with the instant its read began.
#[derive(Debug)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<[u8; 32], (AuthenticatedKey, Instant)>>,
    feed: Arc<ChangeFeed>,
}

impl AuthCache {
    pub(crate) fn new(feed: Arc<ChangeFeed>) -> Self {
        Self {
            entries: Mutex::default(),
            feed,
        }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<AuthenticatedKey> {
        let entries = self.entries.lock().expect("auth cache lock");
        entries
            .get(digest)
            .filter(|(_, read_at)| self.holds(*read_at))
            .map(|(key, _)| key.clone())
    }

    /// Whether a key read by a read begun at `read_at` may be used without reading it
    /// again.
    fn holds(&self, read_at: Instant) -> bool {
        read_at.elapsed() < AUTH_CACHE_MAX_AGE && self.feed.holds(read_at, AUTH_CACHE_TTL)
    }

    fn put(&self, digest: [u8; 32], key: AuthenticatedKey, read_at: Instant) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if entries.len() >= AUTH_CACHE_CAPACITY {
            entries.retain(|_, (_, at)| self.holds(*at));
            if entries.len() >= AUTH_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest, (key, read_at));
    }

    /// Notes that the key's use was just recorded, so the next requests do not record it
    /// again.
    fn used_now(&self, digest: &[u8; 32]) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if let Some((key, _)) = entries.get_mut(digest) {
            key.last_used_at = Some(chrono::Utc::now());
        }
    }

    /// Forgets every key (after a revocation through this gateway).
    pub fn clear(&self) {
        self.entries.lock().expect("auth cache lock").clear();
    }
}

/// The org whose key signed the request. Every query a handler makes is scoped by it.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub org_id: OrgId,
    /// What the key may do ([`crate::permissions`] checks it before the handler runs).
    pub role: Role,
    /// The key and the request, as the audit names them.
    pub actor: Actor,
    /// The key's name, as `GET /v1/me` shows it.
    pub key_name: Option<String>,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Already authenticated by the permission check of this route.
        if let Some(caller) = parts.extensions.get::<Self>() {
            return Ok(caller.clone());
        }
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if is_admin_key(state, &digest) {
            return Ok(Self {
                org_id: platform_org(),
                role: Role::Platform,
                actor: Actor::platform_admin().with_request_id(request_id(parts)),
                key_name: Some("SABLE_ADMIN_KEY".to_owned()),
            });
        }
        let key = match state.auth_cache.get(&digest) {
            Some(key) => key,
            None => {
                // Before the read: a change the feed sees later may have raced it.
                let read_at = Instant::now();
                let Some(key) = state.store.authenticate(presented).await? else {
                    record_failed_authentication(state, presented, source_address(parts));
                    return Err(ApiError::Unauthorized);
                };
                // The org's configuration version came with the key: intake need not
                // read it again while it holds.
                state
                    .orgs()
                    .saw_version(key.org_id, key.config_version, read_at);
                state.auth_cache.put(digest, key.clone(), read_at);
                key
            }
        };
        // A cached key is checked again: it may have expired since it was read.
        if key.expired(chrono::Utc::now()) {
            return Err(ApiError::Unauthorized);
        }
        if key.last_use_is_stale(chrono::Utc::now()) {
            state.auth_cache.used_now(&digest);
            state.key_uses.record(&state.store, key.key_id);
        }
        let actor = Actor::key(key.key_id, key.name.clone()).with_request_id(request_id(parts));
        Ok(Self {
            org_id: key.org_id,
            role: key.role,
            key_name: key.name.clone(),
            actor,
        })
    }
}

/// Polls the deployment's change count every [`CHANGE_POLL`] until `shutdown`, for the
/// key cache and intake's org configurations. A failing poll is logged once until polls
/// succeed again; meanwhile the caches fall back to their time limits.
pub(crate) async fn follow_changes(
    store: Store,
    feed: Arc<ChangeFeed>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(CHANGE_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match feed.poll(&store).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the change count is read again; caches follow it");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot read the change count; cached keys and org configurations fall back to their time limits");
            }
            Err(error) => tracing::debug!(%error, "cannot read the change count"),
        }
    }
}

/// Audits a key that did not authenticate, off the request's path (the 401 does not wait
/// for it, and a store that cannot take it loses only this record).
fn record_failed_authentication(state: &AppState, presented: &str, source: Option<String>) {
    let store = state.store.clone();
    let presented = presented.to_owned();
    tokio::spawn(async move {
        if let Err(error) = store
            .record_failed_authentication(&presented, source.as_deref())
            .await
        {
            tracing::warn!(%error, "cannot audit a failed authentication");
        }
    });
}

/// The caller's address: the first `X-Forwarded-For` hop, else the connection's peer.
fn source_address(parts: &Parts) -> Option<String> {
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .filter(|hop| !hop.is_empty() && hop.len() <= 64);
    forwarded.map(str::to_owned).or_else(|| {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_string())
    })
}

/// The client's `X-Request-Id`, when it is a short printable token.
fn request_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map(str::to_owned)
}

/// True when `digest` is the SHA-256 of the configured `SABLE_ADMIN_KEY`.
fn is_admin_key(state: &AppState, digest: &[u8; 32]) -> bool {
    state.config.admin_key.as_ref().is_some_and(|key| {
        let expected: [u8; 32] = Sha256::digest(key.expose().trim().as_bytes()).into();
        // Digests of a secret: comparing them in constant time leaks nothing either way,
        // but costs nothing.
        expected
            .iter()
            .zip(digest)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    })
}

impl Authenticated {
    /// The org a route names, when the caller may act in it: its own, or any for the
    /// platform admin. Another org is as unknown as a missing one (404).
    pub fn org_scope(&self, org_id: OrgId) -> Result<OrgId, ApiError> {
        if self.role == Role::Platform || self.org_id == org_id {
            Ok(org_id)
        } else {
            Err(ApiError::NotFound("org"))
        }
    }
}
