//! The agent's table of runners: what it started or adopted, and their last observed state.
//!
//! It makes commands idempotent (a second start for a known runner id starts nothing) and is
//! the inventory sent on every (re)connect. Finished runners stay for a while, so a controller
//! that was away when they finished still hears how they ended.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shared::ids::RunnerId;
use shared::runner::RunnerState;

/// How long a finished runner stays in the inventory.
pub const FINISHED_RETENTION: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct RunnerTable {
    runners: BTreeMap<RunnerId, (RunnerState, Option<Instant>)>,
}

impl RunnerTable {
    pub fn get(&self, id: &RunnerId) -> Option<&RunnerState> {
        self.runners.get(id).map(|(s, _)| s)
    }

    /// Records a state if it moves the runner forward; returns whether it did.
    pub fn apply(&mut self, state: RunnerState) -> bool {
        if let Some((known, _)) = self.runners.get(&state.id)
            && (!known.phase.may_become(state.phase) || *known == state)
        {
            return false;
        }
        let finished = state.phase.is_terminal().then(Instant::now);
        self.runners.insert(state.id.clone(), (state, finished));
        true
    }

    /// Runners not finished yet.
    pub fn active(&self) -> usize {
        self.runners
            .values()
            .filter(|(s, _)| !s.phase.is_terminal())
            .count()
    }

    /// The runners not finished yet, each as `name (phase)`.
    pub fn active_list(&self) -> Vec<String> {
        self.runners
            .values()
            .filter(|(s, _)| !s.phase.is_terminal())
            .map(|(s, _)| format!("{} ({})", s.name, format!("{:?}", s.phase).to_lowercase()))
            .collect()
    }

    pub fn inventory(&self) -> Vec<RunnerState> {
        self.runners.values().map(|(s, _)| s.clone()).collect()
    }

    /// Forgets runners that finished longer than `retention` ago.
    pub fn prune(&mut self, retention: Duration) {
        self.runners
            .retain(|_, (_, finished)| finished.is_none_or(|at| at.elapsed() < retention));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::runner::RunnerPhase;

    fn state(phase: RunnerPhase) -> RunnerState {
        RunnerState::new(RunnerId::parse("r1").unwrap(), "r1", phase)
    }

    #[test]
    fn only_forward_changes_are_applied() {
        let mut t = RunnerTable::default();
        assert!(t.apply(state(RunnerPhase::Starting)));
        assert!(t.apply(state(RunnerPhase::Running)));
        assert!(!t.apply(state(RunnerPhase::Starting)));
        assert_eq!(t.active(), 1);
        assert!(t.apply(state(RunnerPhase::Exited)));
        assert!(!t.apply(state(RunnerPhase::Running)));
        assert_eq!(t.active(), 0);
        assert_eq!(t.inventory().len(), 1);
        t.prune(Duration::ZERO);
        assert!(t.inventory().is_empty());
    }
}
