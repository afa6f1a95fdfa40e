//! The http_fetch tool against real local servers: what it fetches, what it refuses
//! (before any request reaches the server), and how it bounds size and time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use sable_core::{OrgId, SessionId, TurnId};
use sable_store::{Store, StoreOptions};
use sable_tools::{HttpFetch, HttpFetchConfig, Tool, ToolContext, ToolError, ToolRegistry};
use serde_json::json;

const PAGE: &str = r#"<!doctype html><html><head><title>Sable test page</title>
<style>p { color: red }</style><script>document.write("hidden")</script></head>
<body><h1>Welcome</h1><p>Hello,   <b>reader</b> &amp; friends.</p></body></html>"#;

/// A local server on port 0 that records every request it receives.
struct TestServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    async fn spawn() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/text", get(|| async { "plain hello" }))
            .route(
                "/page",
                get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
            )
            .route(
                "/echo",
                post(|body: String| async move { format!("received: {body}") }),
            )
            .route("/header", get(echo_test_header))
            .route("/big", get(|| async { "a".repeat(64 * 1024) }))
            .route("/redirect", any(redirect_to))
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route("/hang", get(std::future::pending::<&'static str>))
            .route("/hang-in-body", get(hang_in_body))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&requests),
                record,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let port = listener.local_addr().expect("local address").port();
        tokio::spawn(async move { axum::serve(listener, app).await.expect("test server") });
        Self { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}

async fn record(
    State(requests): State<Arc<Mutex<Vec<String>>>>,
    request: Request,
    next: Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri());
    requests.lock().expect("requests lock").push(line);
    next.run(request).await
}

async fn echo_test_header(headers: HeaderMap) -> String {
    let value = headers
        .get("x-test")
        .map(|value| value.to_str().unwrap_or("?").to_owned());
    format!("x-test: {}", value.unwrap_or_default())
}

async fn redirect_to(Query(query): Query<HashMap<String, String>>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, query["to"].clone())]).into_response()
}

async fn hang_in_body() -> Response {
    let stream = futures::StreamExt::chain(
        futures::stream::once(async { Ok::<_, Infallible>("the start of a body") }),
        futures::stream::pending(),
    );
    Body::from_stream(stream).into_response()
}

fn tool(config: HttpFetchConfig) -> HttpFetch {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpFetch::new(config).expect("a valid configuration")
}

fn allowing_loopback() -> HttpFetchConfig {
    HttpFetchConfig {
        allow: vec!["127.0.0.1/32".to_owned()],
        ..HttpFetchConfig::default()
    }
}

fn context() -> ToolContext {
    ToolContext {
        store: Store::connect_lazy("sqlite::memory:", &StoreOptions::default())
            .expect("a lazy store"),
        org_id: OrgId::new(),
        session_id: SessionId::new(),
        turn_id: TurnId::new(),
        user_id: None,
        agent_id: "test-agent".to_owned(),
        allowed_skills: Arc::from(Vec::new()),
    }
}

async fn fetch(tool: &HttpFetch, arguments: serde_json::Value) -> Result<String, ToolError> {
    tool.call(&context(), arguments).await
}

async fn fetch_refused(config: HttpFetchConfig, url: &str) -> String {
    match fetch(&tool(config), json!({ "url": url })).await {
        Err(ToolError::Refused(message)) => message,
        other => panic!("expected a refusal for {url}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_get_through_the_registry_returns_the_text_with_a_header_line() {
    let server = TestServer::spawn().await;
    let mut registry = ToolRegistry::default();
    registry
        .register(Arc::new(tool(allowing_loopback())))
        .expect("register");
    let arguments = json!({ "url": server.url("/text") }).to_string();
    let text = registry
        .call(&context(), "http_fetch", &arguments)
        .await
        .expect("fetched");
    let (header_line, body) = text.split_once('\n').expect("a header line");
    assert!(header_line.starts_with("HTTP 200 OK"), "{header_line}");
    assert!(header_line.contains(&server.url("/text")), "{header_line}");
    assert!(header_line.contains("text/plain"), "{header_line}");
    assert_eq!(body, "plain hello");
}

#[tokio::test]
async fn the_registry_rejects_a_call_without_a_url_or_with_another_method() {
    let mut registry = ToolRegistry::default();
    registry
        .register(Arc::new(tool(HttpFetchConfig::default())))
        .expect("register");
    let missing_url = registry
        .call(&context(), "http_fetch", r#"{"method":"GET"}"#)
        .await;
    assert!(
        matches!(missing_url, Err(ToolError::InvalidArguments(_))),
        "{missing_url:?}"
    );
    let delete = registry
        .call(
            &context(),
            "http_fetch",
            r#"{"url":"http://example.com","method":"DELETE"}"#,
        )
        .await;
    assert!(
        matches!(delete, Err(ToolError::InvalidArguments(_))),
        "{delete:?}"
    );
}

#[tokio::test]
async fn html_is_reduced_to_its_readable_text() {
    let server = TestServer::spawn().await;
    let text = fetch(
        &tool(allowing_loopback()),
        json!({ "url": server.url("/page") }),
    )
    .await
    .expect("fetched");
    let body = text.split_once('\n').expect("a header line").1;
    assert_eq!(body, "Sable test page\nWelcome\nHello, reader & friends.");
}

#[tokio::test]
async fn a_post_sends_its_body() {
    let server = TestServer::spawn().await;
    let arguments = json!({ "url": server.url("/echo"), "method": "POST", "body": "ping" });
    let text = fetch(&tool(allowing_loopback()), arguments)
        .await
        .expect("fetched");
    assert!(text.ends_with("\nreceived: ping"), "{text}");
    assert_eq!(server.requests(), ["POST /echo"]);
}

#[tokio::test]
async fn extra_headers_are_sent_but_host_and_hop_by_hop_headers_are_not_accepted() {
    let server = TestServer::spawn().await;
    let fetcher = tool(allowing_loopback());
    let arguments =
        json!({ "url": server.url("/header"), "headers": { "X-Test": "secret-value" } });
    let text = fetch(&fetcher, arguments).await.expect("fetched");
    assert!(text.ends_with("\nx-test: secret-value"), "{text}");
    for name in ["Host", "Connection", "Transfer-Encoding"] {
        let arguments = json!({ "url": server.url("/header"), "headers": { name: "x" } });
        let result = fetch(&fetcher, arguments).await;
        assert!(
            matches!(result, Err(ToolError::InvalidArguments(_))),
            "{name}: {result:?}"
        );
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_body_with_get_and_a_non_http_url_are_invalid() {
    let fetcher = tool(HttpFetchConfig::default());
    let body_with_get = fetch(
        &fetcher,
        json!({ "url": "http://example.com/", "body": "x" }),
    )
    .await;
    assert!(
        matches!(body_with_get, Err(ToolError::InvalidArguments(_))),
        "{body_with_get:?}"
    );
    let file = fetch(&fetcher, json!({ "url": "file:///etc/passwd" })).await;
    assert!(
        matches!(file, Err(ToolError::InvalidArguments(_))),
        "{file:?}"
    );
}

#[tokio::test]
async fn loopback_is_refused_without_an_allowlist_and_the_server_sees_nothing() {
    let server = TestServer::spawn().await;
    let message = fetch_refused(HttpFetchConfig::default(), &server.url("/text")).await;
    assert_eq!(
        message,
        "refused: 127.0.0.1 is a loopback address (allow it in http_fetch.allow)"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn the_cloud_metadata_address_is_refused() {
    let message = fetch_refused(
        HttpFetchConfig::default(),
        "http://169.254.169.254/latest/meta-data",
    )
    .await;
    assert!(
        message.starts_with("refused: 169.254.169.254 is a link-local address"),
        "{message}"
    );
}

#[tokio::test]
async fn private_and_mapped_addresses_are_refused() {
    let message = fetch_refused(HttpFetchConfig::default(), "http://10.0.0.1/").await;
    assert_eq!(
        message,
        "refused: 10.0.0.1 is a private address (allow it in http_fetch.allow)"
    );
    let message = fetch_refused(HttpFetchConfig::default(), "http://[::ffff:10.0.0.1]/").await;
    assert!(message.contains("private address"), "{message}");
    // WHATWG URL parsing reads 0x7f.1 as 127.0.0.1.
    let message = fetch_refused(HttpFetchConfig::default(), "http://0x7f.1/").await;
    assert!(
        message.contains("127.0.0.1 is a loopback address"),
        "{message}"
    );
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_after_resolution() {
    let server = TestServer::spawn().await;
    let url = format!("http://localhost:{}/text", server.port);
    let message = fetch_refused(HttpFetchConfig::default(), &url).await;
    assert!(
        message.starts_with("refused: localhost resolves to "),
        "{message}"
    );
    assert!(message.contains("loopback address"), "{message}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_host_name_in_the_allowlist_is_fetched_whatever_it_resolves_to() {
    let server = TestServer::spawn().await;
    let config = HttpFetchConfig {
        allow: vec!["localhost".to_owned()],
        ..HttpFetchConfig::default()
    };
    let url = format!("http://localhost:{}/text", server.port);
    let text = fetch(&tool(config), json!({ "url": url }))
        .await
        .expect("fetched");
    assert!(text.ends_with("\nplain hello"), "{text}");
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_not_followed() {
    let server = TestServer::spawn().await;
    for target in [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let url = format!("{}?to={target}", server.url("/redirect"));
        let message = fetch_refused(allowing_loopback(), &url).await;
        let address = target
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("refused: {address} is ")),
            "{message}"
        );
    }
    assert_eq!(
        server.requests().len(),
        2,
        "only the two redirecting requests"
    );
}

#[tokio::test]
async fn a_redirect_to_an_allowed_address_is_followed_and_reported() {
    let server = TestServer::spawn().await;
    let url = format!("{}?to=/text", server.url("/redirect"));
    let text = fetch(&tool(allowing_loopback()), json!({ "url": url }))
        .await
        .expect("fetched");
    assert!(
        text.starts_with(&format!("HTTP 200 OK · {}", server.url("/text"))),
        "{text}"
    );
    assert_eq!(server.requests(), ["GET /redirect?to=/text", "GET /text"]);
}

#[tokio::test]
async fn a_redirect_loop_stops_at_the_limit() {
    let server = TestServer::spawn().await;
    let config = HttpFetchConfig {
        max_redirects: 3,
        ..allowing_loopback()
    };
    let message = fetch_refused(config, &server.url("/loop")).await;
    assert!(message.contains("more than 3 redirects"), "{message}");
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn a_response_over_the_cap_is_truncated_with_a_note() {
    let server = TestServer::spawn().await;
    let config = HttpFetchConfig {
        max_response_bytes: 1000,
        ..allowing_loopback()
    };
    let text = fetch(&tool(config), json!({ "url": server.url("/big") }))
        .await
        .expect("fetched");
    assert!(
        text.contains("[the response was longer than 1000 bytes and was truncated]"),
        "{text}"
    );
    let body = text.lines().last().expect("a body line");
    assert_eq!(body, "a".repeat(1000));
}

#[tokio::test]
async fn the_text_is_cut_at_max_text_chars_with_a_note() {
    let server = TestServer::spawn().await;
    let config = HttpFetchConfig {
        max_text_chars: 10,
        ..allowing_loopback()
    };
    let text = fetch(&tool(config), json!({ "url": server.url("/big") }))
        .await
        .expect("fetched");
    assert!(
        text.contains("[the text was cut at 10 characters]"),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("aaaaaaaaaa"));
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_at_the_timeout() {
    let server = TestServer::spawn().await;
    let timeout = Duration::from_millis(300);
    let fetcher = tool(HttpFetchConfig {
        timeout,
        ..allowing_loopback()
    });
    for path in ["/hang", "/hang-in-body"] {
        let started = Instant::now();
        let result = fetch(&fetcher, json!({ "url": server.url(path) })).await;
        assert_eq!(result, Err(ToolError::Timeout(timeout)), "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn the_configuration_reads_durations_as_text_and_rejects_unknown_fields() {
    let config: HttpFetchConfig =
        serde_json::from_value(json!({ "allow": ["10.0.0.0/8"], "timeout": "300ms" }))
            .expect("valid");
    assert_eq!(config.timeout, Duration::from_millis(300));
    assert_eq!(config.max_response_bytes, 1024 * 1024);
    let unknown = serde_json::from_value::<HttpFetchConfig>(json!({ "alow": [] }));
    assert!(unknown.is_err());
}

#[test]
fn a_malformed_allowlist_entry_fails_construction() {
    let config = HttpFetchConfig {
        allow: vec!["10.0.0.0/40".to_owned()],
        ..HttpFetchConfig::default()
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert!(HttpFetch::new(config).is_err());
}
