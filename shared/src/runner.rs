//! What a runner is doing, as observed by the agent that runs it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ids::RunnerId;

/// The observed lifecycle of one runner. It only moves forward:
/// `Starting → Running → Exited | Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerPhase {
    Starting,
    Running,
    Exited,
    Failed,
}

impl RunnerPhase {
    /// True once the runner's process is gone for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunnerPhase::Exited | RunnerPhase::Failed)
    }

    fn rank(self) -> u8 {
        match self {
            RunnerPhase::Starting => 0,
            RunnerPhase::Running => 1,
            RunnerPhase::Exited | RunnerPhase::Failed => 2,
        }
    }

    /// Whether a report in phase `next` may replace one in `self` (states never move backwards).
    pub fn may_become(self, next: RunnerPhase) -> bool {
        next.rank() >= self.rank() && !(self.is_terminal() && next != self)
    }
}

/// One runner's state as the agent last observed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerState {
    pub id: RunnerId,
    pub name: String,
    pub phase: RunnerPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub observed_at_ms: i64,
}

impl RunnerState {
    pub fn new(id: RunnerId, name: impl Into<String>, phase: RunnerPhase) -> Self {
        Self {
            id,
            name: name.into(),
            phase,
            exit_code: None,
            reason: String::new(),
            observed_at_ms: now_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::RunnerPhase::*;

    #[test]
    fn phases_only_move_forward() {
        assert!(Starting.may_become(Running));
        assert!(Running.may_become(Exited));
        assert!(Starting.may_become(Failed));
        assert!(!Running.may_become(Starting));
        assert!(!Exited.may_become(Running));
        assert!(!Exited.may_become(Failed));
        assert!(Exited.may_become(Exited));
    }
}
