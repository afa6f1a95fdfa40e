//! A JSON body extractor whose every rejection is an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{ApiError, MAX_BODY_BYTES};

/// Like `axum::Json`, but malformed JSON is 400 `invalid_json`, a well-formed body of the
/// wrong shape is 422 `validation_failed`, and an oversized one is 413.
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(MAX_BODY_BYTES)
                } else {
                    ApiError::InvalidJson(rejection.body_text())
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|error| match error.classify() {
                serde_json::error::Category::Data => ApiError::Validation(error.to_string()),
                _ => ApiError::InvalidJson(error.to_string()),
            })
    }
}
