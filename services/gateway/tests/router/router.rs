//! What the router itself answers (`lib.rs`, `limits.rs`, `error.rs`): unknown routes,
//! oversized requests refused before routing, and framework rejections as JSON.

use axum::http::StatusCode;

use crate::support::{Backend, Call, TestApp, refusal};

#[tokio::test]
async fn unknown_routes_and_oversized_requests_get_json_errors_before_any_key_check()
-> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let long_path = format!("/v1/turns/{}", "a".repeat(sable_gateway::MAX_URI_BYTES));
    let big_header = "h".repeat(sable_gateway::MAX_HEADER_BYTES);

    app.assert_refused(vec![
        refusal(
            "an unknown path",
            Call::get("/nowhere"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "an unknown /v1 path, keyed",
            Call::post("/v1/nowhere").key(&app.org.admin_key),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "the root",
            Call::get("/"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        refusal(
            "a request target over the limit",
            Call::get(long_path).key(&app.org.admin_key),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
        refusal(
            "headers over the limit",
            Call::get("/v1/agents")
                .key(&app.org.admin_key)
                .header("x-padding", big_header),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        ),
        refusal(
            "a declared body over the limit, without a key",
            Call::post("/v1/keys")
                .header(
                    "content-length",
                    (sable_gateway::MAX_BODY_BYTES + 1).to_string(),
                )
                .body("{}"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ])
    .await
}
