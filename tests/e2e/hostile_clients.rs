//! Slow and hostile clients: half-sent requests are cut at the header deadline while
//! others are served, an oversized declared body is refused before it is sent, and every
//! rejection the framework makes itself has the one JSON error shape.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{StackOptions, TestStack, assert_error};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1_500);

async fn stack_with_short_header_timeout() -> anyhow::Result<TestStack> {
    TestStack::start(StackOptions {
        gateways: 1,
        workers: 1,
        env: vec![(
            "SABLE_HTTP_HEADER_TIMEOUT_MS",
            HEADER_TIMEOUT.as_millis().to_string(),
        )],
        ..Default::default()
    })
    .await
}

fn gateway_addr(stack: &TestStack) -> String {
    stack.gateways[0]
        .url
        .trim_start_matches("http://")
        .to_owned()
}

/// Reads until the server closes the connection; what it sent before closing.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> anyhow::Result<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
    .map_err(|_elapsed| anyhow::anyhow!("the gateway kept the connection open for {within:?}"))?;
    Ok(received)
}

#[tokio::test]
async fn five_hundred_half_sent_requests_are_closed_at_the_header_deadline_while_others_are_served()
-> anyhow::Result<()> {
    let stack = stack_with_short_header_timeout().await?;
    let addr = gateway_addr(&stack);
    let mut slow = Vec::with_capacity(500);
    for _ in 0..500 {
        let mut stream = TcpStream::connect(&addr).await?;
        stream
            .write_all(b"POST /v1/messages HTTP/1.1\r\nHost: sable\r\nContent-Ty")
            .await?;
        slow.push(stream);
    }
    let opened = Instant::now();

    let (status, reply) = stack
        .post_message(0, &json!({"text": "still serving", "wait": true}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["reply"]["text"], "echo: still serving");
    let closing = slow
        .iter_mut()
        .map(|stream| read_until_closed(stream, HEADER_TIMEOUT * 4));
    let results = futures::future::join_all(closing).await;

    let still_open = results.iter().filter(|result| result.is_err()).count();
    assert_eq!(
        still_open, 0,
        "{still_open} of 500 half-sent requests were kept open"
    );
    assert!(
        opened.elapsed() < HEADER_TIMEOUT * 4,
        "closing took {:?}",
        opened.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_deadline() -> anyhow::Result<()> {
    let stack = stack_with_short_header_timeout().await?;
    let mut stream = TcpStream::connect(gateway_addr(&stack)).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: sable\r\n\r\n")
        .await?;
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await?;
    assert_eq!(&first, b"HTTP/1.1 200");

    // The connection is idle now: no second request follows.
    read_until_closed(&mut stream, HEADER_TIMEOUT * 4).await?;
    Ok(())
}

#[tokio::test]
async fn a_declared_ten_gigabyte_body_gets_413_before_it_is_sent() -> anyhow::Result<()> {
    let stack = stack_with_short_header_timeout().await?;
    let mut stream = TcpStream::connect(gateway_addr(&stack)).await?;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: sable\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{\"text\":",
        stack.key
    );
    stream.write_all(request.as_bytes()).await?;
    let started = Instant::now();

    // Well before the 30 s body deadline: the gateway does not wait for the body.
    let response = read_until_closed(&mut stream, Duration::from_secs(5)).await?;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"payload_too_large\""), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

/// Sends a request as raw bytes and parses the answer's status and JSON body.
async fn raw_request(stack: &TestStack, head: &str) -> anyhow::Result<(StatusCode, Value)> {
    let mut stream = TcpStream::connect(gateway_addr(stack)).await?;
    stream.write_all(head.as_bytes()).await?;
    let response = read_until_closed(&mut stream, Duration::from_secs(10)).await?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {text}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let lower = text.to_ascii_lowercase();
    anyhow::ensure!(
        lower.contains("content-type: application/json"),
        "not JSON: {text}"
    );
    Ok((StatusCode::from_u16(status)?, serde_json::from_str(body)?))
}

/// Requests the framework itself refuses, each with the status and code expected.
fn rejection_cases(key: &str) -> Vec<(&'static str, String, StatusCode, &'static str)> {
    let close = "Connection: close\r\n";
    let auth = format!("Authorization: Bearer {key}\r\n");
    let huge_path = format!("/v1/sessions?user_id={}", "a".repeat(10_000));
    let huge_header = format!("X-Padding: {}\r\n", "b".repeat(40_000));
    let post = |path: &str, content_type: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: s\r\n{auth}{close}Content-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = vec![
        (
            "wrong method",
            format!(
                "PUT /v1/messages HTTP/1.1\r\nHost: s\r\n{auth}{close}Content-Length: 0\r\n\r\n"
            ),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "bad path id (not UTF-8 once decoded)",
            format!("GET /v1/turns/%FF%FE HTTP/1.1\r\nHost: s\r\n{auth}{close}\r\n"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "duplicate query field",
            format!(
                "GET /v1/approvals?status=pending&status=denied HTTP/1.1\r\nHost: s\r\n{auth}{close}\r\n"
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "unknown query field",
            format!("GET /v1/sessions?colour=blue HTTP/1.1\r\nHost: s\r\n{auth}{close}\r\n"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "huge path",
            format!("GET {huge_path} HTTP/1.1\r\nHost: s\r\n{auth}{close}\r\n"),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
        (
            "huge header",
            format!("GET /v1/sessions HTTP/1.1\r\nHost: s\r\n{auth}{huge_header}{close}\r\n"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        (
            "wrong content type",
            post("/v1/messages", "text/plain", r#"{"text":"hi"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "form-encoded body on the approvals route",
            post(
                &format!("/v1/approvals/{}", uuid::Uuid::nil()),
                "application/x-www-form-urlencoded",
                "decision=approve",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "unknown body field",
            post(
                "/v1/messages",
                "application/json",
                r#"{"text":"hi","wiat":true}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "unknown route",
            format!("GET /v2/nothing HTTP/1.1\r\nHost: s\r\n{auth}{close}\r\n"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    cases
}

#[tokio::test]
async fn every_rejection_the_framework_makes_has_the_json_error_shape() -> anyhow::Result<()> {
    let stack = stack_with_short_header_timeout().await?;
    let cases = rejection_cases(&stack.key);
    let before = stack.database.fingerprint().await?;
    for (case, request, status, code) in &cases {
        let answer = raw_request(&stack, request)
            .await
            .map_err(|error| anyhow::anyhow!("{case}: {error}"))?;
        assert_eq!(answer.0, *status, "{case}: {}", answer.1);
        assert_error(&answer, *status, code);
    }
    assert_eq!(
        stack.database.fingerprint().await?,
        before,
        "a rejection changed data"
    );
    Ok(())
}
