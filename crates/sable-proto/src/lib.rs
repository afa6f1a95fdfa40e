//! Protobuf payloads of the Sable bus and the MCP sidecar's gRPC service (client and
//! server stubs), generated from `proto/sable/v1`.
//!
//! Owns only generated types; depends on nothing of ours.

/// Version 1 of the bus payloads and the sidecar service.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sable.v1.rs"));
}
