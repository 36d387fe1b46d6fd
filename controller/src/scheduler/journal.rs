//! What the executor writes into a job's stored timeline ([`crate::store::timeline`]): its
//! decisions about the job's runner (start sent or failed, stop) and the runner's state
//! changes, each at the moment it happens, so a runner that comes and goes between two looks
//! of the dashboard's observer is still in the timeline.
//!
//! Pure: [`entry`] builds the entry; the executor appends it. A timeline write that fails is
//! logged and dropped: it never holds up scheduling.

use crate::store::{RunnerLifecycle, RunnerRecord, TimelineEntry};

/// The timeline entry saying `message` about runner `r`, for the job it took or was started
/// for; `None` for a warm runner with no job yet.
pub fn entry(r: &RunnerRecord, at_ms: i64, message: String) -> Option<TimelineEntry> {
    let job = r.job_id.or(r.for_job)?;
    let mut e = TimelineEntry::new(&r.owner, job, at_ms, "runner", message);
    e.runner = Some(r.name.clone());
    e.agent = Some(r.agent.clone());
    Some(e)
}

/// How a state change of runner `r` reads in its job's timeline.
pub fn state_change(r: &RunnerRecord) -> String {
    let what = match r.lifecycle {
        RunnerLifecycle::Running => format!("runner {} is running on agent {}", r.name, r.agent),
        RunnerLifecycle::Finished => format!("runner {} ended", r.name),
        other => format!("runner {} is {}", r.name, other.as_str()),
    };
    if r.reason.is_empty() {
        what
    } else {
        format!("{what}: {}", r.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::arch::Arch;

    fn runner(for_job: Option<u64>, job_id: Option<u64>) -> RunnerRecord {
        RunnerRecord {
            id: "r-1".into(),
            name: "gha-acme-1".into(),
            owner: "Acme".into(),
            repo: None,
            agent: "host-1".into(),
            arch: Arch::Amd64,
            labels: vec![],
            lifecycle: RunnerLifecycle::Finished,
            for_job,
            job_id,
            github_id: None,
            exit_code: Some(0),
            reason: "exited 0".into(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn entries_go_to_the_job_taken_else_the_job_started_for() {
        let e = entry(&runner(Some(7), Some(9)), 5, "x".into()).unwrap();
        assert_eq!((e.owner.as_str(), e.job, e.at_ms), ("acme", 9, 5));
        assert_eq!(e.runner.as_deref(), Some("gha-acme-1"));
        assert_eq!(e.agent.as_deref(), Some("host-1"));
        assert_eq!(entry(&runner(Some(7), None), 5, "x".into()).unwrap().job, 7);
        assert!(entry(&runner(None, None), 5, "warm".into()).is_none());
        assert_eq!(
            state_change(&runner(None, None)),
            "runner gha-acme-1 ended: exited 0"
        );
    }
}
