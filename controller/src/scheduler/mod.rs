//! Scheduling: the pure [`planner`] decides, the [`executor`] acts, and the [`reconcile`]r
//! finds through the REST API what lost webhooks did not say.

pub mod executor;
pub mod planner;
pub mod reconcile;

pub use executor::{Decisions, DecisionsHandle, Scheduler};
