//! Scheduling: the pure [`planner`] decides where runners go and the pure [`lifecycle`] what
//! runner records become; the [`executor`] acts, and the [`reconcile`]r
//! finds through the REST API what lost webhooks did not say. Where a runner registers (user
//! vs organization, groups, JIT or tokens) is [`registration`] (rules) and [`registrar`] (I/O).
//! The executor's decisions about a job's runner go into the job's timeline ([`journal`]).

pub mod backoff;
pub mod containment;
pub mod executor;
pub mod journal;
pub mod lifecycle;
pub mod memory;
pub mod naming;
pub mod planner;
pub mod polling;
pub mod reconcile;
pub mod registrar;
pub mod registration;
pub mod run_fetch;
mod stale;
pub mod steps;
pub mod sweep;
pub mod window;

pub use executor::{Decisions, DecisionsHandle, Scheduler};
