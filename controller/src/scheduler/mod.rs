//! Scheduling: the pure [`planner`] decides, the executor acts.

pub mod planner;
