//! The web console at `/console`: plain HTML, CSS and JavaScript modules compiled into
//! the binary (no build step, nothing to go stale), talking to the public `/v1` API with
//! the key the user signs in with.
//!
//! Every file under `services/gateway/console/` is listed in [`ASSETS`] (a test fails on
//! one that is not); the browser test of `tests/e2e/console.rs` drives the pages.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::{ApiError, AppState};

/// One embedded file: its path under `/console/`, its content type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../console/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the console, as served.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("live.js", JS),
    asset!("pages/signin.js", JS),
    asset!("pages/sessions.js", JS),
    asset!("pages/session.js", JS),
    asset!("pages/turn.js", JS),
    asset!("pages/approvals.js", JS),
    asset!("pages/cron.js", JS),
    asset!("pages/audit.js", JS),
    asset!("pages/agents.js", JS),
    asset!("pages/runtime.js", JS),
    asset!("pages/keys.js", JS),
];

/// Scripts, styles and API calls from this origin only; no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { serve("index.html") }))
        .route("/console/{*path}", get(asset))
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        return ApiError::NotFound("console file").into_response();
    };
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Small files, revalidated each load: a new binary's console shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::{ASSETS, CSS, HTML, JS};

    fn files_under(dir: &Path, prefix: &str, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("the console folder reads") {
            let entry = entry.expect("a folder entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.path().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), found);
            } else {
                found.insert(name);
            }
        }
    }

    #[test]
    fn every_file_of_the_console_folder_is_served_and_nothing_else() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = BTreeSet::new();
        files_under(&dir, "", &mut on_disk);
        let served: BTreeSet<String> = ASSETS.iter().map(|asset| asset.path.to_owned()).collect();
        assert_eq!(served, on_disk);
        assert!(served.len() >= 10, "checked {} files", served.len());
    }

    #[test]
    fn each_file_has_the_content_type_of_its_extension() {
        for asset in ASSETS {
            let expected = match asset.path.rsplit_once('.').map(|(_, ext)| ext) {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                other => panic!("{}: no content type for {other:?}", asset.path),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.path);
        }
    }
}
