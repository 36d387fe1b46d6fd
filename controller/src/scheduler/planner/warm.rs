//! Warm pools: idle runners kept registered and ready before any job asks for them. A pure
//! step after [`plan`](super::plan), on the same input, that amends the plan.
//!
//! Rules:
//! - Demand first. Jobs are planned before pools; a pool is filled only from what the owner's
//!   `MAX_RUNNERS` and the agents' capacity leave after the jobs' starts, so warm runners never
//!   take a slot a queued job could use, and the owner's limit counts them like any runner.
//! - A warm runner is any idle runner of the owner that no queued job absorbs in this plan,
//!   whose labels include the pool's, and that is not being stopped for a timeout. Runners are
//!   never marked warm: one that takes a job is busy and no longer counts, so the pool is short
//!   and a replacement starts in the same pass ("replaced when used").
//! - Each pool keeps `min_idle` of them: running ones first (they are ready), then the
//!   youngest. Kept runners are exempt from the idle stop; the others are stopped after
//!   `RUNNER_IDLE_GRACE` as usual, so when demand falls the warm ones are stopped last.
//! - A kept runner older than `WARM_RUNNER_MAX_AGE` is stopped (`warm_expired`) and no longer
//!   counts, so a replacement starts: a long-idle JIT registration never goes stale.
//! - An owner with a job waiting at its limit keeps no pool: as many of its idle, running
//!   runners as jobs wait (they match none of them, or they would have absorbed one) are
//!   stopped to make room (`make_room`), and no warm runner is started.
//! - Outside `MIN_IDLE_SCHEDULE` a pool is 0: its runners become ordinary idle runners.
//! - Repository-level owners (single repository) keep their pool in that repository; an owner
//!   registering per repository with no single repository (a user account serving all its
//!   repositories) cannot keep one, and says so.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use shared::arch::Arch;
use shared::ids::AgentName;

use super::{ActiveRunner, OwnerLimits, Placement, Plan, PlanInput, Stop, StopReason, WaitReason};
use super::{lower, wanted_arch};

/// One pool as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Labels its runners must offer (empty: any runner of the owner).
    pub labels: Vec<String>,
    pub min_idle: u32,
}

/// Whether an owner's pools apply now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Kept; `repo` is set for repository-level registration.
    Active { repo: Option<String> },
    /// `MIN_IDLE_SCHEDULE` does not match now.
    OutsideSchedule { schedule: String },
    /// No pool can be kept for this owner (the reason says why).
    Impossible { reason: String },
    /// Its registrations are held (an unknown runner group, a back-off): nothing is started.
    Held { reason: String },
}

/// An owner's pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerPools {
    /// Lower-cased login, as in [`OwnerLimits::name`].
    pub owner: String,
    pub pools: Vec<Pool>,
    pub mode: Mode,
}

pub struct WarmInput<'a> {
    pub owners: &'a [OwnerPools],
    /// `WARM_RUNNER_MAX_AGE`.
    pub max_age_ms: i64,
}

/// A warm runner to start (no job of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmStart {
    pub owner: String,
    /// Set for repository-level registration.
    pub repo: Option<String>,
    pub agent: AgentName,
    pub arch: Arch,
    /// Every label the runner registers with.
    pub labels: Vec<String>,
}

/// One pool's state, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    pub labels: Vec<String>,
    pub min_idle: u32,
    /// Kept runners that are running (registered and ready).
    pub ready: u32,
    /// Kept runners still starting.
    pub starting: u32,
    /// Started in this pass.
    pub planned: u32,
    /// The runners it keeps.
    pub runners: Vec<String>,
    /// Why it is short, when it is.
    pub short: Option<String>,
}

/// An owner's pools, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerWarmStatus {
    pub owner: String,
    /// `active`, `outside_schedule`, `suspended` (jobs wait at the limit), `held`
    /// (registrations held) or `impossible`.
    pub state: &'static str,
    pub detail: Option<String>,
    pub pools: Vec<PoolStatus>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct WarmPlan {
    pub starts: Vec<WarmStart>,
    pub status: Vec<OwnerWarmStatus>,
}

/// Amends `plan` (made by [`super::plan`] from `input`) for the warm pools: removes the idle
/// stops of kept runners, adds `warm_expired` and `make_room` stops, and returns the warm
/// runners to start.
pub fn apply<'a>(plan: &mut Plan, input: &'a PlanInput<'a>, warm: &WarmInput<'_>) -> WarmPlan {
    let mut out = WarmPlan::default();
    // Runners a queued job absorbs in this plan are spoken for.
    let absorbed: BTreeSet<&str> =
        plan.waiting
            .values()
            .filter_map(|w| match w {
                WaitReason::RunnerStarting { runner }
                | WaitReason::AwaitingJobReport { runner } => Some(runner.as_str()),
                _ => None,
            })
            .collect();
    let going: BTreeSet<String> = plan
        .stops
        .iter()
        .filter(|s| s.reason != StopReason::Idle)
        .map(|s| s.runner_id.clone())
        .collect();
    let mut starved: HashMap<&str, u32> = HashMap::new();
    for w in plan.waiting.values() {
        if let WaitReason::OwnerAtLimit { owner, .. } = w {
            *starved.entry(owner.as_str()).or_default() += 1;
        }
    }
    let mut used: HashMap<&str, u32> = HashMap::new();
    for r in input.runners.iter().filter(|r| !r.settling) {
        *used.entry(r.owner.as_str()).or_default() += 1;
    }
    for s in &plan.starts {
        *used.entry(s.owner.as_str()).or_default() += 1;
    }
    // Agent capacity left after the jobs' starts.
    let mut placement = Placement::new(input);
    for s in &plan.starts {
        if let Some(agent) = input.agents.iter().find(|a| a.name == s.agent) {
            placement.take(agent, s.arch);
        }
    }
    let limits: HashMap<&str, &OwnerLimits> =
        input.owners.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut idle_stop: BTreeSet<String> = plan
        .stops
        .iter()
        .filter(|s| s.reason == StopReason::Idle)
        .map(|s| s.runner_id.clone())
        .collect();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut expired: BTreeSet<String> = BTreeSet::new();
    let mut extra_stops: Vec<Stop> = Vec::new();

    for owner in warm.owners {
        let pools_status = |pools: &[Pool]| -> Vec<PoolStatus> {
            pools
                .iter()
                .map(|p| PoolStatus {
                    labels: p.labels.clone(),
                    min_idle: p.min_idle,
                    ready: 0,
                    starting: 0,
                    planned: 0,
                    runners: vec![],
                    short: None,
                })
                .collect()
        };
        let repo = match &owner.mode {
            Mode::Active { repo } => repo,
            Mode::OutsideSchedule { schedule } => {
                out.status.push(OwnerWarmStatus {
                    owner: owner.owner.clone(),
                    state: "outside_schedule",
                    detail: Some(format!(
                        "MIN_IDLE_SCHEDULE {schedule:?} does not match now (UTC): no runner is \
                         kept warm"
                    )),
                    pools: pools_status(&owner.pools),
                });
                continue;
            }
            Mode::Impossible { reason } | Mode::Held { reason } => {
                out.status.push(OwnerWarmStatus {
                    owner: owner.owner.clone(),
                    state: if matches!(owner.mode, Mode::Held { .. }) {
                        "held"
                    } else {
                        "impossible"
                    },
                    detail: Some(reason.clone()),
                    pools: pools_status(&owner.pools),
                });
                continue;
            }
        };
        if owner.pools.is_empty() {
            continue;
        }
        let name = owner.owner.as_str();
        // Idle runners no job takes in this plan: the pools' candidates.
        let mut candidates: Vec<&ActiveRunner> = input
            .runners
            .iter()
            .filter(|r| {
                r.owner == owner.owner
                    && !r.busy
                    && !r.settling
                    && !absorbed.contains(r.id.as_str())
                    && !going.contains(&r.id)
                    && repo.as_ref().is_none_or(|want| {
                        r.repo
                            .as_ref()
                            .is_some_and(|have| have.eq_ignore_ascii_case(want))
                    })
            })
            .collect();
        // Ready ones first, then the youngest.
        candidates.sort_by(|a, b| {
            (b.running, b.created_ms, &b.id).cmp(&(a.running, a.created_ms, &a.id))
        });

        if let Some(&waiting) = starved.get(name) {
            // Idle stops free slots already; then the oldest running ones.
            let mut freed = candidates
                .iter()
                .filter(|r| idle_stop.contains(&r.id))
                .count() as u32;
            for r in candidates.iter().rev().filter(|r| r.running) {
                if freed >= waiting {
                    break;
                }
                if idle_stop.insert(r.id.clone()) {
                    freed += 1;
                    extra_stops.push(Stop {
                        runner_id: r.id.clone(),
                        reason: StopReason::MakeRoom,
                    });
                }
            }
            out.status.push(OwnerWarmStatus {
                owner: owner.owner.clone(),
                state: "suspended",
                detail: Some(format!(
                    "{waiting} job(s) wait at the owner's limit: no runner is kept warm, and \
                     {freed} idle runner(s) matching none of them are stopped to make room"
                )),
                pools: pools_status(&owner.pools),
            });
            continue;
        }

        let Some(limits) = limits.get(name) else {
            continue;
        };
        let mut assigned: BTreeSet<&str> = BTreeSet::new();
        let mut pools = Vec::new();
        for pool in &owner.pools {
            let wanted = lower(&pool.labels);
            let mut status = PoolStatus {
                labels: pool.labels.clone(),
                min_idle: pool.min_idle,
                ready: 0,
                starting: 0,
                planned: 0,
                runners: vec![],
                short: None,
            };
            for r in &candidates {
                if status.runners.len() as u32 >= pool.min_idle {
                    break;
                }
                if assigned.contains(r.id.as_str()) || !wanted.is_subset(&lower(&r.labels)) {
                    continue;
                }
                assigned.insert(&r.id);
                if input.now_ms - r.created_ms > warm.max_age_ms {
                    // Stale: replaced (below) and stopped, for this reason.
                    expired.insert(r.id.clone());
                    continue;
                }
                keep.insert(r.id.clone());
                status.runners.push(r.id.clone());
                if r.running {
                    status.ready += 1;
                } else {
                    status.starting += 1;
                }
            }
            let mut short = pool.min_idle.saturating_sub(status.runners.len() as u32);
            while short > 0 {
                let owner_used = used.entry(name).or_default();
                if *owner_used >= limits.max_runners {
                    status.short = Some(format!(
                        "owner {name} is at its limit ({} runners, MAX_RUNNERS)",
                        limits.max_runners
                    ));
                    break;
                }
                match placement.choose(limits, &wanted) {
                    Ok((agent, arch, labels)) => {
                        placement.take(agent, arch);
                        *owner_used += 1;
                        status.planned += 1;
                        out.starts.push(WarmStart {
                            owner: name.to_owned(),
                            repo: repo.clone(),
                            agent: agent.name.clone(),
                            arch,
                            labels,
                        });
                        short -= 1;
                    }
                    Err(reason) => {
                        status.short = Some(describe(&reason, &wanted));
                        break;
                    }
                }
            }
            pools.push(status);
        }
        out.status.push(OwnerWarmStatus {
            owner: owner.owner.clone(),
            state: "active",
            detail: None,
            pools,
        });
    }

    plan.stops
        .retain(|s| !(s.reason == StopReason::Idle && keep.contains(&s.runner_id)));
    for stop in plan.stops.iter_mut() {
        if stop.reason == StopReason::Idle && expired.remove(&stop.runner_id) {
            stop.reason = StopReason::WarmExpired;
        }
    }
    plan.stops.extend(extra_stops);
    plan.stops.extend(expired.into_iter().map(|runner_id| Stop {
        runner_id,
        reason: StopReason::WarmExpired,
    }));
    out
}

/// Why a pool cannot get a runner, in words.
fn describe(reason: &WaitReason, wanted: &BTreeSet<String>) -> String {
    match reason {
        WaitReason::NoAgentConnected => "no agent is connected".into(),
        WaitReason::NoAgentForOwner { owner } => {
            format!("no connected agent may serve owner {owner}")
        }
        WaitReason::LabelsNotOffered { missing } => {
            format!("no agent offers the labels {missing:?}")
        }
        WaitReason::NoAgentOfArch { arch } => format!("no agent of architecture {arch}"),
        WaitReason::AgentsUnavailable => "the agents that fit are draining or unhealthy".into(),
        WaitReason::AgentsFull => match wanted_arch(wanted) {
            Some(arch) => format!("the {arch} agents that fit are at capacity"),
            None => "the agents that fit are at capacity".into(),
        },
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
