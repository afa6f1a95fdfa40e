//! Errors of the OpenAI-compatible routes in OpenAI's shape:
//! `{"error":{"message","type","code","param"}}`, with `x-should-retry` telling the
//! official SDKs whether a retry can help.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sable_store::AcceptedTurn;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiError;
use crate::waiter::FinishedTurn;

/// The body of an OpenAI route's error, in OpenAI's shape.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OpenAiErrorDetail {
    message: String,
    /// `invalid_request_error`, `permission_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    code: Option<String>,
    /// The request parameter at fault, when one is.
    param: Option<String>,
    /// With `quota_exceeded` (a Sable addition): which of the org's quotas is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<String>,
}

/// An answer of an OpenAI route other than success.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<String>,
    message: String,
    param: Option<String>,
    /// `x-should-retry`; `None` leaves the decision to the client's status rules.
    retry: Option<bool>,
    /// An org's quota that refused the request, and `Retry-After`.
    quota: Option<sable_store::QuotaExceeded>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: Some(code.to_owned()),
            message: message.into(),
            param: None,
            retry: None,
            quota: None,
        }
    }

    /// 400 `invalid_request_error`, naming the parameter when one is at fault.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        );
        error.param = param.map(str::to_owned);
        error
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(
            format!("missing required parameter: '{param}'"),
            Some(param),
        )
        .with_code("missing_required_parameter")
    }

    pub fn unrecognized(param: &str) -> Self {
        let shown: String = param.chars().take(64).collect();
        Self::invalid(
            format!("unrecognized request argument supplied: {shown}"),
            Some(&shown),
        )
        .with_code("unknown_parameter")
    }

    pub fn model_not_found(model: &str) -> Self {
        let shown: String = model.chars().take(80).collect();
        let mut error = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "the model '{shown}' does not exist: name an agent as 'agent:<id>' or '<id>' \
                 (GET /v1/models lists them)"
            ),
        );
        error.param = Some("model".to_owned());
        error
    }

    pub fn not_found(what: &str, param: &str) -> Self {
        let mut error = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("{what} not found"),
        );
        error.param = Some(param.to_owned());
        error
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The turn ended without an answer (its provider failed, it was cancelled).
    pub fn turn_failed(accepted: &AcceptedTurn, finished: &FinishedTurn) -> Self {
        let code = finished.error_code.as_deref().unwrap_or("turn_failed");
        let message = format!(
            "the agent's turn {} ended {}: {}",
            accepted.turn_id,
            finished.status,
            finished.error_message.as_deref().unwrap_or("no answer")
        );
        let mut error = Self::new(StatusCode::BAD_GATEWAY, "server_error", code, message);
        // The same request makes a new turn (or, with its Idempotency-Key, this one).
        error.retry = Some(false);
        error
    }

    /// The turn waits for a person's approval: its answer comes later, in the session.
    pub fn awaiting_approval(accepted: &AcceptedTurn) -> Self {
        let message = format!(
            "the agent's turn {} waits for a person's approval (GET /v1/approvals, then \
             POST /v1/approvals/{{id}}); its answer will be in GET /v1/turns/{}",
            accepted.turn_id, accepted.turn_id
        );
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "approval_required",
            message,
        );
        error.retry = Some(false);
        error
    }

    /// The wait timed out; the turn goes on. A retry with the same `Idempotency-Key`
    /// waits for the same turn, so the SDK may retry only when the request had one.
    pub fn still_running(accepted: &AcceptedTurn, retry_is_safe: bool) -> Self {
        let message = format!(
            "the agent's turn {} did not end in time; it goes on: read it with GET /v1/turns/{}, \
             or repeat the request with the same Idempotency-Key",
            accepted.turn_id, accepted.turn_id
        );
        let mut error = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "turn_timeout",
            message,
        );
        error.retry = Some(retry_is_safe);
        error
    }

    /// This gateway is stopping; the turn goes on and any other gateway can answer.
    pub fn interrupted(accepted: &AcceptedTurn, retry_is_safe: bool) -> Self {
        let message = format!(
            "this gateway is stopping; the agent's turn {} goes on: read it with \
             GET /v1/turns/{}, or repeat the request with the same Idempotency-Key",
            accepted.turn_id, accepted.turn_id
        );
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "gateway_stopping",
            message,
        );
        error.retry = Some(retry_is_safe);
        error
    }

    /// The `error` object, as a stream sends it too.
    pub fn body(&self) -> OpenAiErrorBody {
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind,
                code: self.code.clone(),
                param: self.param.clone(),
                quota: self.quota.map(|refused| refused.quota.as_str().to_owned()),
            },
        }
    }

    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or(self.kind)
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        let (status, kind, code) = match &error {
            ApiError::Unauthorized | ApiError::ChannelUnauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            ApiError::Forbidden(_) | ApiError::NoRule => {
                (StatusCode::FORBIDDEN, "permission_error", "forbidden")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            ApiError::UnknownAgent(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ApiError::InvalidJson(_) | ApiError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
            ),
            ApiError::Validation(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "payload_too_large",
            ),
            ApiError::UriTooLong(_) | ApiError::HeadersTooLarge(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "request_too_large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
            ),
            ApiError::RequestTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            ApiError::QuotaExceeded(refused) => {
                let mut answer = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "quota_exceeded",
                    message,
                );
                answer.quota = Some(*refused);
                return answer;
            }
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
            ),
            ApiError::OrgConfig(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "org_config_invalid",
            ),
            ApiError::Internal(cause) => {
                // Details stay in the log; the caller gets the generic message.
                tracing::error!(error = %format!("{cause:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal",
                )
            }
        };
        Self::new(status, kind, code, message)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(refused) = self.quota {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(refused.retry_after_secs),
            );
        }
        if let Some(retry) = self.retry {
            response.headers_mut().insert(
                "x-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        response
    }
}
