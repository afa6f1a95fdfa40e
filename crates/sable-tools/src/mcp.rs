//! MCP tools in the registry: a gRPC client of the MCP sidecar that caches its catalog
//! by revision and offers each tool as `mcp__<server>__<tool>`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sable_proto::v1 as pb;
use sable_proto::v1::mcp_sidecar_client::McpSidecarClient;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::registry::Registered;
use crate::{Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk, ToolSource};

/// The providers' rule for tool names: `^[a-zA-Z0-9_-]{1,64}$`.
const MAX_NAME_LEN: usize = 64;
/// How long asking the sidecar for its catalog may take before the cached one is used.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);
/// The registry's bound on a call is the server's timeout plus this, so the sidecar's
/// own deadline (which cancels the MCP request) fires first.
const CALL_MARGIN: Duration = Duration::from_secs(2);

/// A handle on the sidecar: the catalog cache and the gRPC channel (one HTTP/2
/// connection, opened on first use and re-opened when it breaks).
#[derive(Clone)]
pub struct McpCatalog {
    client: McpSidecarClient<Channel>,
    cached: Arc<RwLock<Cached>>,
}

impl std::fmt::Debug for McpCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpCatalog").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cached {
    revision: u64,
    tools: Arc<BTreeMap<String, Arc<Registered>>>,
}

/// The sidecar's URL was not a URL.
#[derive(Debug, thiserror::Error)]
#[error("invalid MCP sidecar URL '{url}': {message}")]
pub struct InvalidSidecarUrl {
    pub url: String,
    pub message: String,
}

impl McpCatalog {
    /// A client of the sidecar at `url` (e.g. `http://127.0.0.1:50051`); connects lazily,
    /// so a sidecar that is down only makes calls fail.
    pub fn connect_lazy(url: &str) -> Result<Self, InvalidSidecarUrl> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|error| InvalidSidecarUrl {
                url: url.to_owned(),
                message: error.to_string(),
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        Ok(Self {
            client: McpSidecarClient::new(endpoint.connect_lazy()),
            cached: Arc::default(),
        })
    }

    /// The gRPC client, for callers that need the sidecar's other methods (status,
    /// servers).
    pub fn client(&self) -> McpSidecarClient<Channel> {
        self.client.clone()
    }

    /// The MCP tools as of the sidecar's current revision; asks the sidecar whether its
    /// catalog changed and keeps the cached one when it did not or cannot answer.
    pub(crate) async fn current(&self) -> Arc<BTreeMap<String, Arc<Registered>>> {
        let known = self.cached.read().expect("lock").revision;
        let mut request = tonic::Request::new(pb::ListToolsRequest {
            known_revision: known,
        });
        request.set_timeout(LIST_TIMEOUT);
        let answer = tokio::time::timeout(LIST_TIMEOUT, self.client.clone().list_tools(request))
            .await
            .map_err(|_elapsed| tonic::Status::deadline_exceeded("no answer"))
            .and_then(|answer| answer);
        match answer {
            Ok(answer) => {
                let answer = answer.into_inner();
                if !answer.unchanged {
                    let tools = Arc::new(self.build(answer.tools));
                    let mut cached = self.cached.write().expect("lock");
                    cached.revision = answer.revision;
                    cached.tools = tools;
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot list the MCP sidecar's tools; using the cached catalog");
            }
        }
        self.cached.read().expect("lock").tools.clone()
    }

    fn build(&self, mut tools: Vec<pb::McpTool>) -> BTreeMap<String, Arc<Registered>> {
        tools.sort_by(|a, b| (&a.server, &a.name).cmp(&(&b.server, &b.name)));
        let mut registered = BTreeMap::new();
        for tool in tools {
            let name = unique_name(&tool_name(&tool.server, &tool.name), &registered);
            if name != format!("mcp__{}__{}", tool.server, tool.name) {
                tracing::info!(server = %tool.server, tool = %tool.name, offered_as = %name, "MCP tool renamed to fit the providers' name rules");
            }
            let parameters = serde_json::from_str::<Value>(&tool.input_schema_json)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            let descriptor = ToolDescriptor {
                name: name.clone(),
                description: tool.description.clone(),
                parameters,
                source: ToolSource::Mcp,
                risk: ToolRisk::Medium,
                idempotent: tool.idempotent,
                timeout: Duration::from_millis(tool.timeout_ms) + CALL_MARGIN,
            };
            let mcp_tool = McpTool {
                descriptor,
                server: tool.server.clone(),
                tool: tool.name.clone(),
                timeout_ms: tool.timeout_ms,
                client: self.client.clone(),
            };
            match Registered::new(Arc::new(mcp_tool)) {
                Ok(entry) => {
                    registered.insert(name, Arc::new(entry));
                }
                Err(error) => {
                    tracing::warn!(server = %tool.server, tool = %tool.name, %error, "MCP tool left out");
                }
            }
        }
        registered
    }
}

/// `mcp__<server>__<tool>` with every character the providers refuse replaced by `_`,
/// cut to 64 characters (with a hash of the full name, so cut names stay distinct).
pub fn tool_name(server: &str, tool: &str) -> String {
    let full = format!("mcp__{server}__{tool}");
    let clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= MAX_NAME_LEN {
        return clean;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()) & 0xffff_ffff);
    format!("{}_{hash}", &clean[..MAX_NAME_LEN - 9])
}

/// `name`, or `name_2`, `name_3`, … (within the length limit) when it is taken.
fn unique_name(name: &str, taken: &BTreeMap<String, Arc<Registered>>) -> String {
    if !taken.contains_key(name) {
        return name.to_owned();
    }
    (2..)
        .map(|n| {
            let suffix = format!("_{n}");
            let keep = name.len().min(MAX_NAME_LEN - suffix.len());
            format!("{}{suffix}", &name[..keep])
        })
        .find(|candidate| !taken.contains_key(candidate))
        .map(|candidate| {
            tracing::warn!(name, resolved = %candidate, "two MCP tools sanitise to one name");
            candidate
        })
        .expect("some suffix is free")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One MCP tool, called through the sidecar.
struct McpTool {
    descriptor: ToolDescriptor,
    server: String,
    tool: String,
    timeout_ms: u64,
    client: McpSidecarClient<Channel>,
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let mut request = tonic::Request::new(pb::CallToolRequest {
            server: self.server.clone(),
            tool: self.tool.clone(),
            arguments_json: arguments.to_string(),
            deadline_ms: self.timeout_ms,
            org_id: context.org_id.to_string(),
        });
        // The sidecar's span for the call joins the turn's trace.
        if let Some(parent) = sable_telemetry::genai::trace_context_of(&tracing::Span::current())
            && let Ok(value) = parent.to_string().parse()
        {
            request.metadata_mut().insert("traceparent", value);
        }
        let response = self
            .client
            .clone()
            .call_tool(request)
            .await
            .map_err(|status| self.unavailable(&status))?
            .into_inner();
        let text = render(&response);
        if response.is_error {
            Err(ToolError::Failed(text))
        } else {
            Ok(text)
        }
    }
}

impl McpTool {
    /// A call that produced no MCP result, as the model reads it.
    fn unavailable(&self, status: &tonic::Status) -> ToolError {
        let server = &self.server;
        tracing::warn!(server, tool = %self.tool, code = ?status.code(), message = status.message(), "MCP call failed");
        match status.code() {
            tonic::Code::DeadlineExceeded => ToolError::Failed(format!(
                "the MCP server '{server}' did not answer in time; the call was cancelled"
            )),
            tonic::Code::NotFound => ToolError::Failed(format!(
                "the MCP server '{server}' no longer offers '{}'",
                self.tool
            )),
            tonic::Code::InvalidArgument => {
                ToolError::InvalidArguments(status.message().to_owned())
            }
            tonic::Code::Unavailable if status.message().contains("not connected") => {
                ToolError::Failed(format!(
                    "the MCP server '{server}' is not connected right now; try again later"
                ))
            }
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                ToolError::Failed(
                    "the MCP sidecar cannot be reached right now; try again later".into(),
                )
            }
            _ => ToolError::Failed(format!(
                "the MCP server '{server}' failed the call: {}",
                status.message()
            )),
        }
    }
}

/// The text the model reads: text blocks, a line for each other block, or the
/// structured content when there is nothing else.
fn render(response: &pb::CallToolResponse) -> String {
    let mut parts: Vec<String> = response
        .content
        .iter()
        .map(
            |block| match (block.kind.as_str(), &block.text, &block.uri) {
                (_, Some(text), _) => text.clone(),
                ("image" | "audio", None, _) => format!(
                    "[{} {}]",
                    block.kind,
                    block.mime_type.as_deref().unwrap_or("of unknown type")
                ),
                (kind, None, Some(uri)) => format!("[{kind} {uri}]"),
                (_, None, None) => block.json.clone(),
            },
        )
        .collect();
    if parts.is_empty()
        && let Some(structured) = &response.structured_content_json
    {
        parts.push(structured.clone());
    }
    if parts.is_empty() {
        return "(the tool returned no content)".into();
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_providers_rules() {
        assert_eq!(
            tool_name("time", "get_current_time"),
            "mcp__time__get_current_time"
        );
        assert_eq!(
            tool_name("docs", "search.v2 (beta)"),
            "mcp__docs__search_v2__beta_"
        );
        let long = tool_name("server", &"x".repeat(100));
        assert_eq!(long.len(), 64);
        assert_ne!(long, tool_name("server", &"x".repeat(101)));
        let pattern = regex_lite_check(&long);
        assert!(pattern, "{long}");
    }

    fn regex_lite_check(name: &str) -> bool {
        (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[tokio::test]
    async fn collisions_resolve_deterministically() {
        let catalog = McpCatalog::connect_lazy("http://127.0.0.1:1").unwrap();
        let tool = |server: &str, name: &str| pb::McpTool {
            server: server.into(),
            name: name.into(),
            description: String::new(),
            input_schema_json: r#"{"type":"object"}"#.into(),
            idempotent: false,
            timeout_ms: 1000,
            output_schema_json: None,
        };
        let forwards = catalog.build(vec![tool("a", "x.y"), tool("a", "x_y")]);
        let backwards = catalog.build(vec![tool("a", "x_y"), tool("a", "x.y")]);
        let names: Vec<&String> = forwards.keys().collect();
        assert_eq!(names, ["mcp__a__x_y", "mcp__a__x_y_2"]);
        assert_eq!(
            forwards.keys().collect::<Vec<_>>(),
            backwards.keys().collect::<Vec<_>>()
        );
        let first = forwards["mcp__a__x_y"].tool.descriptor();
        assert_eq!(first.source, ToolSource::Mcp);
    }

    #[test]
    fn results_render_text_then_structured_content() {
        let block = |kind: &str, text: Option<&str>| pb::ContentBlock {
            kind: kind.into(),
            text: text.map(str::to_owned),
            mime_type: Some("image/png".into()),
            data: None,
            uri: None,
            json: "{}".into(),
        };
        let response = pb::CallToolResponse {
            content: vec![block("text", Some("one")), block("image", None)],
            structured_content_json: Some(r#"{"a":1}"#.into()),
            is_error: false,
        };
        assert_eq!(render(&response), "one\n[image image/png]");
        let structured_only = pb::CallToolResponse {
            content: vec![],
            structured_content_json: Some(r#"{"a":1}"#.into()),
            is_error: false,
        };
        assert_eq!(render(&structured_only), r#"{"a":1}"#);
    }
}
