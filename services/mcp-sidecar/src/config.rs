//! `config/mcp.toml`: which MCP servers the sidecar connects to, parsed strictly so a
//! mistake stops start-up naming the server and the field; and an org's own server, as a
//! request carries it (streamable HTTP only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every configured server, by name.
#[derive(Debug, Clone, Default)]
pub struct McpConfig {
    pub servers: Vec<ServerConfig>,
}

/// How the sidecar reaches one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportConfig {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

impl TransportConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdio { .. } => "stdio",
            Self::Http { .. } => "http",
        }
    }
}

/// One `[servers.<name>]` table.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Tools become `mcp__<name>__<tool>`.
    pub name: String,
    pub transport: TransportConfig,
    /// Per call (and for connecting).
    pub timeout: Duration,
    pub enabled: bool,
    /// Empty: every tool; otherwise only these.
    pub allow_tools: Vec<String>,
    pub deny_tools: Vec<String>,
    /// Re-run after a crash mid-call.
    pub idempotent_tools: Vec<String>,
    pub max_concurrent_calls: usize,
}

impl ServerConfig {
    /// True when the allow and deny lists let `tool` through.
    pub fn offers(&self, tool: &str) -> bool {
        (self.allow_tools.is_empty() || self.allow_tools.iter().any(|name| name == tool))
            && !self.deny_tools.iter().any(|name| name == tool)
    }

    pub fn is_idempotent(&self, tool: &str) -> bool {
        self.idempotent_tools.iter().any(|name| name == tool)
    }
}

/// A mistake in the file, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Unreadable { file: String, message: String },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {message}")]
    Shape { file: String, message: String },
    #[error("{file}: server '{server}': field '{field}': {message}")]
    Field {
        file: String,
        server: String,
        field: String,
        message: String,
    },
}

/// A shared server as the other roles see it: its name, transport and whether it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSummary {
    pub name: String,
    /// `stdio` or `http` (as written; checked only by the sidecar).
    pub transport: String,
    pub enabled: bool,
}

const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_MAX_CONCURRENT_CALLS: usize = 32;
const FIELDS: &[&str] = &[
    "transport",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "timeout_ms",
    "enabled",
    "allow_tools",
    "deny_tools",
    "idempotent_tools",
    "max_concurrent_calls",
];

impl McpConfig {
    /// Reads `path`; a missing file means no servers (the sidecar then serves none).
    /// `lookup` resolves `${VAR}` (the CLI passes the process environment).
    pub fn load(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(error) => {
                return Err(ConfigError::Unreadable {
                    file,
                    message: error.to_string(),
                });
            }
        };
        Self::parse(&text, &file, lookup)
    }

    /// Parses the text of a file called `file` (for messages).
    pub fn parse(
        text: &str,
        file: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| ConfigError::Syntax {
                    file: file.to_owned(),
                    message: error.message().to_owned(),
                })?;
        let shape = |message: String| ConfigError::Shape {
            file: file.to_owned(),
            message,
        };
        if let Some(key) = table.keys().find(|key| *key != "servers") {
            return Err(shape(format!(
                "unknown top-level key '{key}' (only [servers.<name>] tables belong here)"
            )));
        }
        let Some(servers) = table.get("servers") else {
            return Ok(Self::default());
        };
        let servers = servers
            .as_table()
            .ok_or_else(|| shape("'servers' must be a table of [servers.<name>]".into()))?;
        let mut parsed = Vec::new();
        for (name, value) in servers {
            let parser = ServerParser {
                file,
                server: name,
                lookup,
            };
            parsed.push(parser.parse(value)?);
        }
        Ok(Self { servers: parsed })
    }
}

impl McpConfig {
    /// The servers `path` names, without resolving `${VAR}` or checking their fields: what
    /// a gateway needs to list them and refuse an org's server of a shared name, in a
    /// process that has none of the sidecar's secrets. A missing file names none.
    pub fn summaries(path: &Path) -> Result<Vec<ServerSummary>, ConfigError> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            Err(error) => {
                return Err(ConfigError::Unreadable {
                    file,
                    message: error.to_string(),
                });
            }
        };
        let table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| ConfigError::Syntax {
                    file: file.clone(),
                    message: error.message().to_owned(),
                })?;
        let Some(servers) = table.get("servers").and_then(toml::Value::as_table) else {
            return Ok(Vec::new());
        };
        Ok(servers
            .iter()
            .map(|(name, value)| ServerSummary {
                name: name.clone(),
                transport: value
                    .get("transport")
                    .and_then(toml::Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                enabled: value
                    .get("enabled")
                    .and_then(toml::Value::as_bool)
                    .unwrap_or(true),
            })
            .collect())
    }
}

/// An org's own server from the spec a request carries: streamable HTTP at `url` (the
/// spec has no command, so an org can never start a process here), checked as the file's
/// `http` servers are. The message names the field.
pub(crate) fn org_server(spec: &sable_proto::v1::McpServerSpec) -> Result<ServerConfig, String> {
    if !valid_server_name(&spec.name) {
        return Err("name: 1 to 32 letters, digits, '-' or '_', without '__'".into());
    }
    let parsed = url::Url::parse(&spec.url).map_err(|error| format!("url: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url: must be an http:// or https:// URL".into());
    }
    for (name, value) in &spec.headers {
        let valid_name = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        if !valid_name || http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "headers.{name}: is not a valid HTTP header name and value"
            ));
        }
    }
    let timeout_ms = if spec.timeout_ms == 0 {
        DEFAULT_TIMEOUT_MS
    } else {
        spec.timeout_ms
    };
    let max_concurrent_calls = match spec.max_concurrent_calls {
        0 => DEFAULT_MAX_CONCURRENT_CALLS,
        calls => usize::try_from(calls).unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS),
    };
    Ok(ServerConfig {
        name: spec.name.clone(),
        transport: TransportConfig::Http {
            url: spec.url.clone(),
            headers: spec.headers.clone(),
        },
        timeout: Duration::from_millis(timeout_ms),
        enabled: true,
        allow_tools: spec.allow_tools.clone(),
        deny_tools: spec.deny_tools.clone(),
        idempotent_tools: spec.idempotent_tools.clone(),
        max_concurrent_calls,
    })
}

struct ServerParser<'a> {
    file: &'a str,
    server: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl ServerParser<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            file: self.file.to_owned(),
            server: self.server.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn parse(&self, value: &toml::Value) -> Result<ServerConfig, ConfigError> {
        if !valid_server_name(self.server) {
            return Err(self.error(
                "name",
                "a server name is 1 to 32 letters, digits, '-' or '_', without '__'",
            ));
        }
        let table = value
            .as_table()
            .ok_or_else(|| self.error("(table)", "must be a table"))?;
        if let Some(key) = table.keys().find(|key| !FIELDS.contains(&key.as_str())) {
            return Err(self.error(
                key,
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
            ));
        }
        let transport = match self.string(table, "transport")?.as_deref() {
            Some("stdio") => self.stdio(table)?,
            Some("http") => self.http(table)?,
            Some(other) => {
                return Err(self.error(
                    "transport",
                    format!("'{other}' is not a transport; use \"stdio\" or \"http\""),
                ));
            }
            None => return Err(self.error("transport", "is required (\"stdio\" or \"http\")")),
        };
        let timeout_ms = self
            .positive(table, "timeout_ms")?
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        let max_concurrent_calls = self
            .positive(table, "max_concurrent_calls")?
            .map_or(DEFAULT_MAX_CONCURRENT_CALLS, |value| {
                usize::try_from(value).unwrap_or(usize::MAX)
            });
        Ok(ServerConfig {
            name: self.server.to_owned(),
            transport,
            timeout: Duration::from_millis(timeout_ms),
            enabled: self.boolean(table, "enabled")?.unwrap_or(true),
            allow_tools: self.strings(table, "allow_tools")?,
            deny_tools: self.strings(table, "deny_tools")?,
            idempotent_tools: self.strings(table, "idempotent_tools")?,
            max_concurrent_calls,
        })
    }

    fn stdio(&self, table: &toml::Table) -> Result<TransportConfig, ConfigError> {
        for field in ["url", "headers"] {
            if table.contains_key(field) {
                return Err(self.error(field, "belongs to transport \"http\", not \"stdio\""));
            }
        }
        let command = self
            .string(table, "command")?
            .filter(|command| !command.trim().is_empty())
            .ok_or_else(|| self.error("command", "is required for transport \"stdio\""))?;
        Ok(TransportConfig::Stdio {
            command,
            args: self.strings(table, "args")?,
            env: self.map(table, "env")?,
            cwd: self.string(table, "cwd")?.map(PathBuf::from),
        })
    }

    fn http(&self, table: &toml::Table) -> Result<TransportConfig, ConfigError> {
        for field in ["command", "args", "env", "cwd"] {
            if table.contains_key(field) {
                return Err(self.error(field, "belongs to transport \"stdio\", not \"http\""));
            }
        }
        let url = self
            .string(table, "url")?
            .ok_or_else(|| self.error("url", "is required for transport \"http\""))?;
        let parsed = url::Url::parse(&url)
            .map_err(|error| self.error("url", format!("'{url}': {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(self.error("url", "must be an http:// or https:// URL"));
        }
        let headers = self.map(table, "headers")?;
        for (name, value) in &headers {
            let valid_name = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            let valid_value = http::HeaderValue::from_str(value).is_ok();
            if !valid_name || !valid_value {
                return Err(self.error(
                    &format!("headers.{name}"),
                    "is not a valid HTTP header name and value",
                ));
            }
        }
        Ok(TransportConfig::Http { url, headers })
    }

    /// A string with `${VAR}` resolved.
    fn string(&self, table: &toml::Table, field: &str) -> Result<Option<String>, ConfigError> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(text)) => self.expand(field, text).map(Some),
            Some(_) => Err(self.error(field, "must be a string")),
        }
    }

    fn strings(&self, table: &toml::Table, field: &str) -> Result<Vec<String>, ConfigError> {
        let Some(value) = table.get(field) else {
            return Ok(Vec::new());
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.error(field, "must be an array of strings"))?;
        items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => self.expand(field, text),
                _ => Err(self.error(field, "must be an array of strings")),
            })
            .collect()
    }

    fn map(
        &self,
        table: &toml::Table,
        field: &str,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(value) = table.get(field) else {
            return Ok(BTreeMap::new());
        };
        let entries = value
            .as_table()
            .ok_or_else(|| self.error(field, "must be a table of strings"))?;
        entries
            .iter()
            .map(|(key, value)| {
                let at = format!("{field}.{key}");
                match value {
                    toml::Value::String(text) => Ok((key.clone(), self.expand(&at, text)?)),
                    _ => Err(self.error(&at, "must be a string")),
                }
            })
            .collect()
    }

    fn positive(&self, table: &toml::Table, field: &str) -> Result<Option<u64>, ConfigError> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::Integer(value)) if *value > 0 => Ok(u64::try_from(*value).ok()),
            Some(_) => Err(self.error(field, "must be a positive integer")),
        }
    }

    fn boolean(&self, table: &toml::Table, field: &str) -> Result<Option<bool>, ConfigError> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::Boolean(value)) => Ok(Some(*value)),
            Some(_) => Err(self.error(field, "must be true or false")),
        }
    }

    /// Replaces every `${VAR}` with the variable's value; an unset variable is an error.
    fn expand(&self, field: &str, text: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.error(field, "has a '${' without its closing '}'"))?;
            let name = &after[..end];
            let value = (self.lookup)(name).ok_or_else(|| {
                self.error(field, format!("the environment variable {name} is not set"))
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn valid_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.contains("__")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<McpConfig, ConfigError> {
        let lookup = |name: &str| (name == "DOCS_TOKEN").then(|| "s3cret".to_owned());
        McpConfig::parse(text, "mcp.toml", &lookup)
    }

    #[test]
    fn the_documented_example_parses() {
        let config = parse(
            r#"
[servers.time]
transport = "stdio"
command = "python3"
args = ["-m", "mcp_server_time"]
env = { TZ = "UTC" }
cwd = "."
timeout_ms = 30000
enabled = true
allow_tools = []
deny_tools = []
idempotent_tools = ["get_current_time"]
max_concurrent_calls = 32
[servers.docs]
transport = "http"
url = "http://127.0.0.1:9000/mcp"
headers = { Authorization = "Bearer ${DOCS_TOKEN}" }
"#,
        )
        .unwrap();
        assert_eq!(config.servers.len(), 2);
        let docs = &config.servers[0];
        assert_eq!(docs.name, "docs");
        assert_eq!(
            docs.transport,
            TransportConfig::Http {
                url: "http://127.0.0.1:9000/mcp".into(),
                headers: [("Authorization".to_owned(), "Bearer s3cret".to_owned())].into(),
            }
        );
        let time = &config.servers[1];
        assert!(time.is_idempotent("get_current_time"));
        assert!(time.offers("convert_time"));
        assert_eq!(time.timeout, Duration::from_secs(30));
    }

    #[test]
    fn mistakes_name_the_server_and_the_field() {
        let cases = [
            (
                "[servers.a]\ntransport = \"stdio\"\n",
                "server 'a': field 'command'",
            ),
            (
                "[servers.a]\ntransport = \"tcp\"\n",
                "server 'a': field 'transport'",
            ),
            (
                "[servers.a]\ntransport = \"stdio\"\ncommand = \"x\"\ntimeout_ms = \"5\"\n",
                "server 'a': field 'timeout_ms'",
            ),
            (
                "[servers.a]\ntransport = \"stdio\"\ncomand = \"x\"\n",
                "server 'a': field 'comand'",
            ),
            (
                "[servers.b]\ntransport = \"http\"\nurl = \"http://x/${NOPE}\"\n",
                "server 'b': field 'url': the environment variable NOPE",
            ),
            (
                "[servers.b]\ntransport = \"http\"\n",
                "server 'b': field 'url'",
            ),
            (
                "[servers.\"a__b\"]\ntransport = \"http\"\nurl = \"http://x\"\n",
                "server 'a__b': field 'name'",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error} should contain {expected}"
            );
        }
    }

    #[test]
    fn an_orgs_server_is_http_with_valid_headers_and_defaults() {
        let spec = sable_proto::v1::McpServerSpec {
            name: "docs".into(),
            url: "https://docs.example/mcp".into(),
            headers: [("X-Token".to_owned(), "t".to_owned())].into(),
            ..Default::default()
        };
        let server = org_server(&spec).unwrap();
        assert_eq!(server.transport.kind(), "http");
        assert_eq!(server.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(server.max_concurrent_calls, DEFAULT_MAX_CONCURRENT_CALLS);
        let cases = [
            (
                sable_proto::v1::McpServerSpec {
                    url: "file:///etc/passwd".into(),
                    ..spec.clone()
                },
                "url:",
            ),
            (
                sable_proto::v1::McpServerSpec {
                    name: "a__b".into(),
                    ..spec.clone()
                },
                "name:",
            ),
            (
                sable_proto::v1::McpServerSpec {
                    headers: [("X-Token".to_owned(), "line\nbreak".to_owned())].into(),
                    ..spec.clone()
                },
                "headers.X-Token:",
            ),
        ];
        for (spec, expected) in cases {
            let error = org_server(&spec).unwrap_err();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn summaries_need_no_environment() {
        let dir = std::env::temp_dir().join(format!("sable-mcp-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mcp.toml");
        std::fs::write(
            &path,
            "[servers.docs]\ntransport = \"http\"\nurl = \"${UNSET_IN_THIS_PROCESS}\"\n\
             [servers.time]\ntransport = \"stdio\"\ncommand = \"x\"\nenabled = false\n",
        )
        .unwrap();
        let summaries = McpConfig::summaries(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            summaries,
            [
                ServerSummary {
                    name: "docs".into(),
                    transport: "http".into(),
                    enabled: true
                },
                ServerSummary {
                    name: "time".into(),
                    transport: "stdio".into(),
                    enabled: false
                },
            ]
        );
        assert!(
            McpConfig::summaries(&dir.join("missing.toml"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn allow_and_deny_lists_filter_tools() {
        let config = parse(
            "[servers.a]\ntransport = \"stdio\"\ncommand = \"x\"\nallow_tools = [\"one\", \"two\"]\ndeny_tools = [\"two\"]\n",
        )
        .unwrap();
        let server = &config.servers[0];
        assert!(server.offers("one"));
        assert!(!server.offers("two"));
        assert!(!server.offers("three"));
    }
}
