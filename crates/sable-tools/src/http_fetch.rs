//! The builtin `http_fetch` tool: one GET or POST to a public address, with every
//! address checked after DNS resolution and at every redirect, and the response bounded
//! in time and size.

mod address;
mod html_text;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::registry::{Tool, ToolContext, ToolDescriptor, ToolError, ToolRisk, ToolSource};
use address::{Allowlist, Refusal, check_address};

pub use address::InvalidAllowEntry;

/// The `[http_fetch]` section of a worker's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpFetchConfig {
    /// Networks ("10.0.0.0/8", "127.0.0.1/32"), single addresses or exact host names that
    /// may be fetched although they are loopback, private, link-local or otherwise special.
    pub allow: Vec<String>,
    /// The response body is cut after this many bytes.
    pub max_response_bytes: usize,
    /// The whole call (every redirect, the body) must finish within this; "15s", "300ms".
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    pub max_redirects: usize,
    /// The text returned to the model is cut after this many characters.
    pub max_text_chars: usize,
}

impl Default for HttpFetchConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_response_bytes: 1024 * 1024,
            timeout: Duration::from_secs(15),
            max_redirects: 5,
            max_text_chars: 50_000,
        }
    }
}

/// Fetches a URL for the model; see the module docs for what it refuses.
#[derive(Debug)]
pub struct HttpFetch {
    descriptor: ToolDescriptor,
    config: HttpFetchConfig,
    allowlist: Arc<Allowlist>,
    client: reqwest::Client,
}

/// Why an `HttpFetch` could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum HttpFetchSetupError {
    #[error(transparent)]
    InvalidAllowEntry(#[from] InvalidAllowEntry),
    #[error("http_fetch: building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl HttpFetch {
    /// Builds the tool and its HTTP client. A rustls crypto provider must be installed
    /// (the binary does it once in `main`).
    pub fn new(config: HttpFetchConfig) -> Result<Self, HttpFetchSetupError> {
        let allowlist = Arc::new(Allowlist::parse(&config.allow)?);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect on our behalf, past every check here.
            .no_proxy()
            .dns_resolver(CheckingResolver {
                allowlist: Arc::clone(&allowlist),
            })
            .user_agent(concat!("sable-http-fetch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            descriptor: descriptor(config.timeout),
            config,
            allowlist,
            client,
        })
    }
}

fn descriptor(timeout: Duration) -> ToolDescriptor {
    ToolDescriptor {
        name: "http_fetch".to_owned(),
        description: "Fetches a public http(s) URL with GET or POST and returns the status, the final \
                      URL, the content type and the body as text (HTML reduced to its readable text). \
                      Private, loopback and link-local addresses are refused."
            .to_owned(),
        parameters: json!({
            "type": "object",
            "properties": {
                "url": { "type": "string", "description": "An http:// or https:// URL." },
                "method": { "type": "string", "enum": ["GET", "POST"], "default": "GET" },
                "body": { "type": "string", "description": "The request body; POST only." },
                "headers": {
                    "type": "object",
                    "description": "Extra request headers (not Host or hop-by-hop headers).",
                    "additionalProperties": { "type": "string" }
                }
            },
            "required": ["url"],
            "additionalProperties": false
        }),
        source: ToolSource::Builtin,
        risk: ToolRisk::Medium,
        // A POST may change something each time it is sent.
        idempotent: false,
        timeout,
    }
}

#[async_trait::async_trait]
impl Tool for HttpFetch {
    fn descriptor(&self) -> &ToolDescriptor {
        &self.descriptor
    }

    async fn call(&self, _context: &ToolContext, arguments: Value) -> Result<String, ToolError> {
        let request = FetchRequest::parse(arguments)?;
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.fetch(request))
            .await
            .map_err(|_| ToolError::Timeout(timeout))?
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArguments {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
}

/// A checked call: an http(s) URL, GET or POST, a body only with POST, allowed headers.
struct FetchRequest {
    url: Url,
    method: Method,
    body: Option<String>,
    headers: HeaderMap,
}

/// Headers the caller may not set: the host is the URL's, and hop-by-hop headers belong
/// to the connection, not the request.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl FetchRequest {
    fn parse(arguments: Value) -> Result<Self, ToolError> {
        let arguments: FetchArguments = serde_json::from_value(arguments)
            .map_err(|error| ToolError::InvalidArguments(error.to_string()))?;
        let url = parse_url(&arguments.url)?;
        let method = match arguments.method.as_deref().unwrap_or("GET") {
            "GET" => Method::GET,
            "POST" => Method::POST,
            other => {
                return Err(invalid(format!(
                    "method must be GET or POST, not '{other}'"
                )));
            }
        };
        if arguments.body.is_some() && method != Method::POST {
            return Err(invalid("a body is only sent with POST".to_owned()));
        }
        let headers = parse_headers(arguments.headers)?;
        Ok(Self {
            url,
            method,
            body: arguments.body,
            headers,
        })
    }
}

fn invalid(message: String) -> ToolError {
    ToolError::InvalidArguments(message)
}

fn parse_url(text: &str) -> Result<Url, ToolError> {
    let url =
        Url::parse(text).map_err(|error| invalid(format!("'{text}' is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "only http and https URLs can be fetched, not {}:",
            url.scheme()
        )));
    }
    Ok(url)
}

fn parse_headers(headers: serde_json::Map<String, Value>) -> Result<HeaderMap, ToolError> {
    let mut parsed = HeaderMap::new();
    for (name, value) in headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("'{name}' is not a valid header name")))?;
        if FORBIDDEN_HEADERS.contains(&header_name.as_str()) {
            return Err(invalid(format!("the {name} header cannot be set")));
        }
        // The value may be a secret, so no message repeats it.
        let value = value
            .as_str()
            .and_then(|value| HeaderValue::from_str(value).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "the value of header {name} is not a valid header value"
                ))
            })?;
        parsed.insert(header_name, value);
    }
    Ok(parsed)
}

/// A response that is not a redirect, read and bounded.
struct FetchedPage {
    status: StatusCode,
    url: Url,
    content_type: Option<String>,
    body: Vec<u8>,
    truncated: bool,
}

impl HttpFetch {
    /// Sends the request and follows up to `max_redirects` redirects, checking every target.
    async fn fetch(&self, request: FetchRequest) -> Result<String, ToolError> {
        let FetchRequest {
            mut url,
            mut method,
            mut body,
            mut headers,
        } = request;
        for _ in 0..=self.config.max_redirects {
            self.check_literal_address(&url)?;
            let response = self.send(&url, &method, &body, &headers).await?;
            let Some(next) = redirect_target(&response, &url)? else {
                let page = self.read(response, url).await?;
                return Ok(render(
                    &page,
                    self.config.max_text_chars,
                    self.config.max_response_bytes,
                ));
            };
            if !matches!(
                response.status(),
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                // 301, 302 and 303 repeat the request as a GET, as browsers do.
                method = Method::GET;
                body = None;
            }
            if next.origin() != url.origin() {
                // Headers may carry credentials meant for the first site only.
                headers.clear();
            }
            tracing::debug!(
                from = url.host_str(),
                to = next.host_str(),
                "http_fetch follows a redirect"
            );
            url = next;
        }
        Err(ToolError::Refused(format!(
            "refused: more than {} redirects (the limit is http_fetch.max_redirects)",
            self.config.max_redirects
        )))
    }

    /// Checks a URL whose host is an address; names are checked by the resolver, after
    /// resolution, on the addresses actually connected to.
    fn check_literal_address(&self, url: &Url) -> Result<(), ToolError> {
        let address = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(invalid(format!("{url} has no host"))),
        };
        check_address(&self.allowlist, None, address)
            .map_err(|refusal| ToolError::Refused(refusal.0))
    }

    async fn send(
        &self,
        url: &Url,
        method: &Method,
        body: &Option<String>,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, ToolError> {
        tracing::debug!(%method, host = url.host_str(), "http_fetch sends a request");
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(body) = body {
            request = request.body(body.clone());
        }
        request
            .send()
            .await
            .map_err(|error| send_error(&error, url))
    }

    async fn read(
        &self,
        mut response: reqwest::Response,
        url: Url,
    ) -> Result<FetchedPage, ToolError> {
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let cap = self.config.max_response_bytes;
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| send_error(&error, &url))?
        {
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(
            status = status.as_u16(),
            bytes = body.len(),
            truncated,
            "http_fetch read a response"
        );
        Ok(FetchedPage {
            status,
            url,
            content_type,
            body,
            truncated,
        })
    }
}

/// The next URL when `response` is a redirect (301, 302, 303, 307, 308).
fn redirect_target(response: &reqwest::Response, url: &Url) -> Result<Option<Url>, ToolError> {
    let status = response.status();
    let is_redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !is_redirect {
        return Ok(None);
    }
    let failed = |why: &str| ToolError::Failed(format!("{url} answered {status} {why}"));
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| failed("without a Location"))?;
    let location = location
        .to_str()
        .map_err(|_| failed("with a Location that is not text"))?;
    let next = url
        .join(location)
        .map_err(|error| failed(&format!("with a bad Location: {error}")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(ToolError::Refused(format!(
            "refused: {url} redirects to a {} URL",
            next.scheme()
        )));
    }
    Ok(Some(next))
}

/// A refusal from the resolver when it is in the error's causes, else a failure that
/// names every cause.
fn send_error(error: &reqwest::Error, url: &Url) -> ToolError {
    let mut causes = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(refusal) = current.downcast_ref::<Refusal>() {
            return ToolError::Refused(refusal.0.clone());
        }
        causes.push(current.to_string());
        cause = current.source();
    }
    let host = url.host_str().unwrap_or_default();
    ToolError::Failed(format!(
        "fetching from {host} failed: {}",
        causes.join(": ")
    ))
}

/// The header line, the notes on what was cut, then the text.
fn render(page: &FetchedPage, max_text_chars: usize, max_response_bytes: usize) -> String {
    let content_type = page.content_type.as_deref().unwrap_or("no content type");
    let mut rendered = format!("HTTP {} · {} · {content_type}\n", page.status, page.url);
    if page.truncated {
        rendered.push_str(&format!(
            "[the response was longer than {max_response_bytes} bytes and was truncated]\n"
        ));
    }
    let text = match body_kind(page.content_type.as_deref(), &page.body) {
        BodyKind::Html => html_text::extract(&String::from_utf8_lossy(&page.body)),
        BodyKind::Text => String::from_utf8_lossy(&page.body).into_owned(),
        BodyKind::Binary => format!("[{} bytes of {content_type}, not shown]", page.body.len()),
    };
    match text.char_indices().nth(max_text_chars) {
        Some((cut, _)) => {
            rendered.push_str(&format!(
                "[the text was cut at {max_text_chars} characters]\n"
            ));
            rendered.push_str(&text[..cut]);
        }
        None => rendered.push_str(&text),
    }
    rendered
}

enum BodyKind {
    Html,
    Text,
    Binary,
}

fn body_kind(content_type: Option<&str>, body: &[u8]) -> BodyKind {
    let Some(content_type) = content_type else {
        let start = String::from_utf8_lossy(&body[..body.len().min(64)])
            .trim_start()
            .to_ascii_lowercase();
        return if start.starts_with("<!doctype html") || start.starts_with("<html") {
            BodyKind::Html
        } else {
            BodyKind::Text
        };
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let is_text = essence.starts_with("text/")
        || [
            "json",
            "xml",
            "javascript",
            "x-www-form-urlencoded",
            "yaml",
            "toml",
            "csv",
        ]
        .iter()
        .any(|kind| essence.ends_with(kind));
    match essence.as_str() {
        "text/html" | "application/xhtml+xml" => BodyKind::Html,
        _ if is_text => BodyKind::Text,
        _ => BodyKind::Binary,
    }
}

/// Resolves names for the client and refuses any name with an address that may not be
/// reached. The client connects only to the addresses returned here, so a name cannot
/// resolve to a public address for the check and a private one for the connection.
struct CheckingResolver {
    allowlist: Arc<Allowlist>,
}

impl reqwest::dns::Resolve for CheckingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowlist = Arc::clone(&self.allowlist);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allowlist.admits_host(&host) {
                for address in &addresses {
                    check_address(&allowlist, Some(&host), address.ip())?;
                }
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn deserialize_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}
