//! Types and helpers that the controller and the agent both speak.
//!
//! - [`ids`]: typed identifiers, so an agent name can never be passed where a runner id is meant.
//! - [`arch`], [`runner`]: the domain vocabulary of placement and runner lifecycles.
//! - [`wire`]: conversions between these types and the generated protobuf types; the only place
//!   where the two meet, so wire types never leak into core logic.
//! - [`tls`]: loading PEM material and deriving an agent's identity from its certificate.

pub mod arch;
pub mod github;
pub mod ids;
pub mod runner;
pub mod tls;
pub mod wire;
