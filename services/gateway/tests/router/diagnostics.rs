//! `GET /v1/diagnostics/runtime`, for admin keys (`routes/diagnostics.rs`).

use axum::http::Method;

use crate::support::{Backend, Call, TestApp, forbidden, unauthorized, wrong_method};

#[tokio::test]
async fn runtime_diagnostics_refuse_bad_keys_member_keys_and_other_methods() -> anyhow::Result<()> {
    let app = TestApp::spawn(Backend::Sqlite).await?;
    let mut refusals = unauthorized(&app, &Method::GET, "/v1/diagnostics/runtime", None);
    refusals.extend([
        forbidden(&app, Call::get("/v1/diagnostics/runtime")),
        wrong_method(&app, Method::POST, "/v1/diagnostics/runtime"),
    ]);

    app.assert_refused(refusals).await?;

    let view = app
        .accepted(Call::get("/v1/diagnostics/runtime").key(&app.org.admin_key))
        .await?;
    assert_eq!(view.body["bus"]["connected"], true);
    assert_eq!(view.body["mcp"]["status"], "not_configured");
    Ok(())
}
