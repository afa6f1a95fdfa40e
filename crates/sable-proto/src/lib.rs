//! Protobuf payloads of the Sable bus and the MCP sidecar's gRPC service (client and
//! server stubs), generated from `proto/sable/v1`.
//!
//! Owns the generated types, and by hand only the `Debug` of `McpServerSpec` (which
//! carries header values: it prints their names) with `url_origin`; depends on nothing of
//! ours.

/// Version 1 of the bus payloads and the sidecar service.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sable.v1.rs"));
}

impl std::fmt::Debug for v1::McpServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServerSpec")
            .field("name", &self.name)
            .field("origin", &url_origin(&self.url))
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_ms", &self.timeout_ms)
            .field("allow_tools", &self.allow_tools)
            .field("deny_tools", &self.deny_tools)
            .field("idempotent_tools", &self.idempotent_tools)
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .finish()
    }
}

/// `scheme://host[:port]` of a URL (without user info): its path and query may carry a
/// token, so logs of an org's MCP server name only this.
pub fn url_origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| after_scheme + at);
    let start = url[after_scheme..end]
        .rfind('@')
        .map_or(0, |at| after_scheme + at + 1);
    if start == 0 {
        &url[..end]
    } else {
        &url[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn an_mcp_server_spec_never_prints_its_header_values() {
        let spec = v1::McpServerSpec {
            name: "docs".into(),
            url: "https://user:pw@docs.example/mcp/t0ken?key=k3y".into(),
            headers: [("Authorization".to_owned(), "Bearer s3cret".to_owned())].into(),
            ..Default::default()
        };
        let printed = format!("{spec:?}");
        assert!(printed.contains("Authorization"), "{printed}");
        for secret in ["s3cret", "t0ken", "k3y", "pw"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("docs.example"), "{printed}");
    }
}
