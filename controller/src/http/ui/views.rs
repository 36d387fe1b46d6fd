//! The dashboard's view models: plain data built by pure functions from what the controller
//! knows ([`Inputs`]), so every number and sentence on a page is table-tested without a server
//! or a browser. The pages only lay them out.

use std::collections::BTreeMap;

use shared::github::Quota;

use super::events::Served;
use crate::registry::AgentView;
use crate::scheduler::planner::WaitReason;
use crate::store::{JobRecord, Owner, RunnerLifecycle, RunnerRecord, TimelineEntry};

/// An owner's configuration as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLimit {
    pub name: String,
    pub max_runners: u32,
}

/// Everything the pages are built from, read once per request.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub now_ms: i64,
    pub owners: Vec<OwnerLimit>,
    /// Jobs in state `queued`, oldest first.
    pub queued: Vec<JobRecord>,
    /// Runners not finished.
    pub runners: Vec<RunnerRecord>,
    pub agents: Vec<AgentView>,
    pub waiting: BTreeMap<(Owner, u64), WaitReason>,
    /// The reasons of the jobs behind the heads of the queue the scheduler read, by class
    /// (owner, repository, labels): see [`crate::scheduler::Decisions::reason`].
    pub class_waiting: BTreeMap<crate::store::ClassKey, WaitReason>,
    /// Jobs that started running in the last hour.
    pub served: Vec<Served>,
    pub quotas: Vec<(String, Quota)>,
    /// Failing causes: (what, reason, circuit open).
    pub failing: Vec<(String, String, bool)>,
    /// The controller's health reason and last error, when degraded.
    pub degraded: Option<String>,
    pub last_error: Option<String>,
    /// The web address of GitHub (`https://github.com`, or a GHES host).
    pub github_web: String,
    pub runner_image: String,
}

/// A duration for people: `42s`, `3m 05s`, `2h 10m`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The `p`-th percentile (0–100) of `values`, nearest rank; `None` when empty.
pub fn percentile(values: &[i64], p: u32) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (u64::from(p) * v.len() as u64).div_ceil(100).max(1) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// The web address of GitHub for an API URL: `https://api.github.com` → `https://github.com`,
/// `https://ghes.example/api/v3` → `https://ghes.example`.
pub fn github_web(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://api.github.com") {
        return format!("https://github.com{rest}");
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_owned()
}

/// A waiting job on the queue page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub owner: String,
    pub id: u64,
    pub repo: String,
    pub name: String,
    pub labels: String,
    pub age: String,
    pub reason: String,
    pub github_url: String,
}

fn reason_for(inputs: &Inputs, job: &JobRecord) -> String {
    if job.labels.is_empty() {
        return "it names no labels, so no runner can be matched to it; add labels to its runs-on"
            .into();
    }
    inputs
        .waiting
        .get(&(job.owner.clone(), job.id))
        .or_else(|| {
            inputs
                .class_waiting
                .get(&(job.owner.clone(), job.repo.clone(), job.labels.clone()))
        })
        .map(crate::http::status::explain)
        .unwrap_or_else(|| "queued; the scheduler has not looked at it yet".into())
}

pub fn queue(inputs: &Inputs) -> Vec<QueueRow> {
    inputs
        .queued
        .iter()
        .map(|j| QueueRow {
            owner: j.owner.to_string(),
            id: j.id,
            repo: j.repo.clone(),
            name: j.name.clone(),
            labels: j.labels.join(", "),
            age: age(inputs.now_ms - j.queued_ms.unwrap_or(j.first_seen_ms)),
            reason: reason_for(inputs, j),
            github_url: format!(
                "{}/{}/{}/actions/runs/{}/job/{}",
                inputs.github_web, j.owner, j.repo, j.run_id, j.id
            ),
        })
        .collect()
}

/// One owner's line on the overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRow {
    pub name: String,
    pub in_use: usize,
    pub max_runners: u32,
    pub queued: usize,
    /// The oldest waiting job: id, age, why.
    pub oldest: Option<(u64, String, String)>,
    pub served_last_hour: usize,
    pub queue_p50: Option<String>,
    pub queue_p95: Option<String>,
    /// GitHub's core quota for the owner: remaining of limit.
    pub quota: Option<(u64, u64)>,
}

/// Agents of one architecture on the overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchRow {
    pub arch: String,
    pub agents: usize,
    pub healthy: usize,
    pub capacity: u32,
    pub in_use: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub owners: Vec<OwnerRow>,
    pub archs: Vec<ArchRow>,
    /// Things that need a person, in words.
    pub problems: Vec<String>,
    pub queued: usize,
    pub runners: usize,
    pub agents_connected: usize,
}

pub fn overview(inputs: &Inputs) -> Overview {
    let owners = inputs
        .owners
        .iter()
        .map(|o| {
            let owner = Owner::new(&o.name);
            let queued: Vec<&JobRecord> =
                inputs.queued.iter().filter(|j| j.owner == owner).collect();
            let oldest = queued
                .iter()
                .min_by_key(|j| j.queued_ms.unwrap_or(j.first_seen_ms))
                .map(|j| {
                    (
                        j.id,
                        age(inputs.now_ms - j.queued_ms.unwrap_or(j.first_seen_ms)),
                        reason_for(inputs, j),
                    )
                });
            let waits: Vec<i64> = inputs
                .served
                .iter()
                .filter(|s| s.owner == owner && s.at_ms >= inputs.now_ms - 3_600_000)
                .map(|s| s.queue_ms)
                .collect();
            let quota = inputs
                .quotas
                .iter()
                .find(|(name, q)| Owner::new(name) == owner && q.resource == "core")
                .map(|(_, q)| (q.remaining, q.limit));
            OwnerRow {
                name: o.name.clone(),
                in_use: inputs.runners.iter().filter(|r| owner == r.owner).count(),
                max_runners: o.max_runners,
                queued: queued.len(),
                oldest,
                served_last_hour: waits.len(),
                queue_p50: percentile(&waits, 50).map(age),
                queue_p95: percentile(&waits, 95).map(age),
                quota,
            }
        })
        .collect();
    let mut archs: BTreeMap<String, ArchRow> = BTreeMap::new();
    for a in inputs.agents.iter().filter(|a| a.connected) {
        for arch in &a.architectures {
            let row = archs.entry(arch.to_string()).or_insert_with(|| ArchRow {
                arch: arch.to_string(),
                agents: 0,
                healthy: 0,
                capacity: 0,
                in_use: 0,
            });
            row.agents += 1;
            row.healthy += usize::from(a.healthy && !a.draining);
            row.capacity += a.capacity_by_arch.get(arch).copied().unwrap_or(a.capacity);
            row.in_use += inputs
                .runners
                .iter()
                .filter(|r| r.agent == a.name.as_str() && r.arch == *arch)
                .count();
        }
    }
    let mut problems = Vec::new();
    if let Some(reason) = &inputs.degraded {
        problems.push(match &inputs.last_error {
            Some(e) => format!("{reason}: {e}"),
            None => reason.clone(),
        });
    }
    for (what, reason, open) in &inputs.failing {
        if *open {
            problems.push(format!("circuit open for {what}: {reason}"));
        } else {
            problems.push(format!("{what} is backing off: {reason}"));
        }
    }
    for a in &inputs.agents {
        if !a.connected {
            problems.push(format!(
                "agent {} is disconnected{}",
                a.name,
                a.disconnect_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        } else if !a.healthy {
            problems.push(format!(
                "agent {} is unhealthy: {}",
                a.name, a.unhealthy_reason
            ));
        }
    }
    for (owner, q) in &inputs.quotas {
        if q.limit > 0 && q.remaining * 10 < q.limit {
            problems.push(format!(
                "GitHub quota of {owner} ({}) is below 10 %: {} of {} left",
                q.resource, q.remaining, q.limit
            ));
        }
    }
    if inputs.agents.iter().all(|a| !a.connected) {
        problems.push("no agent is connected: no job can be served".into());
    }
    Overview {
        owners,
        archs: archs.into_values().collect(),
        problems,
        queued: inputs.queued.len(),
        runners: inputs.runners.len(),
        agents_connected: inputs.agents.iter().filter(|a| a.connected).count(),
    }
}

/// A runner on the runners page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRow {
    pub name: String,
    pub owner: String,
    pub state: &'static str,
    pub job: Option<u64>,
    pub agent: String,
    pub age: String,
    pub image: String,
    pub reason: String,
}

pub fn runners(inputs: &Inputs) -> Vec<RunnerRow> {
    inputs
        .runners
        .iter()
        .map(|r| RunnerRow {
            name: r.name.clone(),
            owner: r.owner.to_string(),
            state: match (r.lifecycle, r.job_id) {
                (RunnerLifecycle::Running, Some(_)) => "busy",
                (RunnerLifecycle::Running, None) => "idle",
                (l, _) => l.as_str(),
            },
            job: r.job_id.or(r.for_job),
            agent: r.agent.clone(),
            age: age(inputs.now_ms - r.created_ms),
            image: inputs.runner_image.clone(),
            reason: r.reason.clone(),
        })
        .collect()
}

/// An agent on the agents page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRow {
    pub name: String,
    pub archs: String,
    pub runtime: String,
    pub capacity: u32,
    pub running: usize,
    pub labels: String,
    pub version: String,
    pub last_heartbeat: String,
    /// `healthy`, `draining`, `unhealthy: …` or `disconnected`.
    pub state: String,
    pub can_drain: bool,
}

pub fn agents(inputs: &Inputs) -> Vec<AgentRow> {
    inputs
        .agents
        .iter()
        .map(|a| AgentRow {
            name: a.name.to_string(),
            archs: a
                .architectures
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            runtime: format!("{:?}", a.runtime).to_lowercase(),
            capacity: a.capacity,
            running: a.runners.len(),
            labels: a.labels.join(", "),
            version: a.version.clone(),
            last_heartbeat: a.last_heartbeat.clone(),
            state: if !a.connected {
                "disconnected".into()
            } else if a.draining {
                "draining".into()
            } else if !a.healthy {
                format!("unhealthy: {}", a.unhealthy_reason)
            } else {
                "healthy".into()
            },
            can_drain: a.connected && !a.draining,
        })
        .collect()
}

/// One line of a job's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at_ms: i64,
    pub text: String,
}

/// A job's timeline: its stored times merged with its stored entries, oldest first (see
/// [`crate::store::timeline::merged`]).
pub fn timeline(job: &JobRecord, entries: Vec<TimelineEntry>) -> Vec<Step> {
    crate::store::timeline::merged(job, entries)
        .into_iter()
        .map(|e| Step {
            at_ms: e.at_ms,
            text: e.message,
        })
        .collect()
}

/// Formats ms since the epoch as RFC 3339 (UTC, seconds).
pub fn clock(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobState;

    fn job(owner: &str, id: u64, queued_ms: i64, labels: &[&str]) -> JobRecord {
        JobRecord {
            id,
            run_id: 9,
            owner: Owner::new(owner),
            repo: "app".into(),
            name: "build".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            state: JobState::Queued,
            runner_name: None,
            conclusion: None,
            first_seen_ms: queued_ms,
            queued_ms: Some(queued_ms),
            updated_ms: queued_ms,
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            now_ms: 5_000_000,
            owners: vec![
                OwnerLimit {
                    name: "acme".into(),
                    max_runners: 4,
                },
                OwnerLimit {
                    name: "bob".into(),
                    max_runners: 2,
                },
            ],
            queued: vec![
                job("acme", 1, 4_400_000, &["self-hosted"]),
                job("acme", 2, 4_900_000, &["self-hosted", "gpu"]),
                job("bob", 1, 4_990_000, &[]),
            ],
            github_web: "https://github.com".into(),
            ..Default::default()
        }
    }

    #[test]
    fn ages_and_percentiles() {
        for (ms, want) in [
            (0, "0s"),
            (59_999, "59s"),
            (61_000, "1m 01s"),
            (7_260_000, "2h 01m"),
            (-5, "0s"),
        ] {
            assert_eq!(age(ms), want, "{ms}");
        }
        let v = [5, 1, 4, 2, 3];
        assert_eq!(percentile(&v, 50), Some(3));
        assert_eq!(percentile(&v, 95), Some(5));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&(1..=100).collect::<Vec<_>>(), 95), Some(95));
    }

    #[test]
    fn github_web_addresses() {
        for (api, web) in [
            ("https://api.github.com", "https://github.com"),
            ("https://api.github.com/", "https://github.com"),
            ("https://ghes.example/api/v3", "https://ghes.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(github_web(api), web);
        }
    }

    #[test]
    fn the_queue_says_why_each_job_waits_and_links_to_github() {
        let mut i = inputs();
        i.waiting.insert(
            (Owner::new("acme"), 1),
            WaitReason::OwnerAtLimit {
                owner: "acme".into(),
                max_runners: 4,
            },
        );
        // bob's job 1 must not get acme's explanation of job 1.
        let rows = queue(&i);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].age, "10m 00s");
        assert!(
            rows[0].reason.contains("at its limit of 4"),
            "{:?}",
            rows[0]
        );
        assert_eq!(
            rows[0].github_url,
            "https://github.com/acme/app/actions/runs/9/job/1"
        );
        assert!(rows[1].reason.contains("not looked at it yet"));
        assert!(rows[2].reason.contains("names no labels"), "{:?}", rows[2]);
        assert_eq!(rows[1].labels, "self-hosted, gpu");
    }

    #[test]
    fn the_overview_counts_per_owner() {
        let mut i = inputs();
        i.served = vec![
            Served {
                owner: Owner::new("acme"),
                at_ms: 4_990_000,
                queue_ms: 10_000,
            },
            Served {
                owner: Owner::new("acme"),
                at_ms: 4_995_000,
                queue_ms: 70_000,
            },
            // More than an hour ago: not counted.
            Served {
                owner: Owner::new("acme"),
                at_ms: 1,
                queue_ms: 1,
            },
        ];
        i.quotas = vec![(
            "acme".into(),
            Quota {
                resource: "core".into(),
                limit: 5000,
                remaining: 400,
                used: 4600,
                reset: 0,
            },
        )];
        i.failing = vec![("owner bob".into(), "refused 403".into(), true)];
        let o = overview(&i);
        let acme = &o.owners[0];
        assert_eq!((acme.queued, acme.in_use, acme.max_runners), (2, 0, 4));
        assert_eq!(acme.oldest.as_ref().unwrap().0, 1);
        assert_eq!(acme.oldest.as_ref().unwrap().1, "10m 00s");
        assert_eq!(acme.served_last_hour, 2);
        assert_eq!(acme.queue_p50.as_deref(), Some("10s"));
        assert_eq!(acme.queue_p95.as_deref(), Some("1m 10s"));
        assert_eq!(acme.quota, Some((400, 5000)));
        assert_eq!(o.owners[1].queued, 1);
        assert_eq!(o.owners[1].served_last_hour, 0);
        assert_eq!(o.queued, 3);
        let problems = o.problems.join("\n");
        assert!(
            problems.contains("circuit open for owner bob: refused 403"),
            "{problems}"
        );
        assert!(problems.contains("below 10 %: 400 of 5000"), "{problems}");
        assert!(problems.contains("no agent is connected"), "{problems}");
    }

    #[test]
    fn a_timeline_merges_stored_times_and_events_in_order() {
        let mut j = job("acme", 7, 1_000, &["self-hosted"]);
        j.first_seen_ms = 900;
        j.state = JobState::Completed;
        j.updated_ms = 9_000;
        let owner = Owner::new("acme");
        let entries = vec![
            TimelineEntry::new(&owner, 7, 2_000, "runner", "runner r planned".into()),
            TimelineEntry::new(&owner, 7, 1_500, "decision", "job 7 waits: x".into()),
        ];
        let texts: Vec<_> = timeline(&j, entries).into_iter().map(|s| s.text).collect();
        assert_eq!(
            texts,
            vec![
                "first heard of (webhook or reconciler)",
                "queued",
                "job 7 waits: x",
                "runner r planned",
                "last reported completed",
            ]
        );
    }
}
