//! Scheduling: the pure [`planner`] decides, the [`executor`] acts.

pub mod executor;
pub mod planner;

pub use executor::{Decisions, DecisionsHandle, Scheduler};
