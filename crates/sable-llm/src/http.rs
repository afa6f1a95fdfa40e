//! What every adapter shares on the wire: timeouts, sending a JSON request, reading an
//! SSE stream with idle and first-byte limits, and mapping HTTP errors to kinds.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::model::{ChatRequest, Completion, DeltaSink, ProviderFuture};
use crate::{ProviderError, ProviderErrorKind};

/// The limits of one provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderTimeouts {
    pub connect: Duration,
    /// Until the response headers and then the first chunk arrive.
    pub first_byte: Duration,
    /// Longest silence between two chunks.
    pub idle: Duration,
    /// Longest a whole call may take.
    pub total: Duration,
}

impl Default for ProviderTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(120),
        }
    }
}

/// An adapter's single streaming call, before the total timeout is applied.
pub(crate) trait StreamingCall: Sync {
    fn total_timeout(&self) -> Duration;

    fn call<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> impl Future<Output = Result<Completion, ProviderError>> + Send + 'a;
}

/// Runs an adapter's call under its total timeout. A timeout after text was streamed is
/// a partial-output error.
pub(crate) fn stream_within_total<'a>(
    adapter: &'a impl StreamingCall,
    model: &'a str,
    request: &'a ChatRequest,
    on_delta: DeltaSink<'a>,
) -> ProviderFuture<'a> {
    Box::pin(async move {
        let total = adapter.total_timeout();
        let streamed = AtomicBool::new(false);
        let mut track = |text: &str| {
            streamed.store(true, Ordering::Relaxed);
            on_delta(text);
        };
        match tokio::time::timeout(total, adapter.call(model, request, &mut track)).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::new(
                ProviderErrorKind::Timeout,
                format!("no complete answer within {total:?}"),
            )
            .partial(streamed.load(Ordering::Relaxed))),
        }
    })
}

/// Builds the one pooled client of a provider.
pub(crate) fn build_client(timeouts: &ProviderTimeouts) -> Result<reqwest::Client, ProviderError> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|error| {
            ProviderError::new(
                ProviderErrorKind::Unreachable,
                format!("HTTP client: {error}"),
            )
        })
}

/// Sends the request and waits (up to the first-byte limit) for a 2xx answer; anything
/// else becomes a typed error.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeouts: &ProviderTimeouts,
) -> Result<reqwest::Response, ProviderError> {
    let response = match tokio::time::timeout(timeouts.first_byte, request.send()).await {
        Err(_) => {
            return Err(ProviderError::new(
                ProviderErrorKind::Timeout,
                "no response headers in time",
            ));
        }
        Ok(Err(error))
            if error.is_timeout()
                || error.is_connect() && error_chain(&error).contains("timed out") =>
        {
            return Err(ProviderError::new(
                ProviderErrorKind::Timeout,
                "connect timed out",
            ));
        }
        Ok(Err(error)) => {
            return Err(ProviderError::new(
                ProviderErrorKind::Unreachable,
                format!("request failed: {}", error_chain(&error)),
            ));
        }
        Ok(Ok(response)) => response,
    };
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(error_from_response(response).await)
    }
}

/// Server-sent events of a streaming answer, with the call's idle limits.
pub(crate) struct SseEvents {
    inner: BoxStream<'static, Result<Event, EventStreamError<reqwest::Error>>>,
    timeouts: ProviderTimeouts,
    received_any: bool,
}

impl SseEvents {
    pub fn new(response: reqwest::Response, timeouts: ProviderTimeouts) -> Self {
        Self {
            inner: response.bytes_stream().eventsource().boxed(),
            timeouts,
            received_any: false,
        }
    }

    /// The next event; `Ok(None)` when the stream ended. `partial_output` marks errors
    /// after text was already streamed to the user.
    pub async fn next(&mut self, partial_output: bool) -> Result<Option<Event>, ProviderError> {
        let limit = if self.received_any {
            self.timeouts.idle
        } else {
            self.timeouts.first_byte
        };
        let next = tokio::time::timeout(limit, self.inner.next()).await;
        self.received_any = true;
        match next {
            Err(_) => Err(ProviderError::new(
                ProviderErrorKind::Timeout,
                "provider went silent mid-stream",
            )
            .partial(partial_output)),
            Ok(None) => Ok(None),
            Ok(Some(Err(error))) => Err(ProviderError::new(
                ProviderErrorKind::Unreachable,
                format!("stream broke: {error}"),
            )
            .partial(partial_output)),
            Ok(Some(Ok(event))) => Ok(Some(event)),
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    code: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Maps a non-2xx answer (OpenAI or Anthropic shaped) to a typed error. Only the
/// provider's own error message is kept: it names the problem, not the prompt.
pub(crate) async fn error_from_response(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(3600.0)));
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<ErrorEnvelope>(&body)
        .ok()
        .map(|envelope| envelope.error);
    let message = detail
        .as_ref()
        .and_then(|detail| detail.message.clone())
        .unwrap_or_default();
    let kind = classify(status, detail.as_ref(), &message);
    let text: String = format!("provider answered HTTP {}: {message}", status.as_u16())
        .chars()
        .take(500)
        .collect();
    let mut error = ProviderError::new(kind, text.trim_end_matches(": ").to_owned());
    error.retry_after = retry_after;
    error
}

fn classify(status: StatusCode, detail: Option<&ErrorBody>, message: &str) -> ProviderErrorKind {
    let code = detail
        .and_then(|detail| detail.code.as_ref())
        .and_then(|code| code.as_str())
        .unwrap_or_default();
    let kind = detail
        .and_then(|detail| detail.kind.as_deref())
        .unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    let overflow = code == "context_length_exceeded"
        || kind == "context_length_exceeded"
        || lower.contains("prompt is too long")
        || lower.contains("maximum context length")
        || lower.contains("context window");
    match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderErrorKind::RateLimited,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderErrorKind::Auth,
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE if overflow => {
            ProviderErrorKind::ContextOverflow
        }
        StatusCode::REQUEST_TIMEOUT => ProviderErrorKind::Timeout,
        status if status.is_server_error() || status.as_u16() == 529 => ProviderErrorKind::Server,
        _ => ProviderErrorKind::InvalidRequest,
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
