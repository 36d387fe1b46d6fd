//! Turns the controller's state into the dashboard's events by comparing what it sees now with
//! what it saw last time: jobs (from the store, which the webhook intake and the reconciler
//! write), the scheduler's decisions, runners and agents.
//!
//! Level-triggered and apart from the components it watches: the intake and the scheduler stay
//! untouched and the observer can never slow them down. [`diff`] is a pure function of two
//! [`Snapshot`]s; [`Observer::run`] does the I/O every `interval`. A change that comes and goes
//! within one interval is not seen; the job's stored timestamps still are (see `views::timeline`).
//! The scheduler's explanations of a waiting job are also added to its stored timeline
//! ([`crate::store::timeline`]), so `gha-controller job ID` and the job page still show them
//! after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::events::{EventKind, EventLog, NewEvent, Served};
use crate::registry::AgentRegistry;
use crate::scheduler::DecisionsHandle;
use crate::scheduler::planner::WaitReason;
use crate::store::{
    JobRecord, JobState, Owner, RunnerLifecycle, RunnerRecord, StateStore, TimelineEntry,
};

/// A job as the observer remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSeen {
    pub repo: String,
    pub name: String,
    pub state: JobState,
    pub queued_ms: Option<i64>,
    pub runner_name: Option<String>,
    pub conclusion: Option<String>,
}

impl From<&JobRecord> for JobSeen {
    fn from(j: &JobRecord) -> Self {
        Self {
            repo: j.repo.clone(),
            name: j.name.clone(),
            state: j.state,
            queued_ms: j.queued_ms,
            runner_name: j.runner_name.clone(),
            conclusion: j.conclusion.clone(),
        }
    }
}

/// A runner as the observer remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSeen {
    pub name: String,
    pub owner: Owner,
    pub agent: String,
    pub lifecycle: RunnerLifecycle,
    pub for_job: Option<u64>,
    pub job_id: Option<u64>,
    pub reason: String,
}

impl From<&RunnerRecord> for RunnerSeen {
    fn from(r: &RunnerRecord) -> Self {
        Self {
            name: r.name.clone(),
            owner: r.owner.clone(),
            agent: r.agent.clone(),
            lifecycle: r.lifecycle,
            for_job: r.for_job,
            job_id: r.job_id,
            reason: r.reason.clone(),
        }
    }
}

/// An agent's state that matters to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSeen {
    pub connected: bool,
    pub healthy: bool,
    pub draining: bool,
    pub unhealthy_reason: String,
}

/// Everything compared between two looks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Jobs queued, running on one of our runners, or changed since the last look.
    pub jobs: BTreeMap<(Owner, u64), JobSeen>,
    /// The scheduler's explanation of each waiting job.
    pub waiting: BTreeMap<(Owner, u64), String>,
    /// The same explanations without what changes on its own (a back-off's countdown), which
    /// is what is compared, so a countdown is not a new event at every look; a job missing
    /// here is compared by its `waiting` text.
    pub waiting_gist: BTreeMap<(Owner, u64), String>,
    /// Active runners by id.
    pub runners: BTreeMap<String, RunnerSeen>,
    pub agents: BTreeMap<String, AgentSeen>,
    /// Failing causes (back-off or open circuit), by a display key, with their reason.
    pub failing: BTreeMap<String, (String, bool)>,
    pub last_error: Option<String>,
}

/// The events that lead from `prev` to `next`, and the jobs that started running.
pub fn diff(prev: &Snapshot, next: &Snapshot, now_ms: i64) -> (Vec<NewEvent>, Vec<Served>) {
    let mut out = Vec::new();
    let mut served = Vec::new();
    for ((owner, id), job) in &next.jobs {
        let before = prev.jobs.get(&(owner.clone(), *id));
        if before.map(|b| b.state) == Some(job.state) {
            continue;
        }
        let what = match job.state {
            JobState::Waiting => "is waiting for approval".to_owned(),
            JobState::Queued => format!("queued ({} in {})", job.name, job.repo),
            JobState::InProgress => format!(
                "in progress on {}",
                job.runner_name.as_deref().unwrap_or("a runner")
            ),
            JobState::Completed => format!(
                "completed ({})",
                job.conclusion.as_deref().unwrap_or("unknown")
            ),
        };
        out.push(NewEvent::new(now_ms, EventKind::Job, format!("job {id} {what}")).job(owner, *id));
        if job.state >= JobState::InProgress
            && before.is_none_or(|b| b.state < JobState::InProgress)
            && let Some(queued) = job.queued_ms
        {
            served.push(Served {
                owner: owner.clone(),
                at_ms: now_ms,
                queue_ms: (now_ms - queued).max(0),
            });
        }
    }
    for (key, why) in &next.waiting {
        let gist = |s: &Snapshot| s.waiting_gist.get(key).or(s.waiting.get(key)).cloned();
        if gist(prev) != gist(next) {
            out.push(
                NewEvent::new(
                    now_ms,
                    EventKind::Decision,
                    format!("job {} waits: {why}", key.1),
                )
                .job(&key.0, key.1),
            );
        }
    }
    for (id, r) in &next.runners {
        let before = prev.runners.get(id);
        if before.map(|b| (b.lifecycle, b.job_id)) == Some((r.lifecycle, r.job_id)) {
            continue;
        }
        let text = match (before.map(|b| b.lifecycle), r.lifecycle, r.job_id) {
            (_, _, Some(job)) if before.is_none_or(|b| b.job_id != Some(job)) => {
                format!("runner {} took job {job}", r.name)
            }
            (None, RunnerLifecycle::Requested, _) => {
                format!("runner {} planned on agent {}", r.name, r.agent)
            }
            (_, RunnerLifecycle::Starting, _) => {
                format!("runner {} is starting on agent {}", r.name, r.agent)
            }
            (_, RunnerLifecycle::Running, _) => {
                format!("runner {} is running on agent {}", r.name, r.agent)
            }
            (_, lifecycle, _) => format!("runner {} is {}", r.name, lifecycle.as_str()),
        };
        let mut e = NewEvent::new(now_ms, EventKind::Runner, text)
            .runner(&r.name)
            .agent(&r.agent)
            .owner(&r.owner);
        if let Some(job) = r.job_id.or(r.for_job) {
            e = e.job(&r.owner, job);
        }
        out.push(e);
    }
    for (id, r) in &prev.runners {
        if !next.runners.contains_key(id) {
            let why = if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.reason)
            };
            let mut e = NewEvent::new(
                now_ms,
                EventKind::Runner,
                format!("runner {} ended{why}", r.name),
            )
            .runner(&r.name)
            .agent(&r.agent)
            .owner(&r.owner);
            if let Some(job) = r.job_id.or(r.for_job) {
                e = e.job(&r.owner, job);
            }
            out.push(e);
        }
    }
    for (name, a) in &next.agents {
        let before = prev.agents.get(name);
        if before == Some(a) {
            continue;
        }
        let mut changes = Vec::new();
        if before.map(|b| b.connected) != Some(a.connected) {
            changes.push(
                if a.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .to_owned(),
            );
        }
        if before.map(|b| b.healthy) != Some(a.healthy) && before.is_some()
            || (before.is_none() && !a.healthy)
        {
            changes.push(if a.healthy {
                "is healthy".to_owned()
            } else {
                format!("is unhealthy: {}", a.unhealthy_reason)
            });
        }
        if a.draining && before.is_none_or(|b| !b.draining) {
            changes.push("is draining".to_owned());
        }
        if !changes.is_empty() {
            let kind = if a.healthy && a.connected {
                EventKind::Agent
            } else {
                EventKind::Error
            };
            out.push(
                NewEvent::new(now_ms, kind, format!("agent {name} {}", changes.join(", ")))
                    .agent(name),
            );
        }
    }
    for (key, (reason, open)) in &next.failing {
        if prev.failing.get(key) != Some(&(reason.clone(), *open)) {
            let what = if *open { "circuit open" } else { "backing off" };
            out.push(NewEvent::new(
                now_ms,
                EventKind::Error,
                format!("{key}: {what}: {reason}"),
            ));
        }
    }
    for key in prev.failing.keys() {
        if !next.failing.contains_key(key) {
            out.push(NewEvent::new(
                now_ms,
                EventKind::Decision,
                format!("{key}: recovered"),
            ));
        }
    }
    if let Some(e) = &next.last_error
        && prev.last_error.as_ref() != Some(e)
    {
        out.push(NewEvent::new(
            now_ms,
            EventKind::Error,
            format!("scheduler: {e}"),
        ));
    }
    (out, served)
}

/// `reason` without the parts that change by themselves between looks (a back-off's time to
/// the next try).
pub fn steady(reason: &WaitReason) -> WaitReason {
    let mut r = reason.clone();
    if let WaitReason::BackingOff { next_try_in, .. } = &mut r {
        next_try_in.clear();
    }
    r
}

/// The stored timeline entry of a scheduler's explanation about a job (`None` for the other
/// events: webhooks and the executor write theirs when they happen, see
/// [`crate::store::timeline`]).
pub fn timeline_entry(e: &NewEvent) -> Option<TimelineEntry> {
    let (Some(owner), Some(job), EventKind::Decision) = (&e.owner, e.job, e.kind) else {
        return None;
    };
    let mut entry = TimelineEntry::new(owner, job, e.at_ms, e.kind.as_str(), e.message.clone());
    entry.runner = e.runner.clone();
    entry.agent = e.agent.clone();
    Some(entry)
}

/// How many jobs the observer follows at most (those past it are still in the store and on
/// the pages; only their state changes go unrecorded).
pub const MAX_FOLLOWED_JOBS: usize = 10_000;
/// How many of the oldest queued jobs each look reads. A look every 500 ms that read the whole
/// queue cost more than the webhook intake it watched (a profile of `bench webhook`: reading and
/// comparing the queue was ~40 % of all instructions with a few thousand jobs queued, and it
/// grew with the queue). A job deeper in the queue is followed once it is among these (its
/// `queued` event comes then); one that arrives and leaves while deeper is not seen, as a
/// change within one interval is not.
pub const QUEUED_FOLLOWED: usize = 1_000;

/// The task that looks every `interval` and records what changed.
pub struct Observer {
    pub store: Arc<dyn StateStore>,
    pub registry: AgentRegistry,
    pub decisions: DecisionsHandle,
    pub log: EventLog,
    pub interval: Duration,
}

impl Observer {
    async fn look(&self, prev: &Snapshot) -> Result<Snapshot, crate::store::StoreError> {
        let mut next = Snapshot::default();
        for j in &self.store.oldest_queued_jobs(QUEUED_FOLLOWED).await? {
            next.jobs.insert((j.owner.clone(), j.id), j.into());
        }
        let runners = self.store.active_runners().await?;
        for r in &runners {
            next.runners.insert(r.id.clone(), r.into());
        }
        // Jobs seen before and not queued now moved on (or were pruned): ask the store; so do
        // the jobs our runners took.
        let mut follow: Vec<(Owner, u64)> = prev
            .jobs
            .iter()
            .filter(|(k, j)| j.state != JobState::Completed && !next.jobs.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        follow.extend(
            runners
                .iter()
                .filter_map(|r| r.job_id.map(|j| (r.owner.clone(), j))),
        );
        for key in follow {
            if next.jobs.len() >= MAX_FOLLOWED_JOBS || next.jobs.contains_key(&key) {
                continue;
            }
            if let Some(j) = self.store.job(&key.0, key.1).await? {
                next.jobs.insert(key, (&j).into());
            }
        }
        let decisions = self.decisions.get();
        for (key, reason) in &decisions.waiting {
            if next.jobs.contains_key(key) {
                next.waiting
                    .insert(key.clone(), crate::http::status::explain(reason));
                next.waiting_gist
                    .insert(key.clone(), crate::http::status::explain(&steady(reason)));
            }
        }
        for b in &decisions.containment {
            let key = match &b.key {
                crate::scheduler::backoff::Key::Owner { owner } => format!("owner {owner}"),
                crate::scheduler::backoff::Key::Agent { agent } => format!("agent {agent}"),
                crate::scheduler::backoff::Key::Image { owner, image } => {
                    format!("owner {owner} image {image}")
                }
            };
            next.failing.insert(key, (b.reason.clone(), b.circuit_open));
        }
        next.last_error = decisions.last_error.clone();
        for a in self.registry.snapshot() {
            next.agents.insert(
                a.name.to_string(),
                AgentSeen {
                    connected: a.connected,
                    healthy: a.healthy,
                    draining: a.draining,
                    unhealthy_reason: a.unhealthy_reason.clone(),
                },
            );
        }
        Ok(next)
    }

    /// Looks until `shutdown`. A failed look is logged and retried at the next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut prev = Snapshot::default();
        let mut first = true;
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.look(&prev).await {
                Ok(next) => {
                    let (events, served) = diff(&prev, &next, shared::runner::now_ms());
                    // The first look compares with nothing: what it reports was recorded by
                    // the process before this one, so it is not added to the timelines again.
                    if !first {
                        let entries: Vec<TimelineEntry> =
                            events.iter().filter_map(timeline_entry).collect();
                        if let Err(error) = self.store.append_timeline(entries).await {
                            warn!(%error, "cannot record job timelines; the next changes are tried again");
                        }
                    }
                    first = false;
                    self.log.record(events);
                    for s in served {
                        self.log.served(s);
                    }
                    prev = next;
                }
                Err(error) => warn!(error = %error, "dashboard observer could not read the store"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> JobSeen {
        JobSeen {
            repo: "app".into(),
            name: "build".into(),
            state,
            queued_ms: Some(1_000),
            runner_name: Some("r-1".into()),
            conclusion: Some("success".into()),
        }
    }

    fn runner(lifecycle: RunnerLifecycle, job_id: Option<u64>) -> RunnerSeen {
        RunnerSeen {
            name: "r-1".into(),
            owner: Owner::new("acme"),
            agent: "host-1".into(),
            lifecycle,
            for_job: Some(7),
            job_id,
            reason: String::new(),
        }
    }

    fn key(id: u64) -> (Owner, u64) {
        (Owner::new("acme"), id)
    }

    fn messages(prev: &Snapshot, next: &Snapshot) -> Vec<String> {
        diff(prev, next, 5_000)
            .0
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn a_back_off_counting_down_is_not_a_new_decision() {
        let backing_off = |next: &str| WaitReason::BackingOff {
            cause: "github".into(),
            detail: "owner acme: refused".into(),
            circuit_open: false,
            next_try_in: next.into(),
        };
        let look = |reason: &WaitReason| {
            let mut s = Snapshot::default();
            s.jobs.insert(key(7), job(JobState::Queued));
            s.waiting
                .insert(key(7), crate::http::status::explain(reason));
            s.waiting_gist
                .insert(key(7), crate::http::status::explain(&steady(reason)));
            s
        };
        let (a, b) = (look(&backing_off("20s")), look(&backing_off("19s")));
        assert!(messages(&a, &b).is_empty(), "{:?}", messages(&a, &b));
        let c = look(&WaitReason::BackingOff {
            cause: "github".into(),
            detail: "owner acme: unreachable".into(),
            circuit_open: false,
            next_try_in: "5s".into(),
        });
        let m = messages(&b, &c);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("unreachable") && m[0].contains("5s"), "{m:?}");
    }

    #[test]
    fn each_change_is_one_event_and_no_change_is_none() {
        let empty = Snapshot::default();
        let mut queued = Snapshot::default();
        queued.jobs.insert(key(7), job(JobState::Queued));
        queued
            .waiting
            .insert(key(7), "no agent is connected".into());
        let mut planned = queued.clone();
        planned.waiting.insert(
            key(7),
            "a runner is being started for it on agent host-1".into(),
        );
        planned
            .runners
            .insert("id-1".into(), runner(RunnerLifecycle::Requested, None));
        let mut running = planned.clone();
        running.jobs.insert(key(7), job(JobState::InProgress));
        running.waiting.clear();
        running
            .runners
            .insert("id-1".into(), runner(RunnerLifecycle::Running, Some(7)));
        let mut done = running.clone();
        done.jobs.insert(key(7), job(JobState::Completed));
        done.runners.clear();

        let table: Vec<(&Snapshot, &Snapshot, Vec<&str>)> = vec![
            (&empty, &empty, vec![]),
            (&queued, &queued, vec![]),
            (
                &empty,
                &queued,
                vec![
                    "job 7 queued (build in app)",
                    "job 7 waits: no agent is connected",
                ],
            ),
            (
                &queued,
                &planned,
                vec![
                    "job 7 waits: a runner is being started for it on agent host-1",
                    "runner r-1 planned on agent host-1",
                ],
            ),
            (
                &planned,
                &running,
                vec!["job 7 in progress on r-1", "runner r-1 took job 7"],
            ),
            (
                &running,
                &done,
                vec!["job 7 completed (success)", "runner r-1 ended"],
            ),
        ];
        for (prev, next, want) in table {
            assert_eq!(messages(prev, next), want);
        }
    }

    #[test]
    fn job_events_carry_owner_and_id_and_serving_records_queue_time() {
        let mut prev = Snapshot::default();
        prev.jobs.insert(key(7), job(JobState::Queued));
        let mut next = Snapshot::default();
        next.jobs.insert(key(7), job(JobState::InProgress));
        next.jobs
            .insert((Owner::new("bob"), 7), job(JobState::Queued));
        let (events, served) = diff(&prev, &next, 5_000);
        let owners: Vec<_> = events
            .iter()
            .map(|e| (e.owner.clone().unwrap().to_string(), e.job))
            .collect();
        assert_eq!(
            owners,
            vec![("acme".into(), Some(7)), ("bob".into(), Some(7))]
        );
        assert_eq!(
            served,
            vec![Served {
                owner: Owner::new("acme"),
                at_ms: 5_000,
                queue_ms: 4_000
            }]
        );
        // Seen running already: not served twice.
        assert!(diff(&next, &next, 6_000).1.is_empty());
    }

    #[test]
    fn agents_and_failures_are_reported_once() {
        let mut prev = Snapshot::default();
        let ok = AgentSeen {
            connected: true,
            healthy: true,
            draining: false,
            unhealthy_reason: String::new(),
        };
        let mut next = Snapshot::default();
        next.agents.insert("host-1".into(), ok.clone());
        assert_eq!(messages(&prev, &next), vec!["agent host-1 connected"]);
        prev = next.clone();
        next.agents.insert(
            "host-1".into(),
            AgentSeen {
                draining: true,
                ..ok.clone()
            },
        );
        assert_eq!(messages(&prev, &next), vec!["agent host-1 is draining"]);
        prev = next.clone();
        next.failing
            .insert("owner acme".into(), ("refused 403".into(), true));
        let (events, _) = diff(&prev, &next, 1);
        assert_eq!(events[0].kind, EventKind::Error);
        assert_eq!(events[0].message, "owner acme: circuit open: refused 403");
        assert!(diff(&next, &next, 2).0.is_empty());
        assert_eq!(messages(&next, &prev), vec!["owner acme: recovered"]);
    }
}
