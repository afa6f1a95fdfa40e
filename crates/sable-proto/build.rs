//! Compiles `proto/` with protox so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    println!("cargo:rerun-if-changed={proto_root}");
    let descriptors = protox::compile(["sable/v1/bus.proto"], [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
