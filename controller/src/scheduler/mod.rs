//! Scheduling: the pure [`planner`] decides, the [`executor`] acts, and the [`reconcile`]r
//! finds through the REST API what lost webhooks did not say. Where a runner registers (user
//! vs organization, groups, JIT or tokens) is [`registration`] (rules) and [`registrar`] (I/O).

pub mod executor;
pub mod planner;
pub mod reconcile;
pub mod registrar;
pub mod registration;

pub use executor::{Decisions, DecisionsHandle, Scheduler};
