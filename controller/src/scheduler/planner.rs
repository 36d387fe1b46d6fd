//! The placement planner: a pure, deterministic function from what is wanted (queued jobs) and
//! what exists (agents, runners, limits) to what to do (runners to start and stop) and why each
//! unserved job waits.
//!
//! Rules:
//! - Supply is every runner not yet working on a job. GitHub gives a runner *any* job its labels
//!   match, so a runner is never counted as reserved for the job it was made for: each queued
//!   job, oldest first, consumes one matching idle runner; the jobs left over are the deficit.
//!   A stolen runner therefore leaves a deficit, and a replacement is started.
//! - Matching is GitHub's: a job's labels are a subset (case-insensitive) of the runner's.
//! - Limits: an owner never has more than `max_runners` active runners (requested, starting or
//!   running); an agent never more than its capacity per architecture and in total.
//! - Order: fair across owners, then across an owner's repositories, oldest first within each.
//! - Idle runners with no demand they could serve are stopped after a grace period; any runner
//!   past the runner timeout is stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use shared::arch::{Arch, RuntimeKind};
use shared::ids::AgentName;

/// An owner's limits and labels.
#[derive(Debug, Clone)]
pub struct OwnerLimits {
    /// Lower-cased login.
    pub name: String,
    pub max_runners: u32,
    pub labels: Vec<String>,
    /// Runners register per repository (a user, or a single-repository owner), not per org.
    pub repo_level: bool,
}

/// An agent as the planner sees it.
#[derive(Debug, Clone)]
pub struct AgentSupply {
    pub name: AgentName,
    pub runtime: RuntimeKind,
    pub capacity: BTreeMap<Arch, u32>,
    pub max_runners: u32,
    pub labels: Vec<String>,
    /// Connected, healthy and not draining.
    pub available: bool,
}

/// A queued job.
#[derive(Debug, Clone)]
pub struct PendingJob {
    pub id: u64,
    pub owner: String,
    pub repo: String,
    pub labels: Vec<String>,
    pub queued_ms: i64,
}

/// A runner that exists (not finished).
#[derive(Debug, Clone)]
pub struct ActiveRunner {
    pub id: String,
    pub owner: String,
    /// Repository-level runners serve only this repository.
    pub repo: Option<String>,
    pub agent: String,
    pub arch: Arch,
    pub labels: Vec<String>,
    /// GitHub gave it a job.
    pub busy: bool,
    /// Its container or pod is running.
    pub running: bool,
    pub created_ms: i64,
}

pub struct PlanInput<'a> {
    pub owners: &'a [OwnerLimits],
    pub agents: &'a [AgentSupply],
    pub jobs: &'a [PendingJob],
    pub runners: &'a [ActiveRunner],
    /// `LABELS`: on every runner.
    pub global_labels: &'a [String],
    pub now_ms: i64,
    pub idle_grace_ms: i64,
    pub runner_timeout_ms: i64,
}

/// A runner to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub for_job: u64,
    pub owner: String,
    /// Set for repository-level registration.
    pub repo: Option<String>,
    pub agent: AgentName,
    pub arch: Arch,
    /// Every label the runner registers with.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Idle past the grace period with no demand it could serve.
    Idle,
    /// Older than `RUNNER_TIMEOUT`.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub runner_id: String,
    pub reason: StopReason,
}

/// Why a queued job has no runner yet. Serialized for `GET /api/v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum WaitReason {
    /// A runner exists or is starting that can take it.
    RunnerStarting {
        runner: String,
    },
    /// A runner was planned for it in this activation.
    RunnerPlanned {
        agent: String,
    },
    OwnerAtLimit {
        owner: String,
        max_runners: u32,
    },
    UnknownOwner {
        owner: String,
    },
    NoAgentConnected,
    /// No agent could ever offer these labels (e.g. `ubuntu-latest`: a GitHub-hosted job).
    LabelsNotOffered {
        missing: Vec<String>,
    },
    NoAgentOfArch {
        arch: Arch,
    },
    /// Agents that fit exist but are draining or unhealthy.
    AgentsUnavailable,
    /// Agents that fit are at capacity.
    AgentsFull,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub starts: Vec<Start>,
    pub stops: Vec<Stop>,
    /// For every queued job: why it is not yet running.
    pub waiting: BTreeMap<u64, WaitReason>,
}

fn lower(labels: &[String]) -> BTreeSet<String> {
    labels.iter().map(|l| l.to_ascii_lowercase()).collect()
}

/// GitHub's architecture label for runners.
pub fn arch_label(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x64",
        Arch::Arm64 => "arm64",
    }
}

/// The architecture a job's labels ask for, if any.
fn wanted_arch(labels: &BTreeSet<String>) -> Option<Arch> {
    labels.iter().find_map(|l| match l.as_str() {
        "x64" | "amd64" | "x86_64" => Some(Arch::Amd64),
        "arm64" | "aarch64" => Some(Arch::Arm64),
        _ => None,
    })
}

/// Every label a runner of `owner` on `agent` for `arch` registers with.
pub fn runner_labels(
    agent: &AgentSupply,
    owner: &OwnerLimits,
    arch: Arch,
    global: &[String],
) -> Vec<String> {
    let mut labels = vec![
        "self-hosted".to_owned(),
        "linux".to_owned(),
        arch_label(arch).to_owned(),
    ];
    if agent.runtime == RuntimeKind::Docker {
        labels.push("docker".to_owned());
    }
    for l in global.iter().chain(&owner.labels).chain(&agent.labels) {
        if !labels.iter().any(|have| have.eq_ignore_ascii_case(l)) {
            labels.push(l.clone());
        }
    }
    labels
}

/// Jobs in service order: round-robin across owners, within an owner across repositories,
/// oldest first within each repository.
fn fair_order(jobs: &[PendingJob]) -> Vec<&PendingJob> {
    let mut by_owner: BTreeMap<&str, BTreeMap<&str, Vec<&PendingJob>>> = BTreeMap::new();
    for job in jobs {
        by_owner
            .entry(&job.owner)
            .or_default()
            .entry(&job.repo)
            .or_default()
            .push(job);
    }
    let mut ranked: Vec<(usize, usize, i64, u64, &PendingJob)> = Vec::with_capacity(jobs.len());
    for repos in by_owner.values_mut() {
        let mut queues: Vec<Vec<&PendingJob>> = repos
            .values_mut()
            .map(|q| {
                q.sort_by_key(|j| (j.queued_ms, j.id));
                std::mem::take(q)
            })
            .collect();
        queues.sort_by_key(|q| q.first().map(|j| (j.queued_ms, j.id)));
        let longest = queues.iter().map(Vec::len).max().unwrap_or(0);
        let mut owner_rank = 0;
        for round in 0..longest {
            for (qi, q) in queues.iter().enumerate() {
                if let Some(job) = q.get(round) {
                    ranked.push((owner_rank, qi, job.queued_ms, job.id, job));
                    owner_rank += 1;
                }
            }
        }
    }
    ranked.sort_by_key(|(rank, _, queued, id, _)| (*rank, *queued, *id));
    ranked.into_iter().map(|(.., job)| job).collect()
}

struct AgentLoad {
    per_arch: BTreeMap<Arch, u32>,
    total: u32,
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut plan = Plan::default();
    let owners: HashMap<&str, &OwnerLimits> =
        input.owners.iter().map(|o| (o.name.as_str(), o)).collect();

    // What each owner and agent uses now.
    let mut owner_used: HashMap<&str, u32> = HashMap::new();
    let mut load: HashMap<&str, AgentLoad> = input
        .agents
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                AgentLoad {
                    per_arch: BTreeMap::new(),
                    total: 0,
                },
            )
        })
        .collect();
    for r in input.runners {
        *owner_used.entry(r.owner.as_str()).or_default() += 1;
        if let Some(l) = load.get_mut(r.agent.as_str()) {
            *l.per_arch.entry(r.arch).or_default() += 1;
            l.total += 1;
        }
    }

    // Timeouts first: those runners are going away and serve nobody.
    let mut stopping: BTreeSet<&str> = BTreeSet::new();
    for r in input.runners {
        if input.now_ms - r.created_ms > input.runner_timeout_ms {
            stopping.insert(&r.id);
            plan.stops.push(Stop {
                runner_id: r.id.clone(),
                reason: StopReason::Timeout,
            });
        }
    }

    // Supply: idle runners, each can absorb one matching job.
    let mut idle: Vec<(&ActiveRunner, BTreeSet<String>)> = input
        .runners
        .iter()
        .filter(|r| !r.busy && !stopping.contains(r.id.as_str()))
        .map(|r| (r, lower(&r.labels)))
        .collect();
    idle.sort_by_key(|(r, _)| (r.created_ms, r.id.clone()));
    let mut used_supply = vec![false; idle.len()];

    let ordered = fair_order(input.jobs);
    let mut deficit: Vec<(&PendingJob, BTreeSet<String>)> = Vec::new();
    for job in ordered {
        let wanted = lower(&job.labels);
        let matched = idle.iter().enumerate().position(|(i, (r, labels))| {
            !used_supply[i]
                && r.owner == job.owner
                && r.repo
                    .as_ref()
                    .is_none_or(|repo| repo.eq_ignore_ascii_case(&job.repo))
                && wanted.is_subset(labels)
        });
        match matched {
            Some(i) => {
                used_supply[i] = true;
                plan.waiting.insert(
                    job.id,
                    WaitReason::RunnerStarting {
                        runner: idle[i].0.id.clone(),
                    },
                );
            }
            None => deficit.push((job, wanted)),
        }
    }

    // Start runners for the deficit, within limits.
    for (job, wanted) in deficit {
        let Some(owner) = owners.get(job.owner.as_str()) else {
            plan.waiting.insert(
                job.id,
                WaitReason::UnknownOwner {
                    owner: job.owner.clone(),
                },
            );
            continue;
        };
        let choice = choose_agent(input, owner, &wanted, &load);
        // A job no agent could ever run says so, whatever the owner's limit.
        if let Err(
            reason @ (WaitReason::NoAgentConnected
            | WaitReason::LabelsNotOffered { .. }
            | WaitReason::NoAgentOfArch { .. }),
        ) = &choice
        {
            plan.waiting.insert(job.id, reason.clone());
            continue;
        }
        let used = owner_used.get(owner.name.as_str()).copied().unwrap_or(0);
        if used >= owner.max_runners {
            plan.waiting.insert(
                job.id,
                WaitReason::OwnerAtLimit {
                    owner: owner.name.clone(),
                    max_runners: owner.max_runners,
                },
            );
            continue;
        }
        match choice {
            Ok((agent, arch, labels)) => {
                let l = load
                    .get_mut(agent.name.as_str())
                    .expect("every agent has a load entry");
                *l.per_arch.entry(arch).or_default() += 1;
                l.total += 1;
                *owner_used.entry(owner.name.as_str()).or_default() += 1;
                plan.waiting.insert(
                    job.id,
                    WaitReason::RunnerPlanned {
                        agent: agent.name.to_string(),
                    },
                );
                plan.starts.push(Start {
                    for_job: job.id,
                    owner: owner.name.clone(),
                    repo: owner.repo_level.then(|| job.repo.clone()),
                    agent: agent.name.clone(),
                    arch,
                    labels,
                });
            }
            Err(reason) => {
                plan.waiting.insert(job.id, reason);
            }
        }
    }

    // Idle runners that absorbed no demand: stop them once past the grace period.
    for (i, (r, _)) in idle.iter().enumerate() {
        if !used_supply[i] && r.running && input.now_ms - r.created_ms > input.idle_grace_ms {
            plan.stops.push(Stop {
                runner_id: r.id.clone(),
                reason: StopReason::Idle,
            });
        }
    }
    plan
}

/// The least loaded available agent that can run the job, or why there is none.
fn choose_agent<'a>(
    input: &'a PlanInput<'_>,
    owner: &OwnerLimits,
    wanted: &BTreeSet<String>,
    load: &HashMap<&str, AgentLoad>,
) -> Result<(&'a AgentSupply, Arch, Vec<String>), WaitReason> {
    if input.agents.is_empty() {
        return Err(WaitReason::NoAgentConnected);
    }
    let arch = wanted_arch(wanted);
    let mut fits_labels = false;
    let mut fits_arch = false;
    let mut fits_available = false;
    let mut best: Option<(f64, &AgentSupply, Arch, Vec<String>)> = None;
    let mut fewest_missing: Option<Vec<String>> = None;
    for agent in input.agents {
        let archs: Vec<Arch> = match arch {
            Some(a) => agent.capacity.keys().copied().filter(|c| *c == a).collect(),
            None => agent.capacity.keys().copied().collect(),
        };
        for a in &archs {
            let labels = runner_labels(agent, owner, *a, input.global_labels);
            let offered = lower(&labels);
            if !wanted.is_subset(&offered) {
                let missing: Vec<String> = wanted.difference(&offered).cloned().collect();
                if fewest_missing
                    .as_ref()
                    .is_none_or(|m| missing.len() < m.len())
                {
                    fewest_missing = Some(missing);
                }
                continue;
            }
            fits_labels = true;
            fits_arch = true;
            if !agent.available {
                continue;
            }
            fits_available = true;
            let l = &load[agent.name.as_str()];
            let arch_used = l.per_arch.get(a).copied().unwrap_or(0);
            let arch_cap = agent.capacity.get(a).copied().unwrap_or(0);
            if arch_used >= arch_cap || l.total >= agent.max_runners {
                continue;
            }
            let utilisation = f64::from(l.total) / f64::from(agent.max_runners.max(1));
            let better = match &best {
                None => true,
                Some((u, b, _, _)) => {
                    utilisation < *u || (utilisation == *u && agent.name < b.name)
                }
            };
            if better {
                best = Some((utilisation, agent, *a, labels));
            }
        }
        if let (true, Some(a)) = (archs.is_empty(), arch) {
            // This agent does not serve the architecture at all.
            let offered = lower(&runner_labels(agent, owner, a, input.global_labels));
            if wanted.is_subset(&offered) {
                fits_labels = true;
            } else if fewest_missing.is_none() {
                fewest_missing = Some(wanted.difference(&offered).cloned().collect());
            }
        }
    }
    if let Some((_, agent, arch, labels)) = best {
        return Ok((agent, arch, labels));
    }
    Err(if !fits_labels {
        WaitReason::LabelsNotOffered {
            missing: fewest_missing.unwrap_or_default(),
        }
    } else if !fits_arch {
        WaitReason::NoAgentOfArch {
            arch: arch.unwrap_or(Arch::Amd64),
        }
    } else if !fits_available {
        WaitReason::AgentsUnavailable
    } else {
        WaitReason::AgentsFull
    })
}

#[cfg(test)]
mod tests;
