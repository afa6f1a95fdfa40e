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
        Ok(Self {
            org_id: key.org_id,
            admin: key.admin,
        })
    }
}
