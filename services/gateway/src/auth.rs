//! Bearer API keys: every `/v1` route takes an [`Authenticated`] caller.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sable_core::OrgId;

use crate::{ApiError, AppState};

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
        let key = state
            .store
            .authenticate(presented)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if key.last_use_is_stale(chrono::Utc::now()) {
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
