//! The wire contract between controller and agents: the protobuf package `ghascaler.agent.v1`
//! compiled at build time with protox. No other crate runs code generation; domain types live in
//! `shared`, and these generated types stop at the edges (the gRPC services).

/// Version 1 of the agent protocol.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ghascaler.agent.v1");

    /// The protocol version an agent announces in `Register.protocol_version`.
    pub const PROTOCOL_VERSION: u32 = 1;
    /// This revision within [`PROTOCOL_VERSION`] (`Register.protocol_minor`): 1.0 had no minor
    /// field (on the wire: 0); 1.1 added it; 1.2 added `Undrain`; 1.3 added `PrepareImages`
    /// and the agent's `ImageReport`, and leader generations
    /// (`ControllerMessage.leader_generation`, `CommandRefused`).
    pub const PROTOCOL_MINOR: u32 = 3;

    /// The first minor revision that understands `ControllerMessage.undrain`.
    pub const UNDRAIN_SINCE_MINOR: u32 = 2;

    /// The first minor revision that understands `ControllerMessage.prepare_images` (and sends
    /// `AgentMessage.images`).
    pub const IMAGES_SINCE_MINOR: u32 = 3;

    /// The first minor revision whose agents fence by `ControllerMessage.leader_generation`.
    pub const FENCING_SINCE_MINOR: u32 = 3;

    /// Whether a controller of this revision serves an agent that announces `major.minor`:
    /// the same major version, and this minor revision or the one before it. (Agents are
    /// upgraded after their controller; see the README's "Upgrades".)
    pub fn accepts(major: u32, minor: u32) -> bool {
        major == PROTOCOL_VERSION && minor <= PROTOCOL_MINOR && minor + 1 >= PROTOCOL_MINOR
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn one_minor_revision_older_is_served_newer_and_other_majors_are_not() {
            assert!(accepts(PROTOCOL_VERSION, PROTOCOL_MINOR));
            assert!(accepts(PROTOCOL_VERSION, PROTOCOL_MINOR - 1));
            assert!(!accepts(PROTOCOL_VERSION, PROTOCOL_MINOR + 1));
            assert!(!accepts(PROTOCOL_VERSION + 1, PROTOCOL_MINOR));
            assert!(!accepts(0, PROTOCOL_MINOR));
        }
    }
}
