//! Types and helpers that the controller and the agent both speak.
//!
//! - [`ids`]: typed identifiers, so an agent name can never be passed where a runner id is meant.
//! - [`arch`], [`runner`], [`command`]: the domain vocabulary of placement, runner lifecycles and
//!   what the controller asks of agents.
//! - [`image`]: runner images as agents report them (present, pulling, failed) and digest pins.
//! - [`owner`]: the `Owner` type, the one place owner logins are compared (lower-cased).
//! - [`join_token`]: the text form of one-time agent enrollment tokens.
//! - [`wire`]: conversions between these types and the generated protobuf types; the only place
//!   where the two meet, so wire types never leak into core logic.
//! - [`github`]: the GitHub REST client, behind the `GithubApi` trait.
//! - [`private_files`]: state directories, keys and databases only our user may read.
//! - [`stage`]: the marks a cold start leaves on its way, for timing it stage by stage.
//! - [`tls`]: loading PEM material and deriving an agent's identity from its certificate.

pub mod arch;
pub mod command;
pub mod error;
pub mod github;
pub mod ids;
pub mod image;
pub mod join_token;
pub mod logsafe;
pub mod owner;
pub mod private_files;
pub mod runner;
pub mod stage;
pub mod tls;
pub mod wire;
