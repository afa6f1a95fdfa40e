//! The MCP sidecar role: will own every connection to external MCP servers and serve them
//! to workers over gRPC. Not built yet; the crate exists so the layout and layering tests
//! cover it from the start.
