//! The gRPC service workers call: `sable.v1.McpSidecar`, mapping MCP results and errors
//! onto the proto contract. A request for an org is served the shared servers and the
//! org's own servers it carries (`orgs.rs`), never another org's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::JsonObject;
use sable_proto::v1 as pb;
use sable_proto::v1::mcp_sidecar_server::McpSidecar;
use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::connection::{CallError, Server};
use crate::orgs::OrgConnections;

/// How long a listing waits for an org's servers opened for it to answer their first
/// handshake, so the first turn after a change is offered their tools.
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(5);

/// Every server, shared by the supervisors and the gRPC handlers.
pub(crate) struct Servers {
    /// The shared servers of `config/mcp.toml`.
    pub by_name: BTreeMap<String, Arc<Server>>,
    pub revision: Arc<AtomicU64>,
    /// Orgs' own servers, by org.
    pub orgs: Arc<OrgConnections>,
}

impl Servers {
    fn get(&self, name: &str) -> Result<&Arc<Server>, Status> {
        self.by_name
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no MCP server named '{name}'")))
    }

    /// The server a call goes to: the org's own when the call carries its spec (and no
    /// shared server has that name), else the shared one of that name.
    fn for_call(&self, call: &pb::CallToolRequest) -> Result<(Arc<Server>, bool), Status> {
        match &call.org_server {
            Some(spec)
                if spec.name == call.server
                    && !call.org_id.is_empty()
                    && !self.by_name.contains_key(&spec.name) =>
            {
                let server = self
                    .orgs
                    .server_for_call(&call.org_id, spec)
                    .map_err(|error| Status::invalid_argument(error.to_string()))?;
                Ok((server, true))
            }
            _ => Ok((self.get(&call.server)?.clone(), false)),
        }
    }
}

/// Waits for the first handshake of each server, all within one bound.
async fn first_attempts(servers: &[Arc<Server>], limit: Duration) {
    let until = Instant::now() + limit;
    for server in servers {
        let left = until.saturating_duration_since(Instant::now());
        server.first_attempt(left.min(server.config.timeout)).await;
    }
}

/// The proto view of one tool of `server`.
fn tool_of(server: &Server, tool: &rmcp::model::Tool, org: bool) -> pb::McpTool {
    pb::McpTool {
        server: server.name().to_owned(),
        name: tool.name.to_string(),
        description: tool.description.as_deref().unwrap_or_default().to_owned(),
        input_schema_json: Value::Object((*tool.input_schema).clone()).to_string(),
        idempotent: server.config.is_idempotent(&tool.name),
        timeout_ms: u64::try_from(server.config.timeout.as_millis()).unwrap_or(u64::MAX),
        output_schema_json: tool
            .output_schema
            .as_ref()
            .map(|schema| Value::Object((**schema).clone()).to_string()),
        org,
    }
}

pub(crate) struct SidecarService {
    pub servers: Arc<Servers>,
}

fn status_of(error: CallError) -> Status {
    let message = error.to_string();
    match error {
        CallError::NotConnected(_) => Status::unavailable(message),
        CallError::UnknownTool { .. } => Status::not_found(message),
        CallError::Deadline(_) => Status::deadline_exceeded(message),
        CallError::Failed { .. } => Status::internal(message),
    }
}

/// The span of one call in the sidecar, continuing the caller's `traceparent`.
fn call_span<T>(request: &Request<T>, server: &str, tool: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "mcp call",
        otel.name = format!("mcp call {server}/{tool}").as_str(),
        mcp.server = server,
        mcp.tool = tool,
        sable.mcp.outcome = tracing::field::Empty,
    );
    if let Some(parent) = request
        .metadata()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(sable_telemetry::TraceContext::parse)
    {
        sable_telemetry::genai::set_parent(&span, &parent, &Default::default());
    }
    span
}

fn json_object(text: &str) -> Result<Option<JsonObject>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(Status::invalid_argument("arguments must be a JSON object")),
        Err(error) => Err(Status::invalid_argument(format!(
            "arguments are not valid JSON: {error}"
        ))),
    }
}

/// One MCP content block (any type) in the proto's shape.
pub(crate) fn content_block(value: Value) -> pb::ContentBlock {
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let resource = value.get("resource");
    let from_resource = |name: &str| {
        resource
            .and_then(|resource| resource.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    pb::ContentBlock {
        kind: field("type").unwrap_or_default(),
        text: field("text").or_else(|| from_resource("text")),
        mime_type: field("mimeType").or_else(|| from_resource("mimeType")),
        data: field("data").or_else(|| from_resource("blob")),
        uri: field("uri").or_else(|| from_resource("uri")),
        json: value.to_string(),
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[tonic::async_trait]
impl McpSidecar for SidecarService {
    async fn list_servers(
        &self,
        _request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let servers = self
            .servers
            .by_name
            .values()
            .map(|server| {
                let view = server.view();
                pb::McpServer {
                    name: server.name().to_owned(),
                    transport: server.config.transport.kind().to_owned(),
                    state: view.state.as_str().to_owned(),
                    tool_count: u32::try_from(view.tool_count).unwrap_or(u32::MAX),
                    last_error: view.last_error,
                }
            })
            .collect();
        Ok(Response::new(pb::ListServersResponse { servers }))
    }

    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        // The org's servers first: opening one moves the revision.
        let org_servers = match &request.get_ref().org {
            Some(org) => {
                let shared = &self.servers.by_name;
                let servers = self
                    .servers
                    .orgs
                    .servers_for(org, |name| shared.contains_key(name));
                first_attempts(&servers, FIRST_ATTEMPT_WAIT).await;
                servers
            }
            None => Vec::new(),
        };
        // Read the revision before the tools: a change racing this listing makes the
        // caller ask again.
        let revision = self.servers.revision.load(Ordering::SeqCst);
        if request.get_ref().known_revision == revision {
            return Ok(Response::new(pb::ListToolsResponse {
                revision,
                unchanged: true,
                tools: Vec::new(),
            }));
        }
        let mut tools = Vec::new();
        for server in self.servers.by_name.values() {
            for tool in server.tools().iter() {
                tools.push(tool_of(server, tool, false));
            }
        }
        for server in &org_servers {
            for tool in server.tools().iter() {
                tools.push(tool_of(server, tool, true));
            }
        }
        Ok(Response::new(pb::ListToolsResponse {
            revision,
            unchanged: false,
            tools,
        }))
    }

    async fn call_tool(
        &self,
        request: Request<pb::CallToolRequest>,
    ) -> Result<Response<pb::CallToolResponse>, Status> {
        let span = call_span(&request, &request.get_ref().server, &request.get_ref().tool);
        let call = request.into_inner();
        let (server, is_org_server) = self.servers.for_call(&call)?;
        let arguments = json_object(&call.arguments_json)?;
        let deadline = (call.deadline_ms > 0).then(|| Duration::from_millis(call.deadline_ms));
        if is_org_server {
            // A call may reach a replica that has not opened the org's server yet.
            let limit = deadline.unwrap_or(server.config.timeout);
            server.first_attempt(limit).await;
        }
        let outcome = server
            .call_tool(&call.tool, arguments, deadline)
            .instrument(span.clone())
            .await;
        let result = match outcome {
            Ok(result) => result,
            Err(error) => {
                span.record("sable.mcp.outcome", "error");
                tracing::info!(parent: &span, server = %call.server, tool = %call.tool, org_id = %call.org_id, %error, "MCP call failed");
                return Err(status_of(error));
            }
        };
        let is_error = result.is_error == Some(true);
        span.record(
            "sable.mcp.outcome",
            if is_error { "is_error" } else { "ok" },
        );
        Ok(Response::new(pb::CallToolResponse {
            content: result
                .content
                .iter()
                .map(|block| content_block(to_json(block)))
                .collect(),
            structured_content_json: result.structured_content.as_ref().map(Value::to_string),
            is_error,
        }))
    }

    async fn list_resources(
        &self,
        request: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let server = self.servers.get(&request.get_ref().server)?;
        let resources = server.list_resources().await.map_err(status_of)?;
        let resources = resources
            .iter()
            .map(|resource| {
                let value = to_json(resource);
                let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
                pb::McpResource {
                    uri: field("uri").unwrap_or_default(),
                    name: field("name").unwrap_or_default(),
                    description: field("description"),
                    mime_type: field("mimeType"),
                }
            })
            .collect();
        Ok(Response::new(pb::ListResourcesResponse { resources }))
    }

    async fn read_resource(
        &self,
        request: Request<pb::ReadResourceRequest>,
    ) -> Result<Response<pb::ReadResourceResponse>, Status> {
        let request = request.into_inner();
        let server = self.servers.get(&request.server)?;
        let result = server
            .read_resource(&request.uri)
            .await
            .map_err(status_of)?;
        let contents = result
            .contents
            .iter()
            .map(|contents| {
                let value = to_json(contents);
                let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
                pb::ResourceContents {
                    uri: field("uri").unwrap_or_default(),
                    mime_type: field("mimeType"),
                    text: field("text"),
                    blob: field("blob"),
                }
            })
            .collect();
        Ok(Response::new(pb::ReadResourceResponse { contents }))
    }

    async fn list_prompts(
        &self,
        request: Request<pb::ListPromptsRequest>,
    ) -> Result<Response<pb::ListPromptsResponse>, Status> {
        let server = self.servers.get(&request.get_ref().server)?;
        let prompts = server.list_prompts().await.map_err(status_of)?;
        let prompts = prompts
            .iter()
            .map(|prompt| pb::McpPrompt {
                name: prompt.name.clone(),
                description: prompt.description.clone(),
                arguments: prompt
                    .arguments
                    .iter()
                    .flatten()
                    .map(|argument| pb::PromptArgument {
                        name: argument.name.clone(),
                        description: argument.description.clone(),
                        required: argument.required == Some(true),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListPromptsResponse { prompts }))
    }

    async fn get_prompt(
        &self,
        request: Request<pb::GetPromptRequest>,
    ) -> Result<Response<pb::GetPromptResponse>, Status> {
        let request = request.into_inner();
        let server = self.servers.get(&request.server)?;
        let arguments = request
            .arguments
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect();
        let result = server
            .get_prompt(&request.name, arguments)
            .await
            .map_err(status_of)?;
        let messages = result
            .messages
            .iter()
            .map(|message| {
                let value = to_json(message);
                pb::PromptMessage {
                    role: value["role"].as_str().unwrap_or_default().to_owned(),
                    content: Some(content_block(value["content"].clone())),
                }
            })
            .collect();
        Ok(Response::new(pb::GetPromptResponse {
            description: result.description.clone(),
            messages,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let servers = self
            .servers
            .by_name
            .values()
            .map(|server| {
                let view = server.view();
                pb::ServerStatus {
                    name: server.name().to_owned(),
                    transport: server.config.transport.kind().to_owned(),
                    state: view.state.as_str().to_owned(),
                    last_error: view.last_error,
                    tool_count: u32::try_from(view.tool_count).unwrap_or(u32::MAX),
                    calls: view.calls,
                    errors: view.errors,
                    p50_ms: view.p50_ms,
                    p99_ms: view.p99_ms,
                    reconnects: view.reconnects,
                }
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            servers,
            revision: self.servers.revision.load(Ordering::SeqCst),
            org_connections: u32::try_from(self.servers.orgs.count()).unwrap_or(u32::MAX),
        }))
    }
}
