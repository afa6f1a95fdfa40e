//! Compiles `proto/` with protox so the build needs no `protoc`; tonic-prost-build
//! generates the messages and the MCP sidecar's gRPC client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    println!("cargo:rerun-if-changed={proto_root}");
    let descriptors = protox::compile(["sable/v1/bus.proto", "sable/v1/mcp.proto"], [proto_root])?;
    // An org's MCP server spec carries header values (secrets): its Debug is written by
    // hand in lib.rs, naming the headers only. Headers are a BTreeMap, so specs compare
    // and print in one order.
    tonic_prost_build::configure()
        .skip_debug(["sable.v1.McpServerSpec"])
        .btree_map("sable.v1.McpServerSpec.headers")
        .compile_fds(descriptors)?;
    Ok(())
}
