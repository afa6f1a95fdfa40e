//! A JSON body extractor whose every rejection is an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState, MAX_BODY_BYTES};

/// Like `axum::Json`, but malformed JSON is 400 `invalid_json`, a well-formed body of the
/// wrong shape (unknown fields included: bodies deny them) is 422 `validation_failed`, a
/// declared content type other than JSON is 415, a body slower than the body deadline is
/// 408, and an oversized one is 413. A request with no `Content-Type` is read as JSON.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_content_type(&request)?;
        let deadline = state.config.http.body_timeout;
        let bytes = tokio::time::timeout(deadline, Bytes::from_request(request, state))
            .await
            .map_err(|_elapsed| ApiError::RequestTimeout(deadline.as_millis() as u64))?
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

/// `application/json`, any `+json` type, or none at all.
fn check_content_type(request: &Request) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            text.chars().take(100).collect(),
        ))
    }
}
