//! placeholder
pub mod github_sim;
