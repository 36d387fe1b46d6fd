//! How much of the queue a scheduling pass looks at, and what the rest is told (pure).
//!
//! In one pass a queued job of owner O is served only by an idle runner of O (each takes one
//! job) or by a new runner within O's free capacity and the free capacity of agents that serve
//! O. Jobs of one class (owner, repository, labels) are served oldest first and all fit or miss
//! the same agents, so in each class at most `free + idle` jobs can be served: the pass reads
//! one more than that ([`head_limits`]), whose reason holds for every job behind it
//! ([`class_reasons`]). The pass's cost then depends on the fleet and the classes, not on how
//! many jobs wait (issue 15 §4).

use std::collections::{BTreeMap, HashMap};

use shared::owner::Owner;

use super::planner::{ActiveRunner, AgentSupply, JobKey, OwnerLimits, WaitReason};
use crate::store::{ClassKey, HeadLimits, QueueHead};

/// Per owner: one more than the jobs of any one class a pass could serve. Owners not
/// configured get 1 (their jobs only need a reason).
pub fn head_limits(
    owners: &[OwnerLimits],
    agents: &[AgentSupply],
    runners: &[ActiveRunner],
) -> HeadLimits {
    let mut active: HashMap<Owner, u32> = HashMap::new();
    let mut idle: HashMap<Owner, u32> = HashMap::new();
    let mut on_agent: HashMap<&str, u32> = HashMap::new();
    for r in runners {
        if !r.settling {
            *active.entry(Owner::new(&r.owner)).or_default() += 1;
            *on_agent.entry(r.agent.as_str()).or_default() += 1;
        }
        if !r.busy {
            *idle.entry(Owner::new(&r.owner)).or_default() += 1;
        }
    }
    let per_owner = owners
        .iter()
        .map(|o| {
            let owner = Owner::new(&o.name);
            let owner_free = o
                .max_runners
                .saturating_sub(active.get(&owner).copied().unwrap_or(0));
            let agents_free: u32 = agents
                .iter()
                .filter(|a| {
                    a.available
                        && a.owners
                            .as_ref()
                            .is_none_or(|allowed| allowed.contains(&owner))
                })
                .map(|a| {
                    a.max_runners
                        .saturating_sub(on_agent.get(a.name.as_str()).copied().unwrap_or(0))
                })
                .fold(0u32, u32::saturating_add);
            let servable = owner_free
                .min(agents_free)
                .saturating_add(idle.get(&owner).copied().unwrap_or(0));
            (owner, servable as usize + 1)
        })
        .collect();
    HeadLimits {
        per_owner,
        otherwise: 1,
    }
}

/// Whether a reason says the job is (about to be) served rather than why it waits.
fn served(reason: &WaitReason) -> bool {
    matches!(
        reason,
        WaitReason::RunnerStarting { .. }
            | WaitReason::AwaitingJobReport { .. }
            | WaitReason::RunnerPlanned { .. }
    )
}

/// For each class with jobs the pass did not read: why they wait, which is why the last job
/// read of the class waits (it is older than all of them and asks for the same). Should that
/// one be served after all, the owner's capacity is what the rest wait for.
pub fn class_reasons(
    heads: &[QueueHead],
    waiting: &BTreeMap<JobKey, WaitReason>,
    owners: &[OwnerLimits],
) -> BTreeMap<ClassKey, WaitReason> {
    heads
        .iter()
        .filter(|h| h.queued > h.oldest.len() as u64)
        .filter_map(|h| {
            let last = h.oldest.last()?;
            let reason = waiting
                .get(&(last.owner.clone(), last.id))
                .filter(|r| !served(r))
                .cloned()
                .unwrap_or_else(
                    || match owners.iter().find(|o| h.owner == o.name.as_str()) {
                        Some(o) => WaitReason::OwnerAtLimit {
                            owner: o.name.clone(),
                            max_runners: o.max_runners,
                        },
                        None => WaitReason::UnknownOwner {
                            owner: h.owner.to_string(),
                        },
                    },
                );
            Some((h.key(), reason))
        })
        .collect()
}

#[cfg(test)]
mod tests;
