//! Who may call what: one rule per route and method, the only place access is decided.
//!
//! [`enforce`] runs before every matched route. A route with no rule here is refused to
//! everyone (403), so a new route cannot ship open by forgetting its rule; a test walks
//! [`RULES`] with a key of every role. Handlers still scope every query by the caller's
//! org: the table says which role may call a route, the org scoping which rows it sees.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sable_core::Role;

use crate::auth::Authenticated;
use crate::{ApiError, AppState};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key: probes, metrics, and channel callbacks that verify their own signatures.
    Public,
    /// A key of at least this role; it acts within its own org (a platform key within the
    /// platform org, unless the route names an org).
    AtLeast(Role),
}

/// The access one method of one route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    /// The route as the router declares it (`/v1/turns/{turn_id}`).
    pub path: &'static str,
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::AtLeast(Role::Viewer);
const MEMBER: Access = Access::AtLeast(Role::Member);
const OPERATOR: Access = Access::AtLeast(Role::Operator);
const ADMIN: Access = Access::AtLeast(Role::Admin);
const PLATFORM: Access = Access::AtLeast(Role::Platform);

/// Every route the gateway serves, with the access each method needs.
pub const RULES: &[Rule] = &[
    rule("GET", "/healthz", PUBLIC),
    rule("GET", "/readyz", PUBLIC),
    rule("GET", "/metrics", PUBLIC),
    rule("GET", "/v1/openapi.json", PUBLIC),
    rule("POST", "/v1/channels/feishu/{app_id}/events", PUBLIC),
    rule("POST", "/v1/channels/feishu/{app_id}/card", PUBLIC),
    // The web console's assets (its calls are `/v1` routes with the signed-in key).
    rule("GET", "/console", PUBLIC),
    rule("GET", "/console/", PUBLIC),
    rule("GET", "/console/{*path}", PUBLIC),
    // Who the caller is: every key may ask.
    rule("GET", "/v1/me", VIEWER),
    // Chat.
    rule("POST", "/v1/messages", MEMBER),
    rule("POST", "/v1/chat/completions", MEMBER),
    rule("POST", "/v1/responses", MEMBER),
    rule("GET", "/v1/responses/{response_id}", VIEWER),
    rule("GET", "/v1/models", VIEWER),
    rule("GET", "/v1/models/{model}", VIEWER),
    // Agents as MCP tools, sessions as resources (`routes::mcp`): asking an agent chats.
    rule("POST", "/mcp", MEMBER),
    // Reading the org's conversations and their work.
    rule("GET", "/v1/sessions", VIEWER),
    rule("GET", "/v1/sessions/{session_id}/messages", VIEWER),
    rule("GET", "/v1/sessions/{session_id}/events", VIEWER),
    rule("GET", "/v1/turns/{turn_id}", VIEWER),
    rule("GET", "/v1/agents", VIEWER),
    // The org's own configuration: anyone reads it (providers: admins), admins change it.
    rule("GET", "/v1/agents/{agent_id}", VIEWER),
    rule("PUT", "/v1/agents/{agent_id}", ADMIN),
    rule("DELETE", "/v1/agents/{agent_id}", ADMIN),
    rule("GET", "/v1/model-profiles", VIEWER),
    rule("PUT", "/v1/model-profiles/{name}", ADMIN),
    rule("DELETE", "/v1/model-profiles/{name}", ADMIN),
    rule("GET", "/v1/providers", ADMIN),
    rule("PUT", "/v1/providers/{name}", ADMIN),
    rule("DELETE", "/v1/providers/{name}", ADMIN),
    rule("GET", "/v1/org-settings", VIEWER),
    rule("PUT", "/v1/org-settings", ADMIN),
    rule("GET", "/v1/tools", VIEWER),
    rule("GET", "/v1/mcp/servers", VIEWER),
    // The org's own MCP servers: admins only (a server's URL may carry a token).
    rule("GET", "/v1/mcp-servers", ADMIN),
    rule("PUT", "/v1/mcp-servers/{name}", ADMIN),
    rule("DELETE", "/v1/mcp-servers/{name}", ADMIN),
    // Approvals: anyone reads them, operators decide.
    rule("GET", "/v1/approvals", VIEWER),
    rule("POST", "/v1/approvals/{approval_id}", OPERATOR),
    // Cron: anyone reads tasks and previews schedules, operators manage and run them.
    rule("GET", "/v1/cron/tasks", VIEWER),
    rule("POST", "/v1/cron/tasks", OPERATOR),
    rule("GET", "/v1/cron/tasks/{id}", VIEWER),
    rule("PATCH", "/v1/cron/tasks/{id}", OPERATOR),
    rule("DELETE", "/v1/cron/tasks/{id}", OPERATOR),
    rule("POST", "/v1/cron/tasks/{id}/run", OPERATOR),
    rule("GET", "/v1/cron/tasks/{id}/runs", VIEWER),
    rule("POST", "/v1/cron/preview", VIEWER),
    // The audit trail.
    rule("GET", "/v1/audit", OPERATOR),
    rule("GET", "/v1/audit/export", OPERATOR),
    // The org's keys and channels.
    rule("GET", "/v1/keys", ADMIN),
    rule("POST", "/v1/keys", ADMIN),
    rule("DELETE", "/v1/keys/{prefix}", ADMIN),
    rule("GET", "/v1/channels/feishu/apps", ADMIN),
    rule("POST", "/v1/channels/feishu/apps", ADMIN),
    rule("DELETE", "/v1/channels/feishu/apps/{app_id}", ADMIN),
    // Orgs: an org's admins see and manage their own org's keys; the platform every org.
    rule("GET", "/v1/orgs", VIEWER),
    rule("POST", "/v1/orgs", PLATFORM),
    rule("GET", "/v1/orgs/{org_id}", VIEWER),
    rule("GET", "/v1/orgs/{org_id}/keys", ADMIN),
    rule("POST", "/v1/orgs/{org_id}/keys", ADMIN),
    rule("DELETE", "/v1/orgs/{org_id}/keys/{prefix}", ADMIN),
    // Quotas: an org reads its own limits and usage; only the platform sets limits (an
    // org's owner must not raise its own).
    rule("GET", "/v1/orgs/{org_id}/quotas", VIEWER),
    rule("PUT", "/v1/orgs/{org_id}/quotas", PLATFORM),
    rule("GET", "/v1/usage", VIEWER),
    // The deployment's processes and queues.
    rule("GET", "/v1/diagnostics/runtime", ADMIN),
];

/// The rule of `method` on `path`; HEAD is GET's.
pub fn find(method: &Method, path: &str) -> Option<&'static Rule> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    RULES
        .iter()
        .find(|rule| rule.path == path && rule.method == method)
}

/// Applies [`RULES`] to a matched request: public routes pass, the others authenticate
/// the key (handlers then take the caller from the request) and check its role. A route
/// with rules for other methods only is left to the router's 405.
pub(crate) async fn enforce(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(path) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let access = match find(request.method(), &path) {
        Some(rule) => rule.access,
        None if RULES.iter().any(|rule| rule.path == path) => return next.run(request).await,
        None => {
            tracing::error!(route = %path, "a route without a permission rule is refused");
            return ApiError::NoRule.into_response();
        }
    };
    let Access::AtLeast(needed) = access else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let caller = match Authenticated::from_request_parts(&mut parts, &state).await {
        Ok(caller) => caller,
        Err(error) => return refusal(&path, error),
    };
    if !caller.role.allows(needed) {
        return refusal(&path, ApiError::Forbidden(needed));
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

/// A refusal in the shape of the route's door: OpenAI's error object on the
/// OpenAI-compatible routes (found by schemathesis: their 401 was Sable's shape), Sable's
/// own everywhere else.
fn refusal(path: &str, error: ApiError) -> Response {
    if crate::routes::openai::is_openai_route(path) {
        crate::routes::openai::OpenAiError::from(error).into_response()
    } else {
        error.into_response()
    }
}
