//! Bearer API keys: every `/v1` route takes an [`Authenticated`] caller.
//!
//! Keys found valid are remembered for [`AUTH_CACHE_TTL`], so a request costs no database
//! round trip: a key revoked elsewhere stops working on every gateway within that time
//! (on the gateway that revoked it, at once). Unknown keys are never remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sable_core::OrgId;
use sable_store::AuthenticatedKey;
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// How long a gateway trusts a key it authenticated, and so the longest a revoked key
/// keeps working on another gateway.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);

/// More distinct live keys than this and the cache starts afresh.
const AUTH_CACHE_CAPACITY: usize = 10_000;

/// Keys authenticated in the last [`AUTH_CACHE_TTL`], by the SHA-256 of what was
/// presented (the secret itself is not kept).
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    entries: Mutex<HashMap<[u8; 32], (AuthenticatedKey, Instant)>>,
}

impl AuthCache {
    fn get(&self, digest: &[u8; 32]) -> Option<AuthenticatedKey> {
        let entries = self.entries.lock().expect("auth cache lock");
        entries
            .get(digest)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(key, _)| *key)
    }

    fn put(&self, digest: [u8; 32], key: AuthenticatedKey) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if entries.len() >= AUTH_CACHE_CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
            if entries.len() >= AUTH_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest, (key, Instant::now()));
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
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated {
    pub org_id: OrgId,
    /// May read deployment-wide diagnostics.
    pub admin: bool,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let key = match state.auth_cache.get(&digest) {
            Some(key) => key,
            None => {
                let key = state
                    .store
                    .authenticate(presented)
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                state.auth_cache.put(digest, key);
                key
            }
        };
        if key.last_use_is_stale(chrono::Utc::now()) {
            state.auth_cache.used_now(&digest);
            // Off the request's path: last use is a listing detail, never worth a
            // slower answer or a failed one.
            let store = state.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.record_key_use(key.key_id).await {
                    tracing::debug!(%error, "cannot record the key's last use");
                }
            });
        }
        Ok(Self {
            org_id: key.org_id,
            admin: key.admin,
        })
    }
}

impl Authenticated {
    /// Admin keys only: `Forbidden` for the others.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}
