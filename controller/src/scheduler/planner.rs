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
//! - Images: an agent that has the runner image ([`AgentSupply::has_image`]) is preferred over
//!   any that has not, however loaded; among equals the least loaded is chosen. A job still
//!   goes to an agent without the image when none with it has room (that agent pulls it).
//! - Limits: an owner never has more than `max_runners` active runners (requested, starting or
//!   running); an agent never more than its capacity per architecture and in total.
//! - Order: fair across owners, then across an owner's repositories, oldest first within each.
//! - Idle runners with no demand they could serve are stopped after a grace period; any runner
//!   past the runner timeout is stopped.
//! - A runner that just ended cleanly without our knowing its job (its `in_progress` webhook is
//!   still on its way: an ephemeral runner exits 0 only after a job) is *settling*: for a short
//!   window it absorbs one matching queued job, as if idle, so its job does not get a
//!   replacement; it holds no capacity and is never stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use shared::arch::{Arch, RuntimeKind};
use shared::ids::AgentName;
use shared::owner::Owner;

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
    /// Owners the operator lets it serve; `None`: every owner.
    pub owners: Option<BTreeSet<Owner>>,
    /// It reported the runner image present, so a runner starts there without a pull.
    pub has_image: bool,
}

impl AgentSupply {
    fn serves(&self, owner: &str) -> bool {
        self.owners
            .as_ref()
            .is_none_or(|o| o.contains(&Owner::new(owner)))
    }
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

/// A job as owners see it: GitHub's job id within one owner.
pub type JobKey = (shared::owner::Owner, u64);

impl PendingJob {
    pub fn key(&self) -> JobKey {
        (shared::owner::Owner::new(&self.owner), self.id)
    }
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
    /// Ended cleanly moments ago without a known job (see the module's rules).
    pub settling: bool,
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
    /// The repository of `for_job` (the runner's caches are kept per repository).
    pub job_repo: String,
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
    /// Its container runs, but it has not come online at GitHub within `RUNNER_REGISTER_TIMEOUT`.
    NeverRegistered,
    /// A warm runner older than `WARM_RUNNER_MAX_AGE` (see [`warm`]): replaced.
    WarmExpired,
    /// Idle, matching none of the owner's jobs that wait at its limit: stopped so they can
    /// start (see [`warm`]).
    MakeRoom,
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
    /// A runner that just ended probably served it; GitHub's report of the job is awaited.
    AwaitingJobReport {
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
    /// No connected agent is allowed (by the operator) to serve this owner.
    NoAgentForOwner {
        owner: String,
    },
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
    /// Starts for it are held by a back-off or an open circuit (set by the executor).
    BackingOff {
        /// `github`, `agent` or `crash`.
        cause: String,
        /// What failed and what to do.
        detail: String,
        circuit_open: bool,
        /// e.g. `2m10s`.
        next_try_in: String,
    },
    /// No runner can be registered for it (set by the executor, not the planner): an unknown
    /// runner group, a public repository in a group that does not allow it, GitHub refusing.
    Registration {
        problem: String,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub starts: Vec<Start>,
    pub stops: Vec<Stop>,
    /// For every queued job: why it is not yet running.
    /// Keyed by owner and job id: job ids of two owners never share an entry.
    pub waiting: BTreeMap<JobKey, WaitReason>,
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

/// Whether `label` names an architecture other than `arch`.
fn names_other_arch(label: &str, arch: Arch) -> bool {
    wanted_arch(&BTreeSet::from([label.to_owned()])).is_some_and(|a| a != arch)
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

/// Agents grouped by what they offer: same runtime, same extra labels, same architecture.
/// Matching is decided once per (class, owner), and each class keeps its available agents
/// ordered by load, so a plan costs O(jobs × classes × log agents), not O(jobs × agents).
struct Class<'a> {
    arch: Arch,
    /// An agent of the class, to build offered labels from.
    example: &'a AgentSupply,
    /// Available agents with free capacity for `arch`, those with the image first, then
    /// least loaded first.
    free: BTreeSet<(PlaceKey, &'a str)>,
    /// How many agents of the class are available at all.
    available: usize,
}

/// Per-agent usage while planning.
struct Usage {
    per_arch: BTreeMap<Arch, u32>,
    total: u32,
}

/// How an agent ranks for the next runner, best first: without the image after with it, then
/// utilisation as an integer (parts per million), so ordering is exact.
type PlaceKey = (bool, u64);

fn place_key(agent: &AgentSupply, total: u32) -> PlaceKey {
    (
        !agent.has_image,
        u64::from(total) * 1_000_000 / u64::from(agent.max_runners.max(1)),
    )
}

struct Placement<'a> {
    input: &'a PlanInput<'a>,
    classes: Vec<Class<'a>>,
    /// Class indexes of each agent (one per architecture it serves).
    agent_classes: HashMap<&'a str, Vec<usize>>,
    agents: HashMap<&'a str, &'a AgentSupply>,
    usage: HashMap<&'a str, Usage>,
    /// (class, owner) → the labels a runner there would carry.
    offered: HashMap<(usize, String), (Vec<String>, BTreeSet<String>)>,
}

impl<'a> Placement<'a> {
    fn new(input: &'a PlanInput<'a>) -> Self {
        let mut usage: HashMap<&str, Usage> = input
            .agents
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    Usage {
                        per_arch: BTreeMap::new(),
                        total: 0,
                    },
                )
            })
            .collect();
        for r in input.runners.iter().filter(|r| !r.settling) {
            if let Some(u) = usage.get_mut(r.agent.as_str()) {
                *u.per_arch.entry(r.arch).or_default() += 1;
                u.total += 1;
            }
        }
        type ClassKey = (RuntimeKind, BTreeSet<String>, Arch, Option<BTreeSet<Owner>>);
        let mut by_key: BTreeMap<ClassKey, usize> = BTreeMap::new();
        let mut classes: Vec<Class<'a>> = Vec::new();
        let mut agent_classes: HashMap<&str, Vec<usize>> = HashMap::new();
        for agent in input.agents {
            for (&arch, &cap) in &agent.capacity {
                let key = (
                    agent.runtime,
                    lower(&agent.labels),
                    arch,
                    agent.owners.clone(),
                );
                let index = *by_key.entry(key).or_insert_with(|| {
                    classes.push(Class {
                        arch,
                        example: agent,
                        free: BTreeSet::new(),
                        available: 0,
                    });
                    classes.len() - 1
                });
                agent_classes
                    .entry(agent.name.as_str())
                    .or_default()
                    .push(index);
                if agent.available {
                    classes[index].available += 1;
                    let u = &usage[agent.name.as_str()];
                    if u.per_arch.get(&arch).copied().unwrap_or(0) < cap
                        && u.total < agent.max_runners
                    {
                        classes[index]
                            .free
                            .insert((place_key(agent, u.total), agent.name.as_str()));
                    }
                }
            }
        }
        Self {
            input,
            classes,
            agent_classes,
            agents: input.agents.iter().map(|a| (a.name.as_str(), a)).collect(),
            usage,
            offered: HashMap::new(),
        }
    }

    fn offered(&mut self, class: usize, owner: &OwnerLimits) -> &(Vec<String>, BTreeSet<String>) {
        let (classes, input) = (&self.classes, self.input);
        self.offered
            .entry((class, owner.name.clone()))
            .or_insert_with(|| {
                let c = &classes[class];
                let labels = runner_labels(c.example, owner, c.arch, input.global_labels);
                let set = lower(&labels);
                (labels, set)
            })
    }

    /// The least loaded available agent that can run the job, or why there is none.
    fn choose(
        &mut self,
        owner: &OwnerLimits,
        wanted: &BTreeSet<String>,
    ) -> Result<(&'a AgentSupply, Arch, Vec<String>), WaitReason> {
        if self.input.agents.is_empty() {
            return Err(WaitReason::NoAgentConnected);
        }
        let arch = wanted_arch(wanted);
        let (mut fits_labels, mut fits_arch, mut fits_available) = (false, false, false);
        let mut fits_owner = false;
        let mut fewest_missing: Option<Vec<String>> = None;
        let mut best: Option<((PlaceKey, &'a str), usize)> = None;
        for class in 0..self.classes.len() {
            if !self.classes[class].example.serves(&owner.name) {
                continue;
            }
            fits_owner = true;
            let class_arch = self.classes[class].arch;
            let (_, offered) = self.offered(class, owner);
            // Labels other than the architecture decide whether any agent could ever fit: an
            // arm64 job that only amd64 agents could run otherwise waits for an arm64 agent.
            let missing: Vec<String> = wanted
                .iter()
                .filter(|l| !offered.contains(*l) && !names_other_arch(l, class_arch))
                .cloned()
                .collect();
            if !missing.is_empty() {
                if fewest_missing
                    .as_ref()
                    .is_none_or(|m| missing.len() < m.len())
                {
                    fewest_missing = Some(missing);
                }
                continue;
            }
            fits_labels = true;
            if arch.is_some_and(|a| a != class_arch) {
                continue;
            }
            fits_arch = true;
            let c = &self.classes[class];
            if c.available == 0 {
                continue;
            }
            fits_available = true;
            if let Some(&head) = c.free.first()
                && best.is_none_or(|(b, _)| head < b)
            {
                best = Some((head, class));
            }
        }
        if let Some(((_, name), class)) = best {
            let agent = self.agents[name];
            let arch = self.classes[class].arch;
            let labels = self.offered(class, owner).0.clone();
            return Ok((agent, arch, labels));
        }
        Err(if !fits_owner {
            WaitReason::NoAgentForOwner {
                owner: owner.name.clone(),
            }
        } else if !fits_labels {
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

    /// Records a planned runner on `agent` and re-files the agent by its new load.
    fn take(&mut self, agent: &'a AgentSupply, arch: Arch) {
        let name = agent.name.as_str();
        let u = self.usage.get_mut(name).expect("every agent has usage");
        let old_key = place_key(agent, u.total);
        *u.per_arch.entry(arch).or_default() += 1;
        u.total += 1;
        let new_key = place_key(agent, u.total);
        for &class in &self.agent_classes[name] {
            let c = &mut self.classes[class];
            c.free.remove(&(old_key, name));
            let cap = agent.capacity.get(&c.arch).copied().unwrap_or(0);
            if u.per_arch.get(&c.arch).copied().unwrap_or(0) < cap && u.total < agent.max_runners {
                c.free.insert((new_key, name));
            }
        }
    }
}

pub fn plan<'a>(input: &'a PlanInput<'a>) -> Plan {
    let mut plan = Plan::default();
    let owners: HashMap<&str, &OwnerLimits> =
        input.owners.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut owner_used: HashMap<&str, u32> = HashMap::new();
    for r in input.runners.iter().filter(|r| !r.settling) {
        *owner_used.entry(r.owner.as_str()).or_default() += 1;
    }

    // Timeouts first: those runners are going away and serve nobody.
    let mut stopping: BTreeSet<&str> = BTreeSet::new();
    for r in input.runners.iter().filter(|r| !r.settling) {
        if input.now_ms - r.created_ms > input.runner_timeout_ms {
            stopping.insert(&r.id);
            plan.stops.push(Stop {
                runner_id: r.id.clone(),
                reason: StopReason::Timeout,
            });
        }
    }

    // Supply: idle runners, grouped by what they can take; each absorbs one matching job.
    type SupplyKey<'r> = (&'r str, Option<String>, BTreeSet<String>);
    let mut supply: BTreeMap<SupplyKey<'_>, Vec<&ActiveRunner>> = BTreeMap::new();
    for r in input
        .runners
        .iter()
        .filter(|r| !r.busy && !stopping.contains(r.id.as_str()))
    {
        let key = (
            r.owner.as_str(),
            r.repo.as_ref().map(|x| x.to_ascii_lowercase()),
            lower(&r.labels),
        );
        supply.entry(key).or_default().push(r);
    }
    for runners in supply.values_mut() {
        // Oldest first, taken from the end.
        runners.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
    }
    let mut unused_idle: BTreeSet<&str> =
        supply.values().flatten().map(|r| r.id.as_str()).collect();

    // Looked up per job served by an idle runner: a scan of every runner was O(jobs × runners).
    let settling: HashSet<&str> = input
        .runners
        .iter()
        .filter(|r| r.settling)
        .map(|r| r.id.as_str())
        .collect();
    let mut deficit: Vec<(&PendingJob, BTreeSet<String>)> = Vec::new();
    for job in fair_order(input.jobs) {
        let wanted = lower(&job.labels);
        let repo = job.repo.to_ascii_lowercase();
        let taken = supply
            .iter_mut()
            .filter(|((owner, r, labels), runners)| {
                *owner == job.owner
                    && r.as_ref().is_none_or(|r| *r == repo)
                    && !runners.is_empty()
                    && wanted.is_subset(labels)
            })
            .min_by_key(|(_, runners)| runners.last().map(|r| (r.created_ms, r.id.clone())))
            .and_then(|(_, runners)| runners.pop());
        match taken {
            Some(runner) => {
                unused_idle.remove(runner.id.as_str());
                let runner = runner.id.clone();
                let reason = if settling.contains(runner.as_str()) {
                    WaitReason::AwaitingJobReport { runner }
                } else {
                    WaitReason::RunnerStarting { runner }
                };
                plan.waiting.insert(job.key(), reason);
            }
            None => deficit.push((job, wanted)),
        }
    }

    // Start runners for the deficit, within limits.
    let mut placement = Placement::new(input);
    for (job, wanted) in deficit {
        let Some(owner) = owners.get(job.owner.as_str()) else {
            plan.waiting.insert(
                job.key(),
                WaitReason::UnknownOwner {
                    owner: job.owner.clone(),
                },
            );
            continue;
        };
        let choice = placement.choose(owner, &wanted);
        // A job no agent could ever run says so, whatever the owner's limit.
        if let Err(
            reason @ (WaitReason::NoAgentConnected
            | WaitReason::NoAgentForOwner { .. }
            | WaitReason::LabelsNotOffered { .. }
            | WaitReason::NoAgentOfArch { .. }),
        ) = &choice
        {
            plan.waiting.insert(job.key(), reason.clone());
            continue;
        }
        let used = owner_used.get(owner.name.as_str()).copied().unwrap_or(0);
        if used >= owner.max_runners {
            plan.waiting.insert(
                job.key(),
                WaitReason::OwnerAtLimit {
                    owner: owner.name.clone(),
                    max_runners: owner.max_runners,
                },
            );
            continue;
        }
        match choice {
            Ok((agent, arch, labels)) => {
                placement.take(agent, arch);
                *owner_used.entry(owner.name.as_str()).or_default() += 1;
                plan.waiting.insert(
                    job.key(),
                    WaitReason::RunnerPlanned {
                        agent: agent.name.to_string(),
                    },
                );
                plan.starts.push(Start {
                    for_job: job.id,
                    owner: owner.name.clone(),
                    repo: owner.repo_level.then(|| job.repo.clone()),
                    job_repo: job.repo.clone(),
                    agent: agent.name.clone(),
                    arch,
                    labels,
                });
            }
            Err(reason) => {
                plan.waiting.insert(job.key(), reason);
            }
        }
    }

    // Idle runners that absorbed no demand: stop them once past the grace period.
    for r in input.runners {
        if unused_idle.contains(r.id.as_str())
            && r.running
            && input.now_ms - r.created_ms > input.idle_grace_ms
        {
            plan.stops.push(Stop {
                runner_id: r.id.clone(),
                reason: StopReason::Idle,
            });
        }
    }
    plan
}

pub mod warm;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod image_tests;
