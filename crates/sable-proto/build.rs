//! Compiles `proto/` with protox so the build needs no `protoc`; tonic-prost-build
//! generates the messages and the MCP sidecar's gRPC client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    println!("cargo:rerun-if-changed={proto_root}");
    let descriptors = protox::compile(["sable/v1/bus.proto", "sable/v1/mcp.proto"], [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
