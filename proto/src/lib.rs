//! The wire contract between controller and agents: the protobuf package `ghascaler.agent.v1`
//! compiled at build time with protox. No other crate runs code generation; domain types live in
//! `shared`, and these generated types stop at the edges (the gRPC services).

/// Version 1 of the agent protocol.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ghascaler.agent.v1");

    /// The protocol version an agent announces in `Register.protocol_version`.
    pub const PROTOCOL_VERSION: u32 = 1;
}
