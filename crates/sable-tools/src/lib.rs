//! Everything an agent can do, in one registry: builtin tools, skills and MCP servers'
//! tools (through the MCP sidecar's gRPC service: [`McpCatalog`]), each described by a
//! [`ToolDescriptor`] and called through [`Tool`].
//!
//! The registry validates a call's arguments against the tool's JSON schema before the
//! call and bounds it by the tool's timeout, so a bad or slow call becomes a tool error
//! the model can read, never a crash. Depends on `sable-core`, `sable-llm` (the tool spec
//! the model sees), `sable-store` (tools that keep state), `sable-proto` + tonic (the
//! sidecar's client), `sable-telemetry` (trace context for the sidecar) and an HTTP client for
//! `http_fetch`, which builds its own so every connection goes through its address
//! checks; knows nothing of NATS or HTTP serving.

mod builtin;
mod http_fetch;
mod mcp;
mod registry;
mod skills;

pub use builtin::{Automation, Memory, SessionTool, SkillScript, SkillTool, Time, builtin_tools};
pub use http_fetch::{HttpFetch, HttpFetchConfig, HttpFetchSetupError, InvalidAllowEntry};
pub use mcp::{InvalidSidecarUrl, McpCatalog, OrgMcpServers, tool_name as mcp_tool_name};
pub use registry::{
    Tool, ToolContext, ToolDescriptor, ToolError, ToolRegistry, ToolRisk, ToolSource,
};
pub use skills::{Skill, SkillCatalog, SkillError};
