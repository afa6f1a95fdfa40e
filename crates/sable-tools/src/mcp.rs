//! MCP tools in the registry: a gRPC client of the MCP sidecar that caches its catalog
//! by revision and offers each tool as `mcp__<server>__<tool>`. A turn of an org with
//! MCP servers of its own sends them with its listing and with each call to them, as its
//! configuration version has them; the sidecar answers with the shared servers' tools and
//! that org's, never another org's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sable_core::OrgId;
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
/// The same with servers of an org's own: the sidecar waits up to 5 s for one it opens
/// for the listing to answer its handshake.
const ORG_LIST_TIMEOUT: Duration = Duration::from_secs(8);
/// Orgs whose catalogs are cached at most (the least recently used goes first).
const MAX_CACHED_ORGS: usize = 1024;

/// One org's own MCP servers as a turn's configuration version has them (header values
/// included: the spec's `Debug` prints their names only).
#[derive(Debug, Clone)]
pub struct OrgMcpServers {
    pub org_id: OrgId,
    pub config_version: i64,
    pub servers: Arc<Vec<pb::McpServerSpec>>,
}

impl OrgMcpServers {
    fn to_proto(&self) -> pb::OrgServers {
        pb::OrgServers {
            org_id: self.org_id.to_string(),
            config_version: self.config_version,
            servers: self.servers.to_vec(),
        }
    }
}
/// The registry's bound on a call is the server's timeout plus this, so the sidecar's
/// own deadline (which cancels the MCP request) fires first.
const CALL_MARGIN: Duration = Duration::from_secs(2);

/// A handle on the sidecar: the catalog cache and the gRPC channel (one HTTP/2
/// connection, opened on first use and re-opened when it breaks).
#[derive(Clone)]
pub struct McpCatalog {
    client: McpSidecarClient<Channel>,
    /// The shared servers' catalog.
    cached: Arc<RwLock<Cached>>,
    /// Orgs with servers of their own: the shared tools and theirs, per org.
    orgs: Arc<RwLock<HashMap<OrgId, OrgCached>>>,
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

/// An org's catalog, valid for one configuration version.
struct OrgCached {
    config_version: i64,
    revision: u64,
    tools: Arc<BTreeMap<String, Arc<Registered>>>,
    used: Instant,
}

type Catalog = Arc<BTreeMap<String, Arc<Registered>>>;

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
            orgs: Arc::default(),
        })
    }

    /// The gRPC client, for callers that need the sidecar's other methods (status,
    /// servers).
    pub fn client(&self) -> McpSidecarClient<Channel> {
        self.client.clone()
    }

    /// The MCP tools as of the sidecar's current revision, for `org` (the shared servers'
    /// and the org's own); asks the sidecar whether its catalog changed and keeps the
    /// cached one when it did not or cannot answer.
    pub(crate) async fn current(&self, org: Option<&OrgMcpServers>) -> Catalog {
        match org {
            Some(org) if !org.servers.is_empty() => self.current_for_org(org).await,
            // An org without servers of its own still names itself, so the sidecar closes
            // what the org's earlier versions opened.
            _ => self.current_shared(org).await,
        }
    }

    async fn current_shared(&self, org: Option<&OrgMcpServers>) -> Catalog {
        let known = self.cached.read().expect("lock").revision;
        let request = pb::ListToolsRequest {
            known_revision: known,
            org: org.map(OrgMcpServers::to_proto),
        };
        match self.list(request, LIST_TIMEOUT).await {
            Ok(answer) => {
                if !answer.unchanged {
                    let tools = Arc::new(self.build(answer.tools, None));
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

    /// The shared tools and the org's own, cached per org for one configuration version:
    /// a turn of a newer version starts from revision 0, so it never sees the servers of
    /// an older one.
    async fn current_for_org(&self, org: &OrgMcpServers) -> Catalog {
        let known = self
            .orgs
            .read()
            .expect("lock")
            .get(&org.org_id)
            .filter(|cached| cached.config_version == org.config_version)
            .map_or(0, |cached| cached.revision);
        let request = pb::ListToolsRequest {
            known_revision: known,
            org: Some(org.to_proto()),
        };
        let fresh = match self.list(request, ORG_LIST_TIMEOUT).await {
            Ok(answer) if !answer.unchanged => Some((
                answer.revision,
                Arc::new(self.build(answer.tools, Some(org))),
            )),
            Ok(_) => None,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot list the MCP sidecar's tools for the org; using the cached catalog");
                None
            }
        };
        let mut orgs = self.orgs.write().expect("lock");
        if let Some((revision, tools)) = fresh {
            if orgs.len() >= MAX_CACHED_ORGS && !orgs.contains_key(&org.org_id) {
                forget_least_recently_used(&mut orgs);
            }
            orgs.insert(
                org.org_id,
                OrgCached {
                    config_version: org.config_version,
                    revision,
                    tools: tools.clone(),
                    used: Instant::now(),
                },
            );
            return tools;
        }
        if let Some(cached) = orgs
            .get_mut(&org.org_id)
            .filter(|cached| cached.config_version == org.config_version)
        {
            cached.used = Instant::now();
            return cached.tools.clone();
        }
        drop(orgs);
        // Nothing of this version is cached: the shared tools only, never an older
        // version's servers.
        self.cached.read().expect("lock").tools.clone()
    }

    async fn list(
        &self,
        request: pb::ListToolsRequest,
        timeout: Duration,
    ) -> Result<pb::ListToolsResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        tokio::time::timeout(timeout, self.client.clone().list_tools(request))
            .await
            .map_err(|_elapsed| tonic::Status::deadline_exceeded("no answer"))?
            .map(tonic::Response::into_inner)
    }

    fn build(
        &self,
        mut tools: Vec<pb::McpTool>,
        org: Option<&OrgMcpServers>,
    ) -> BTreeMap<String, Arc<Registered>> {
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
            // A tool of the org's own server carries the server's spec to every call.
            let org_server = match (tool.org, org) {
                (false, _) => None,
                (true, Some(org)) => {
                    let Some(spec) = org.servers.iter().find(|spec| spec.name == tool.server)
                    else {
                        tracing::warn!(server = %tool.server, tool = %tool.name, "the sidecar listed an org tool of a server the org does not have");
                        continue;
                    };
                    Some(OrgServer {
                        org_id: org.org_id,
                        config_version: org.config_version,
                        spec: spec.clone(),
                    })
                }
                (true, None) => continue,
            };
            let mcp_tool = McpTool {
                descriptor,
                server: tool.server.clone(),
                tool: tool.name.clone(),
                timeout_ms: tool.timeout_ms,
                client: self.client.clone(),
                org_server,
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

fn forget_least_recently_used(orgs: &mut HashMap<OrgId, OrgCached>) {
    if let Some(oldest) = orgs
        .iter()
        .min_by_key(|(_, cached)| cached.used)
        .map(|(org_id, _)| *org_id)
    {
        orgs.remove(&oldest);
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
    /// Set for a tool of the org's own server.
    org_server: Option<OrgServer>,
}

/// The org's server a tool belongs to, as the turn's configuration has it.
struct OrgServer {
    org_id: OrgId,
    config_version: i64,
    spec: pb::McpServerSpec,
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let org_id = self
            .org_server
            .as_ref()
            .map_or(context.org_id, |server| server.org_id);
        let mut request = tonic::Request::new(pb::CallToolRequest {
            server: self.server.clone(),
            tool: self.tool.clone(),
            arguments_json: arguments.to_string(),
            deadline_ms: self.timeout_ms,
            org_id: org_id.to_string(),
            org_server: self.org_server.as_ref().map(|server| server.spec.clone()),
            org_config_version: self
                .org_server
                .as_ref()
                .map_or(0, |server| server.config_version),
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
            org: false,
        };
        let forwards = catalog.build(vec![tool("a", "x.y"), tool("a", "x_y")], None);
        let backwards = catalog.build(vec![tool("a", "x_y"), tool("a", "x.y")], None);
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
