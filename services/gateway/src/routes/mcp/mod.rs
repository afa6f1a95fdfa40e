//! `/mcp`: the gateway as an MCP server over streamable HTTP. Each agent the caller's org
//! sees is a tool (`ask_<agent>`), each of the org's sessions a resource
//! (`sable://sessions/{id}`), each agent's system prompt a prompt named after the agent.
//!
//! Served stateless (no `Mcp-Session-Id`): every POST carries its own bearer key and is
//! answered by whichever gateway receives it, so replicas behind a load balancer need no
//! sticky sessions. The key is checked by [`require_key`] before rmcp sees the request;
//! the handler reads the caller from the request's parts rmcp hands it.

mod ask;
mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, Prompt, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};

use crate::auth::Authenticated;
use crate::{AppState, MAX_BODY_BYTES};

/// The MCP endpoint's path.
pub(crate) const PATH: &str = "/mcp";

/// `/mcp`, behind the bearer-key check.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let handler = SableMcp {
        state: state.clone(),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        server_config(),
    );
    Router::new()
        .route_service(PATH, service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ))
}

/// Stateless, answering with SSE (its keep-alive comments hold a long `ask_<agent>` open
/// through idle-timing proxies), bodies capped like every other route.
///
/// rmcp accepts only loopback `Host` headers by default, a guard against DNS rebinding for
/// servers that trust whoever reaches them. This endpoint trusts no one without an API
/// key, which a browser tricked by a rebound name never sends, so any `Host` is accepted
/// and a gateway works under whatever name a deployment gives it.
fn server_config() -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(false)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_BODY_BYTES)
}

/// Answers 401 (the API's JSON error, with `WWW-Authenticate: Bearer`) to a request without
/// a valid key before any MCP handling; otherwise puts the caller in the request's
/// extensions, where the handler finds it.
async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match Authenticated::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => {
            let mut response = error.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"sable\""),
                );
            }
            response
        }
    }
}

/// The MCP handler: one per request (stateless), sharing the gateway's state.
#[derive(Clone)]
struct SableMcp {
    state: AppState,
}

/// The HTTP request an MCP request came in, as rmcp passes it on.
fn http_parts(context: &RequestContext<RoleServer>) -> Option<&axum::http::request::Parts> {
    context.extensions.get::<axum::http::request::Parts>()
}

/// The caller [`require_key`] authenticated. Its absence is a wiring bug, answered as an
/// internal error rather than served unscoped.
fn caller_of(context: &RequestContext<RoleServer>) -> Result<Authenticated, ErrorData> {
    http_parts(context)
        .and_then(|parts| parts.extensions.get::<Authenticated>())
        .cloned()
        .ok_or_else(|| {
            tracing::error!("an MCP request reached the handler without an authenticated caller");
            ErrorData::internal_error("internal error", None)
        })
}

impl ServerHandler for SableMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("sable", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each ask_<agent> tool sends a message to that Sable agent and returns its reply \
             and the session_id; pass the session_id to continue the conversation. Sessions \
             are readable as sable://sessions/{id} resources; each agent's system prompt is a \
             prompt named after the agent.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = caller_of(&context)?;
        let tools = agents_of(&self.state, caller.org_id)
            .await?
            .iter()
            .map(|agent| ask::tool(agent))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = caller_of(&context)?;
        ask::call(&self.state, caller, request, &context)
            .await
            .map(CallToolResponse::Complete)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = caller_of(&context)?;
        let cursor = request.and_then(|request| request.cursor);
        sessions::list(&self.state, &caller, cursor.as_deref()).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        caller_of(&context)?;
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            sessions::template(),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = caller_of(&context)?;
        sessions::read(&self.state, &caller, &request.uri)
            .await
            .map(ReadResourceResponse::Complete)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = caller_of(&context)?;
        let prompts = agents_of(&self.state, caller.org_id)
            .await?
            .into_iter()
            .map(|agent| {
                Prompt::new(
                    agent.id.as_str(),
                    Some(agent_summary(&agent)),
                    None::<Vec<rmcp::model::PromptArgument>>,
                )
                .with_title(agent.name.clone())
            })
            .collect();
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let caller = caller_of(&context)?;
        let agent = agents_of(&self.state, caller.org_id)
            .await?
            .into_iter()
            .find(|agent| agent.id.as_str() == request.name)
            .ok_or_else(|| {
                ErrorData::invalid_params(format!("no prompt named '{}'", request.name), None)
            })?;
        // MCP prompts carry user and assistant messages only: the system prompt is sent
        // as the user's, for the client to place.
        let result = GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            agent.system_prompt.clone(),
        )])
        .with_description(format!("The system prompt of the agent '{}'", agent.id));
        Ok(GetPromptResponse::Complete(result))
    }
}

/// An agent's one-line description, or a sentence naming it when its file gives none.
fn agent_summary(agent: &sable_runtime::AgentDefinition) -> String {
    if agent.description.is_empty() {
        format!("The Sable agent '{}' ({})", agent.id, agent.name)
    } else {
        agent.description.clone()
    }
}

/// The agents the caller's org sees, as MCP answers them.
pub(super) async fn agents_of(
    state: &AppState,
    org_id: sable_core::OrgId,
) -> Result<Vec<std::sync::Arc<sable_runtime::AgentDefinition>>, ErrorData> {
    state
        .agents_of(org_id)
        .await
        .map_err(|error| ErrorData::internal_error(error.to_string(), None))
}
