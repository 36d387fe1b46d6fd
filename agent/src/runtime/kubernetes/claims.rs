//! Exclusive cache claims: a runner with `KUBERNETES_PVCS` gets the lowest-numbered claim of its
//! owner and repository (or owner only, `CACHE_VOLUME_SCOPE=owner`) and architecture that no
//! live runner pod mounts, created if missing.
//!
//! Claims are `ReadWriteOnce`, and two pods on one node could still both mount such a volume, so
//! exclusivity is ours to keep: a claim is "in use" while any unfinished pod of ours (any agent
//! in the namespace) mounts it, and a claim being handed out right now is reserved in memory
//! until its pod exists. Two agents sharing a namespace could still race between listing and
//! creating; one agent per namespace is the supported shape.

use std::collections::HashSet;
use std::sync::Mutex;

use kube::api::{ListParams, PostParams};
use shared::command::RunnerSpec;
use tracing::info;

use super::objects::{self, Ownership};
use super::status::pod_phase;
use super::{Context, KubeError, is_already_exists};

/// More slots than this for one owner and architecture means something is leaking claims.
const MAX_SLOTS: u32 = 1000;

#[derive(Default)]
pub(super) struct ClaimPicker {
    /// Claims handed to a start that has not created its pod yet. Short sections only.
    reserved: Mutex<HashSet<String>>,
}

impl ClaimPicker {
    fn reserved(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks and reserves a free claim for `spec`, creating it if needed. Release it with
    /// [`release`](Self::release) once the pod is created (or was not).
    /// `whose` is the runner's [`CacheScope::key`](crate::runtime::cache_scope::CacheScope::key).
    pub async fn reserve(
        &self,
        ctx: &Context,
        spec: &RunnerSpec,
        whose: &str,
    ) -> Result<String, KubeError> {
        let pods = ctx
            .pods()
            .list(&ListParams::default().labels(&Ownership::all_runners_selector()))
            .await
            .map_err(KubeError::new(
                "list runner pods to find a free cache claim",
            ))?;
        let in_use: HashSet<String> = pods
            .items
            .iter()
            .filter(|p| !matches!(pod_phase(p), "Succeeded" | "Failed"))
            .filter_map(|p| p.spec.as_ref()?.volumes.as_ref())
            .flatten()
            .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.clone()))
            .collect();
        let (slot, name) = {
            let mut reserved = self.reserved();
            let Some((slot, name)) = (0..MAX_SLOTS)
                .map(|slot| (slot, objects::claim_name(whose, spec.arch, slot)))
                .find(|(_, name)| !in_use.contains(name) && !reserved.contains(name))
            else {
                return Err(KubeError::NoFreeClaim {
                    owner: spec.owner.clone(),
                    arch: spec.arch,
                    slots: MAX_SLOTS,
                });
            };
            reserved.insert(name.clone());
            (slot, name)
        };
        let claim = objects::claim(
            &ctx.who,
            &ctx.settings,
            &spec.owner,
            whose,
            spec.arch,
            slot,
            &ctx.namespace,
        );
        match ctx.claims().create(&PostParams::default(), &claim).await {
            Ok(_) => {
                info!(claim = %name, owner = %spec.owner, arch = %spec.arch, "cache claim created")
            }
            Err(e) if is_already_exists(&e) => {}
            Err(e) => {
                self.release(&name);
                return Err(KubeError::new(format!("create cache claim {name}"))(e));
            }
        }
        Ok(name)
    }

    pub fn release(&self, name: &str) {
        self.reserved().remove(name);
    }
}
