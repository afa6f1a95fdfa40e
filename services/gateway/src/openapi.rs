//! `GET /v1/openapi.json`: the API's OpenAPI 3.1 document, generated from the handlers
//! themselves. Every route is registered through utoipa-axum's `routes!`, which takes
//! the path, method, parameters, bodies and responses from the handler's
//! `#[utoipa::path]` and the `ToSchema` types it reads and returns, so the router and
//! the document are built from one list and cannot drift apart.
//!
//! The errors every route of a kind can give (a bad key, a malformed body, an
//! unreachable database) are added here, once, rather than on each handler.

use std::sync::OnceLock;

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::routes::openai::OpenAiErrorBody;
use crate::{AppState, feishu, routes};

/// The name of the bearer scheme operations refer to.
pub(crate) const BEARER: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sable API",
        description = "Sable's HTTP API: messages and their turns, sessions, approvals, \
                       cron tasks, agents and tools, API keys, the audit trail, \
                       diagnostics, the OpenAI-compatible routes and Feishu ingress. \
                       Errors of Sable's own routes are `{\"error\":{\"code\",\"message\"}}`; \
                       the OpenAI-compatible routes answer errors in OpenAI's shape.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Security),
    components(schemas(ErrorBody, OpenAiErrorBody)),
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`sable_<prefix>_<secret>`) as `Authorization: Bearer <key>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route of the gateway with its document.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_json))
        .merge(routes::health::router())
        .merge(routes::messages::router())
        .merge(routes::openai::router())
        .merge(routes::turns::router())
        .merge(routes::sessions::router())
        .merge(routes::session_events::router())
        .merge(routes::approvals::router())
        .merge(routes::cron::router())
        .merge(routes::metrics::router())
        .merge(routes::diagnostics::router())
        .merge(routes::keys::router())
        .merge(routes::orgs::router())
        .merge(routes::quotas::router())
        .merge(routes::agents::router())
        .merge(routes::org_config::router())
        .merge(routes::mcp_servers::router())
        .merge(routes::tools::router())
        .merge(routes::audit::router())
        .merge(feishu::apps::router())
        .merge(feishu::ingress::router())
}

/// The document, built once per process.
pub(crate) fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = api().into_openapi();
        for item in document.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common_errors(operation);
            }
        }
        document
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)),
)]
async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

/// The errors any route of a kind can answer: 401 without a valid key; 400, 408, 413,
/// 415 and 422 for a body that is malformed, slow, large, not JSON or of the wrong
/// shape; 400 and 422 for a query that does not parse or validate; 503 when the
/// database is unreachable; 500 for a bug. Sable's own routes answer them as
/// [`ErrorBody`], the OpenAI-compatible ones as [`OpenAiErrorBody`] (which says 400
/// where Sable says 422).
fn add_common_errors(operation: &mut Operation) {
    let openai = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|tag| tag == "openai"));
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|security| !security.is_empty());
    let has_body = operation.request_body.is_some();
    let has_query = operation.parameters.as_ref().is_some_and(|parameters| {
        parameters.iter().any(|parameter| {
            matches!(
                parameter.parameter_in,
                utoipa::openapi::path::ParameterIn::Query
            )
        })
    });
    let mut statuses: Vec<(&str, &str)> = vec![("500", "A bug: the details are in the log")];
    if secured {
        statuses.push((
            "401",
            "No API key, or one that is unknown, expired or revoked",
        ));
        statuses.push((
            "403",
            "The key's role may not use this route (`permissions.rs`)",
        ));
        statuses.push(("503", "The database is unreachable; retry later"));
    }
    if has_body || has_query {
        statuses.push(("400", "The body is not JSON, or the query does not parse"));
        if !openai {
            statuses.push(("422", "The body or query is well-formed but invalid"));
        }
    }
    if has_body {
        statuses.push(("408", "The body did not arrive in time"));
        statuses.push(("413", "The body is larger than 256 KiB"));
        statuses.push(("415", "The body is declared as something other than JSON"));
    }
    let schema = if openai {
        "OpenAiErrorBody"
    } else {
        "ErrorBody"
    };
    for (status, description) in statuses {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_owned(), RefOr::T(response));
    }
}
