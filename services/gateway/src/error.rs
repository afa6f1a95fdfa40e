//! The one place where errors become HTTP answers: `{"error":{"code","message"}}`.

use axum::Json;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sable_core::error_chain;
use sable_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer of Sable's own routes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// One of `unauthorized`, `forbidden`, `not_found`, `invalid_json`,
    /// `validation_failed`, `unknown_agent`, `conflict`, `payload_too_large`,
    /// `uri_too_long`, `headers_too_large`, `unsupported_media_type`, `request_timeout`,
    /// `bad_request`, `method_not_allowed`, `quota_exceeded`, `unavailable`, `internal`,
    /// `not_ready`.
    #[schema(example = "validation_failed")]
    pub code: String,
    pub message: String,
    /// With `quota_exceeded`: which quota (`requests_per_minute`, `concurrent_turns`,
    /// `tokens_per_day`, `tokens_per_month`, `cron_tasks`, `mcp_servers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

impl ErrorBody {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                quota: None,
            },
        }
    }
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    /// A channel's callback failed its verification (token, signature).
    #[error("{0}")]
    ChannelUnauthorized(&'static str),
    #[error("this route needs a key with role '{0}' or above")]
    Forbidden(sable_core::Role),
    #[error("this route has no permission rule; nobody may call it")]
    NoRule,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    Validation(String),
    #[error("unknown agent '{0}'")]
    UnknownAgent(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request target is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("request body must be JSON: send Content-Type: application/json (got '{0}')")]
    UnsupportedMediaType(String),
    #[error("the request body did not arrive within {0} ms")]
    RequestTimeout(u64),
    #[error("{0}")]
    BadRequest(String),
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// An org's quota has no room: 429 with `Retry-After`.
    #[error("{0}")]
    QuotaExceeded(sable_store::QuotaExceeded),
    #[error("{0} is unavailable; retry later")]
    Unavailable(&'static str),
    /// The org's stored configuration does not build (an operator of the org fixes it).
    #[error("the org's configuration is invalid: {0}")]
    OrgConfig(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status this error answers with (also the code of a long-connection ACK).
    pub(crate) fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::ChannelUnauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) | Self::NoRule => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::UnknownAgent(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_agent"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::OrgConfig(_) => (StatusCode::INTERNAL_SERVER_ERROR, "org_config_invalid"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Rejected(why) => Self::Validation(why.to_owned()),
            StoreError::QuotaExceeded(refused) => {
                Self::QuotaExceeded(crate::quotas::rejected(refused))
            }
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %error_chain(&error), "database unavailable");
                Self::Unavailable("database")
            }
            StoreError::NotMigrated(_) => {
                tracing::error!(
                    error = %error_chain(&error),
                    "the database or its schema is missing: run `sable migrate`"
                );
                Self::Unavailable("database")
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<sable_runtime::IntakeError> for ApiError {
    fn from(error: sable_runtime::IntakeError) -> Self {
        match error {
            sable_runtime::IntakeError::UnknownAgent(agent) => Self::UnknownAgent(agent),
            sable_runtime::IntakeError::Invalid(error) => Self::Validation(error.to_string()),
            sable_runtime::IntakeError::OrgConfig(message) => Self::OrgConfig(message),
            sable_runtime::IntakeError::Store(error) => error.into(),
        }
    }
}

impl From<sable_runtime::OrgConfigError> for ApiError {
    fn from(error: sable_runtime::OrgConfigError) -> Self {
        sable_runtime::IntakeError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Internal details stay in the log; the caller gets a generic message.
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %format!("{cause:#}"), "request failed");
        }
        let mut body = ErrorBody::new(code, self.to_string());
        if let Self::QuotaExceeded(refused) = &self {
            body.error.quota = Some(refused.quota.as_str().to_owned());
        }
        let mut response = (status, Json(body)).into_response();
        if let Self::QuotaExceeded(refused) = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(refused.retry_after_secs),
            );
        }
        if matches!(self, Self::Unauthorized) {
            // What to present instead (RFC 9110 §11.6.1): MCP hosts read it.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sable\""),
            );
        }
        response
    }
}

/// Turns the framework's own error answers (axum's extractor rejections as `text/plain`,
/// an empty 405) into the one JSON shape, keeping their status and headers. Handlers'
/// errors are already JSON and pass through.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(method.to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(crate::MAX_BODY_BYTES),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        _ if text.is_empty() => ApiError::BadRequest(
            status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_lowercase(),
        ),
        _ => ApiError::BadRequest(text),
    };
    let (_, code) = error.status_and_code();
    let body = ErrorBody::new(code, error.to_string());
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The status stays the framework's (a 400 stays 400, whatever the code says).
    (parts, Json(body)).into_response()
}
