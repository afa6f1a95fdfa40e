//! `GET /v1/me`: who the presented key is (its org, name and role), so a client such as
//! the web console can show what the key may do without trying it.

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Authenticated;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/me", get(me))
}

async fn me(caller: Authenticated) -> Json<Value> {
    let key_id = caller.actor.id.strip_prefix("key:").unwrap_or_default();
    Json(json!({
        "org_id": caller.org_id,
        "key": {"id": key_id, "name": caller.actor.name},
        // The role model is `admin` or `member` for now; clients branch on this string.
        "role": if caller.admin { "admin" } else { "member" },
    }))
}
