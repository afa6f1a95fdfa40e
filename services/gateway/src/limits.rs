//! Checks every request passes before routing: a declared body over the limit is refused
//! at once (413, before the body is read or the key checked), and an oversized URI or
//! header block gets a JSON 414 / 431.

use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, MAX_BODY_BYTES};

/// The longest request target (path and query) the gateway reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header bytes (names and values) one request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

pub(crate) async fn refuse_oversized(request: Request, next: Next) -> Response {
    match oversized(&request) {
        Some(error) => {
            let mut response = error.into_response();
            // The body was never read: the connection cannot carry another request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
        None => next.run(request).await,
    }
}

fn oversized(request: &Request) -> Option<ApiError> {
    let uri_length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if uri_length > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong(MAX_URI_BYTES));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge(MAX_HEADER_BYTES));
    }
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => {
            Some(ApiError::PayloadTooLarge(MAX_BODY_BYTES))
        }
        _ => None,
    }
}
