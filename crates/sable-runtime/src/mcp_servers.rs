//! An org's own MCP servers: the item's spec (streamable HTTP only, never a command), its
//! headers sealed apart, and the specs a turn sends the MCP sidecar.

use std::collections::BTreeMap;

use sable_core::OrgId;
use sable_proto::v1 as pb;
use sable_store::{ConfigItem, ConfigKind, SecretsKey};
use serde::{Deserialize, Serialize};

use crate::agents::field_error;
use crate::org_config::{OrgConfigError, check_base_url};

/// The most headers one server may send.
pub const MAX_MCP_HEADERS: usize = 32;
/// The longest header value accepted.
pub const MAX_MCP_HEADER_VALUE_BYTES: usize = 8192;
/// The longest per-call timeout an org may give its server.
pub const MAX_MCP_TIMEOUT_MS: u64 = 300_000;
/// The most concurrent calls an org may ask of one server.
pub const MAX_MCP_CONCURRENT_CALLS: u32 = 64;

/// Headers the MCP transport sets itself; an org may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

/// A shared server of the deployment (`config/mcp.toml`), as the other roles know it:
/// every org is served it; an org's own server may not take its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMcpServer {
    pub name: String,
    /// `stdio` or `http`.
    pub transport: String,
    pub enabled: bool,
}

/// An org's MCP server item as stored: the API's body without `headers`, plus the
/// headers' names (their values are sealed in the item's secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// Only `http` (streamable HTTP): a `stdio` server would run a command on the
    /// sidecar's host.
    #[serde(default = "http_transport")]
    pub transport: String,
    /// `http(s)://host…`: the server's streamable HTTP endpoint.
    pub url: String,
    /// The names of the headers sent with every request (values sealed apart).
    #[serde(default)]
    pub header_names: Vec<String>,
    /// Per call and for connecting; absent: 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// False: kept but not served (its tools are not offered).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Empty: every tool; otherwise only these.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    #[serde(default)]
    pub deny_tools: Vec<String>,
    /// Tools whose call may be repeated after a crash.
    #[serde(default)]
    pub idempotent_tools: Vec<String>,
    /// Calls in flight at once; absent: 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<u32>,
}

fn http_transport() -> String {
    "http".to_owned()
}

fn enabled() -> bool {
    true
}

/// The sealing context of a server's headers: bound to the org and the server, so sealed
/// headers copied to another row do not open.
pub fn mcp_headers_context(org_id: OrgId, server: &str) -> String {
    format!("org:{org_id}:mcp_server:{server}:headers")
}

/// 1 to 32 letters, digits, `-` or `_`, without `__` (tools are `mcp__<server>__<tool>`).
pub fn check_mcp_server_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && !name.contains("__")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err("1 to 32 letters, digits, '-' or '_', without '__'".into())
    }
}

/// Reads a server item's spec; the message names the field.
pub fn parse_mcp_server(json: &str) -> Result<McpServerSpec, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|error| error.to_string())?;
    if let Some(object) = value.as_object() {
        let stdio = ["command", "args", "env", "cwd"]
            .into_iter()
            .find(|field| object.contains_key(*field));
        if let Some(field) = stdio {
            return Err(format!("{field}: {}", stdio_refusal()));
        }
    }
    let spec: McpServerSpec = serde_path_to_error::deserialize(value)
        .map_err(|error: serde_path_to_error::Error<serde_json::Error>| field_error(&error))?;
    match spec.transport.as_str() {
        "http" => {}
        "stdio" => return Err(format!("transport: {}", stdio_refusal())),
        other => {
            return Err(format!(
                "transport: '{other}' is not a transport; an org's server is \"http\""
            ));
        }
    }
    check_base_url(&spec.url).map_err(|message| format!("url: {message}"))?;
    if spec.url.len() > 2048 {
        return Err("url: at most 2048 bytes".into());
    }
    if let Some(timeout) = spec.timeout_ms
        && !(1..=MAX_MCP_TIMEOUT_MS).contains(&timeout)
    {
        return Err(format!("timeout_ms: 1 to {MAX_MCP_TIMEOUT_MS}"));
    }
    if let Some(calls) = spec.max_concurrent_calls
        && !(1..=MAX_MCP_CONCURRENT_CALLS).contains(&calls)
    {
        return Err(format!(
            "max_concurrent_calls: 1 to {MAX_MCP_CONCURRENT_CALLS}"
        ));
    }
    for name in &spec.header_names {
        check_header_name(name).map_err(|message| format!("headers.{name}: {message}"))?;
    }
    Ok(spec)
}

fn stdio_refusal() -> &'static str {
    "an org's MCP server must be streamable HTTP (\"transport\": \"http\" with a \"url\"); \
     stdio servers, which run a command on the sidecar's host, are the platform's only"
}

/// Checks a body's `headers` object (`{"Name": "value"}`); the message names the header.
pub fn check_mcp_headers(headers: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    let object = headers
        .as_object()
        .ok_or("headers: an object of header names to string values")?;
    if object.len() > MAX_MCP_HEADERS {
        return Err(format!("headers: at most {MAX_MCP_HEADERS}"));
    }
    let mut checked = BTreeMap::new();
    for (name, value) in object {
        let at = |message: &str| format!("headers.{name}: {message}");
        check_header_name(name).map_err(|message| at(&message))?;
        let value = value.as_str().ok_or_else(|| at("must be a string"))?;
        let visible = value
            .bytes()
            .all(|byte| byte == b'\t' || (32..127).contains(&byte));
        if value.is_empty() || value.len() > MAX_MCP_HEADER_VALUE_BYTES || !visible {
            return Err(at(&format!(
                "a value of 1 to {MAX_MCP_HEADER_VALUE_BYTES} visible ASCII characters"
            )));
        }
        checked.insert(name.clone(), value.to_owned());
    }
    Ok(checked)
}

fn check_header_name(name: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
    if !token {
        return Err("not a valid HTTP header name".into());
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err("set by the MCP transport itself".into());
    }
    Ok(())
}

/// The org's enabled servers as the sidecar takes them. With `open_headers`, `secrets`
/// opens their headers (and must be given); a change's check opens nothing.
pub(crate) fn build_servers<'a>(
    org_id: OrgId,
    items: impl Iterator<Item = &'a ConfigItem>,
    secrets: Option<&SecretsKey>,
    open_headers: bool,
) -> Result<Vec<pb::McpServerSpec>, OrgConfigError> {
    let mut servers = Vec::new();
    for item in items {
        let invalid = |message: String| OrgConfigError::invalid(item.kind, &item.name, message);
        check_mcp_server_name(&item.name).map_err(|message| invalid(format!("name: {message}")))?;
        let spec = parse_mcp_server(&item.spec).map_err(invalid)?;
        if !spec.enabled {
            continue;
        }
        let headers = match &item.secret_sealed {
            Some(sealed) if open_headers => open_headers_of(org_id, item, sealed, secrets)?,
            _ => BTreeMap::new(),
        };
        servers.push(pb::McpServerSpec {
            name: item.name.clone(),
            url: spec.url,
            headers,
            timeout_ms: spec.timeout_ms.unwrap_or(0),
            allow_tools: spec.allow_tools,
            deny_tools: spec.deny_tools,
            idempotent_tools: spec.idempotent_tools,
            max_concurrent_calls: spec.max_concurrent_calls.unwrap_or(0),
        });
    }
    Ok(servers)
}

fn open_headers_of(
    org_id: OrgId,
    item: &ConfigItem,
    sealed: &[u8],
    secrets: Option<&SecretsKey>,
) -> Result<BTreeMap<String, String>, OrgConfigError> {
    let invalid =
        |message: &str| OrgConfigError::invalid(ConfigKind::McpServer, &item.name, message);
    let key = secrets.ok_or_else(|| {
        invalid("headers: the deployment has no secrets key (SABLE_SECRETS_KEY) to open them")
    })?;
    let opened = key
        .open(sealed, &mcp_headers_context(org_id, &item.name))
        .map_err(|error| invalid(&format!("headers: {error}")))?;
    // The parser's error could quote a header value: it is left out.
    serde_json::from_str(&opened).map_err(|_not_a_map| invalid("headers: not a map of strings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_server_parses_with_its_defaults() {
        let spec = parse_mcp_server(r#"{"url":"https://docs.example/mcp"}"#).unwrap();
        assert_eq!(spec.transport, "http");
        assert!(spec.enabled);
        assert_eq!(spec.timeout_ms, None);
    }

    #[test]
    fn mistakes_name_the_field_and_stdio_is_refused() {
        let cases = [
            (
                r#"{"transport":"stdio","command":"sh"}"#,
                "command: an org's MCP server must be streamable HTTP",
            ),
            (
                r#"{"transport":"stdio","url":"http://x"}"#,
                "transport: an org's MCP server must be streamable HTTP",
            ),
            (
                r#"{"transport":"tcp","url":"http://x"}"#,
                "transport: 'tcp'",
            ),
            (
                r#"{"url":"ftp://x"}"#,
                "url: must start with http:// or https://",
            ),
            (r#"{}"#, "missing field `url`"),
            (r#"{"url":"http://x","timeout_ms":0}"#, "timeout_ms: 1 to"),
            (
                r#"{"url":"http://x","max_concurrent_calls":1000}"#,
                "max_concurrent_calls: 1 to",
            ),
            (
                r#"{"url":"http://x","colour":"red"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"url":"http://x","allow_tools":"all"}"#,
                "allow_tools: invalid type",
            ),
        ];
        for (json, expected) in cases {
            let error = parse_mcp_server(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn headers_are_checked_by_name() {
        let headers = serde_json::json!({"Authorization": "Bearer t", "X-Team": "a"});
        assert_eq!(check_mcp_headers(&headers).unwrap().len(), 2);
        let cases = [
            (
                serde_json::json!({"Bad Name": "x"}),
                "headers.Bad Name: not a valid",
            ),
            (
                serde_json::json!({"X-A": "line\nbreak"}),
                "headers.X-A: a value",
            ),
            (
                serde_json::json!({"X-A": 5}),
                "headers.X-A: must be a string",
            ),
            (
                serde_json::json!({"Host": "evil"}),
                "headers.Host: set by the MCP transport",
            ),
            (serde_json::json!(["x"]), "headers: an object"),
        ];
        for (headers, expected) in cases {
            let error = check_mcp_headers(&headers).unwrap_err();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn server_names_fit_tool_names() {
        assert!(check_mcp_server_name("docs-2_b").is_ok());
        for name in ["", "a__b", "a.b", &"x".repeat(33)] {
            assert!(check_mcp_server_name(name).is_err(), "{name}");
        }
    }
}
