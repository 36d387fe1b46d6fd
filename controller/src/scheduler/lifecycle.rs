//! The runner lifecycle rules: what a runner record becomes, given the record, what its agent
//! reports and how long things have taken. A pure function with table tests, beside the
//! planner; the executor only gathers the inputs and writes the result.
//!
//! Rules (in order):
//! - The agent reports the runner: `starting` keeps the agent's reason (a pod Pending:
//!   unschedulable, image pull back-off), `running` makes it running, `exited`/`failed` finish it
//!   with the exit code and reason.
//! - The agent is connected but does not list it: its inventory is complete, so a running runner
//!   is gone; a requested one was never handed over (the controller stopped in between; its
//!   registration is spent, so it is replaced, not retried); a starting one is given up after the
//!   start deadline.
//! - The agent is away: its runners may well be running; after `agent_lost_ms` they count as gone.
//! - A runner told to stop that is still there after `stop_deadline_ms` counts as gone (its agent
//!   may never confirm; the slot must not be held forever).
//!
//! A finished runner that never took a job is classified for containment: if it exited on its
//! own with a non-zero code within the boot window (not stopped by us), it *crashed* and its (owner, image) backs off;
//! if its agent failed it, the agent backs off.

use shared::runner::RunnerPhase;

use crate::store::{RunnerLifecycle, RunnerRecord};

/// The time limits the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A runner told to start that no agent reports within this time is given up.
    pub start_deadline_ms: i64,
    /// A runner whose agent stays disconnected this long is counted as lost.
    pub agent_lost_ms: i64,
    /// A runner told to stop that is still reported after this counts as gone.
    pub stop_deadline_ms: i64,
    /// A runner that ends without a job sooner than this after its creation crashed.
    pub boot_window_ms: i64,
}

/// What the agent says about the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    pub phase: RunnerPhase,
    pub exit_code: Option<i32>,
    pub reason: &'a str,
}

/// Where the runner's agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentSeen<'a> {
    /// Connected; `report` is its view of this runner (`None`: not in its inventory).
    Connected(Option<Report<'a>>),
    /// Known but disconnected since this time (ms), or never seen since the controller started
    /// (`None`).
    Away { since_ms: Option<i64> },
}

/// Everything the rules look at besides the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation<'a> {
    pub agent: AgentSeen<'a>,
    /// When the controller told this runner to stop, if it did.
    pub stop_sent_ms: Option<i64>,
    pub now_ms: i64,
    /// When this controller started.
    pub started_ms: i64,
}

/// The record's new state, when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub lifecycle: RunnerLifecycle,
    pub exit_code: Option<i32>,
    pub reason: String,
}

/// How a finished runner ended, for containment and cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It took a job (GitHub removes an ephemeral runner's registration after its one job).
    Served,
    /// It exited on its own without a job within the boot window: a crash loop in the making.
    Crashed,
    /// Its agent or engine failed it (phase `failed`) before it took a job.
    Refused,
    /// It ended without a job otherwise (stopped by us, idle, lost with its agent).
    Unused,
}

/// How a finished runner's registration at GitHub is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistration {
    /// Nothing to do (GitHub removed it after its job).
    None,
    /// By the id on record.
    ById,
    /// Found by name first: the id is not on record (a token-mode runner registered itself, or
    /// the controller that made a JIT registration died before recording its id).
    ByName,
}

/// How to remove the registration of a runner that ended as `ending`.
pub fn deregistration(token_mode: bool, ending: Ending, has_id: bool) -> Deregistration {
    match (token_mode, ending, has_id) {
        // A token-registered runner may outlive its job at GitHub (non-ephemeral images).
        (true, _, _) => Deregistration::ByName,
        (false, Ending::Served, _) => Deregistration::None,
        (false, _, true) => Deregistration::ById,
        (false, _, false) => Deregistration::ByName,
    }
}

/// How long after this scheduler started (a restart, or a new leader's tenure) an idle runner
/// on an agent it has not heard from yet still counts: the agent is likely reconnecting
/// (agents back off up to 30 s by default), and starting a second runner for the demand that
/// runner serves would start two for one job.
pub const RECONNECT_GRACE_MS: i64 = 30_000;

/// What the scheduler knows of a runner's agent right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPresence {
    Connected,
    /// Connected earlier in this scheduler's life, gone since.
    Disconnected,
    /// Not heard from since this scheduler started.
    NotYetSeen,
}

/// Whether a runner holds its owner's capacity and serves demand: a busy one always; an idle
/// one while its agent is connected, or has not had the time to reconnect to a scheduler that
/// just started ([`RECONNECT_GRACE_MS`]). An idle runner of an agent that went away is likely
/// gone: its demand is served elsewhere.
pub fn holds_capacity(busy: bool, agent: AgentPresence, now_ms: i64, started_ms: i64) -> bool {
    match agent {
        _ if busy => true,
        AgentPresence::Connected => true,
        AgentPresence::Disconnected => false,
        AgentPresence::NotYetSeen => now_ms - started_ms < RECONNECT_GRACE_MS,
    }
}

pub fn next(r: &RunnerRecord, obs: &Observation<'_>, limits: &Limits) -> Option<Change> {
    let change = |lifecycle, exit_code, reason: &str| Change {
        lifecycle,
        exit_code,
        reason: reason.to_owned(),
    };
    let finished = |reason: &str| change(RunnerLifecycle::Finished, r.exit_code, reason);
    let proposed = match obs.agent {
        AgentSeen::Connected(Some(report)) => match report.phase {
            RunnerPhase::Starting => change(r.lifecycle, r.exit_code, report.reason),
            RunnerPhase::Running => change(RunnerLifecycle::Running, r.exit_code, &r.reason),
            RunnerPhase::Exited | RunnerPhase::Failed => {
                let reason = if report.reason.is_empty() {
                    format!("{:?}", report.phase).to_ascii_lowercase()
                } else {
                    report.reason.to_owned()
                };
                change(RunnerLifecycle::Finished, report.exit_code, &reason)
            }
        },
        AgentSeen::Connected(None) => match r.lifecycle {
            RunnerLifecycle::Requested => {
                finished("never started (the controller restarted before sending it)")
            }
            RunnerLifecycle::Running => finished("no longer on its agent"),
            _ if obs.now_ms - r.updated_ms > limits.start_deadline_ms => {
                finished("the agent never reported this runner")
            }
            _ => change(r.lifecycle, r.exit_code, &r.reason),
        },
        AgentSeen::Away { since_ms } => {
            let away_since = since_ms.unwrap_or(obs.started_ms).max(r.updated_ms);
            if obs.now_ms - away_since > limits.agent_lost_ms {
                finished("its agent is gone")
            } else {
                change(r.lifecycle, r.exit_code, &r.reason)
            }
        }
    };
    let proposed = match obs.stop_sent_ms {
        Some(at) if proposed.lifecycle.is_active() && obs.now_ms - at > limits.stop_deadline_ms => {
            finished("told to stop and not confirmed within the stop deadline")
        }
        _ => proposed,
    };
    let unchanged = (
        proposed.lifecycle,
        proposed.exit_code,
        proposed.reason.as_str(),
    ) == (r.lifecycle, r.exit_code, r.reason.as_str());
    (!unchanged).then_some(proposed)
}

/// Whether a runner whose record becomes `change` just ended after a job GitHub has not
/// reported yet: it was on its agent (starting or running: a short job can come and go between
/// two reports), knows no job, and exited 0 on its own (an ephemeral runner exits 0 only after
/// its one job; a stopped or crashed one does not count).
pub fn settles(r: &RunnerRecord, obs: &Observation<'_>, change: &Change) -> bool {
    obs.stop_sent_ms.is_none()
        && matches!(
            r.lifecycle,
            RunnerLifecycle::Starting | RunnerLifecycle::Running
        )
        && r.job_id.is_none()
        && change.lifecycle == RunnerLifecycle::Finished
        && change.exit_code == Some(0)
}

/// How a runner that just finished ended.
pub fn ending(r: &RunnerRecord, obs: &Observation<'_>, limits: &Limits) -> Ending {
    if r.job_id.is_some() {
        return Ending::Served;
    }
    let phase = match obs.agent {
        AgentSeen::Connected(Some(report)) if obs.stop_sent_ms.is_none() => report.phase,
        _ => return Ending::Unused,
    };
    match phase {
        RunnerPhase::Failed => Ending::Refused,
        // Exit code 0 is how a runner ends after its job: one whose job's webhooks were lost
        // (a controller down meanwhile) must not pass for a crash.
        RunnerPhase::Exited
            if r.exit_code != Some(0) && obs.now_ms - r.created_ms < limits.boot_window_ms =>
        {
            Ending::Crashed
        }
        _ => Ending::Unused,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn how_a_finished_runners_registration_is_removed() {
        use super::{Deregistration as D, Ending::*, deregistration};
        let cases = [
            (true, Served, true, D::ByName),
            (true, Unused, false, D::ByName),
            (false, Served, true, D::None),
            (false, Unused, true, D::ById),
            (false, Crashed, true, D::ById),
            // A JIT registration whose id its (killed) controller never recorded.
            (false, Unused, false, D::ByName),
            (false, Refused, false, D::ByName),
        ];
        for (token, ending, has_id, expected) in cases {
            assert_eq!(
                deregistration(token, ending, has_id),
                expected,
                "token={token} {ending:?} id={has_id}"
            );
        }
    }

    #[test]
    fn an_idle_runner_holds_capacity_while_its_agent_is_connected_or_may_still_reconnect() {
        use super::{AgentPresence::*, RECONNECT_GRACE_MS, holds_capacity};
        let start = 1_000_000;
        let cases = [
            (
                "busy, agent gone",
                true,
                Disconnected,
                start + 10 * RECONNECT_GRACE_MS,
                true,
            ),
            (
                "idle, agent connected",
                false,
                Connected,
                start + 10 * RECONNECT_GRACE_MS,
                true,
            ),
            (
                "idle, agent went away",
                false,
                Disconnected,
                start + 1,
                false,
            ),
            (
                "idle, agent not back yet after a restart or failover",
                false,
                NotYetSeen,
                start + 1,
                true,
            ),
            (
                "idle, agent not back within the grace",
                false,
                NotYetSeen,
                start + RECONNECT_GRACE_MS,
                false,
            ),
        ];
        for (what, busy, agent, now, expected) in cases {
            assert_eq!(holds_capacity(busy, agent, now, start), expected, "{what}");
        }
    }

    use super::*;
    use shared::arch::Arch;

    const LIMITS: Limits = Limits {
        start_deadline_ms: 600_000,
        agent_lost_ms: 300_000,
        stop_deadline_ms: 120_000,
        boot_window_ms: 60_000,
    };

    fn record(lifecycle: RunnerLifecycle) -> RunnerRecord {
        RunnerRecord {
            id: "r-1".into(),
            name: "gha-acme-1".into(),
            owner: "acme".into(),
            repo: None,
            agent: "host".into(),
            arch: Arch::Amd64,
            labels: vec![],
            lifecycle,
            for_job: Some(7),
            job_id: None,
            github_id: Some(42),
            exit_code: None,
            reason: String::new(),
            created_ms: 1_000,
            updated_ms: 1_000,
        }
    }

    fn report(phase: RunnerPhase, exit_code: Option<i32>, reason: &str) -> Report<'_> {
        Report {
            phase,
            exit_code,
            reason,
        }
    }

    fn obs(agent: AgentSeen<'_>, now_ms: i64) -> Observation<'_> {
        Observation {
            agent,
            stop_sent_ms: None,
            now_ms,
            started_ms: 0,
        }
    }

    use RunnerLifecycle::{Finished, Requested, Running, Starting};
    use RunnerPhase as P;

    #[test]
    fn only_a_running_runner_that_exits_0_unstopped_and_without_a_known_job_settles() {
        let exited = |code| Change {
            lifecycle: Finished,
            exit_code: Some(code),
            reason: "exited".into(),
        };
        let o = obs(AgentSeen::Connected(None), 5_000);
        assert!(settles(&record(Running), &o, &exited(0)));
        assert!(!settles(&record(Running), &o, &exited(1)), "crashed");
        assert!(
            settles(&record(Starting), &o, &exited(0)),
            "a short job between two reports"
        );
        assert!(
            !settles(&record(Requested), &o, &exited(0)),
            "never on its agent"
        );
        let mut served = record(Running);
        served.job_id = Some(7);
        assert!(!settles(&served, &o, &exited(0)), "its job is known");
        let stopped = Observation {
            stop_sent_ms: Some(4_000),
            ..o
        };
        assert!(
            !settles(&record(Running), &stopped, &exited(0)),
            "we stopped it"
        );
    }

    #[test]
    fn the_lifecycle_table() {
        let pending = "Unschedulable: 0/3 nodes";
        // (case, lifecycle before, agent, now, expected lifecycle and reason; None = unchanged)
        type Case<'a> = (
            &'a str,
            RunnerLifecycle,
            AgentSeen<'a>,
            i64,
            Option<(RunnerLifecycle, &'a str)>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "starting keeps the agent's reason",
                Starting,
                AgentSeen::Connected(Some(report(P::Starting, None, pending))),
                2_000,
                Some((Starting, pending)),
            ),
            (
                "running is recorded",
                Starting,
                AgentSeen::Connected(Some(report(P::Running, None, ""))),
                2_000,
                Some((Running, "")),
            ),
            (
                "running again changes nothing",
                Running,
                AgentSeen::Connected(Some(report(P::Running, None, ""))),
                2_000,
                None,
            ),
            (
                "an exit finishes it",
                Running,
                AgentSeen::Connected(Some(report(P::Exited, Some(0), ""))),
                2_000,
                Some((Finished, "exited")),
            ),
            (
                "a failure keeps the agent's reason",
                Starting,
                AgentSeen::Connected(Some(report(P::Failed, None, "image not found"))),
                2_000,
                Some((Finished, "image not found")),
            ),
            (
                "a requested runner the agent never got is replaced",
                Requested,
                AgentSeen::Connected(None),
                2_000,
                Some((
                    Finished,
                    "never started (the controller restarted before sending it)",
                )),
            ),
            (
                "a running runner no longer listed is gone",
                Running,
                AgentSeen::Connected(None),
                2_000,
                Some((Finished, "no longer on its agent")),
            ),
            (
                "a starting runner not yet listed waits",
                Starting,
                AgentSeen::Connected(None),
                2_000,
                None,
            ),
            (
                "a starting runner never listed is given up",
                Starting,
                AgentSeen::Connected(None),
                1_000 + 600_001,
                Some((Finished, "the agent never reported this runner")),
            ),
            (
                "an away agent is given time",
                Running,
                AgentSeen::Away {
                    since_ms: Some(5_000),
                },
                5_000 + 300_000,
                None,
            ),
            (
                "an agent away too long loses its runners",
                Running,
                AgentSeen::Away {
                    since_ms: Some(5_000),
                },
                5_000 + 300_001,
                Some((Finished, "its agent is gone")),
            ),
            (
                "an agent never seen since start counts from the record's update",
                Running,
                AgentSeen::Away { since_ms: None },
                1_000 + 300_001,
                Some((Finished, "its agent is gone")),
            ),
        ];
        for (case, before, agent, now, expected) in cases {
            let r = record(before);
            let got = next(&r, &obs(agent, now), &LIMITS).map(|c| (c.lifecycle, c.reason));
            let expected = expected.map(|(l, reason)| (l, reason.to_owned()));
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn an_exit_records_the_exit_code() {
        let r = record(Running);
        let change = next(
            &r,
            &obs(
                AgentSeen::Connected(Some(report(P::Exited, Some(3), ""))),
                2_000,
            ),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(change.exit_code, Some(3));
    }

    #[test]
    fn a_stop_not_confirmed_within_the_deadline_counts_as_gone() {
        let r = record(Running);
        let running = AgentSeen::Connected(Some(report(P::Running, None, "")));
        let mut o = obs(running, 10_000 + 120_000);
        o.stop_sent_ms = Some(10_000);
        assert_eq!(next(&r, &o, &LIMITS), None, "within the deadline");
        o.now_ms += 1;
        let change = next(&r, &o, &LIMITS).unwrap();
        assert_eq!(change.lifecycle, Finished);
        assert!(change.reason.contains("stop deadline"), "{}", change.reason);
    }

    #[test]
    fn endings_tell_a_crash_from_a_served_or_stopped_runner() {
        let exited = AgentSeen::Connected(Some(report(P::Exited, Some(1), "")));
        let r = record(Running);
        let mut r = r;
        r.exit_code = Some(1);
        assert_eq!(ending(&r, &obs(exited, 30_000), &LIMITS), Ending::Crashed);
        let mut clean = r.clone();
        clean.exit_code = Some(0);
        assert_eq!(
            ending(&clean, &obs(exited, 30_000), &LIMITS),
            Ending::Unused,
            "exit 0: served a job whose webhooks were lost, not a crash"
        );
        assert_eq!(
            ending(&r, &obs(exited, 1_000 + 60_000), &LIMITS),
            Ending::Unused,
            "past the boot window it merely ended"
        );
        let mut stopped = obs(exited, 30_000);
        stopped.stop_sent_ms = Some(20_000);
        assert_eq!(
            ending(&r, &stopped, &LIMITS),
            Ending::Unused,
            "we stopped it"
        );
        assert_eq!(
            ending(
                &r,
                &obs(AgentSeen::Away { since_ms: None }, 30_000),
                &LIMITS
            ),
            Ending::Unused,
            "lost with its agent"
        );
        let failed = AgentSeen::Connected(Some(report(P::Failed, None, "image not found")));
        assert_eq!(
            ending(&r, &obs(failed, 1_000_000), &LIMITS),
            Ending::Refused
        );
        let mut served = record(Running);
        served.job_id = Some(7);
        assert_eq!(
            ending(&served, &obs(exited, 30_000), &LIMITS),
            Ending::Served
        );
    }
}
