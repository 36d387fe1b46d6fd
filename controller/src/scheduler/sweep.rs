//! Cleanup of GitHub's side: registrations of ours that no runner uses any more.
//!
//! Once per `OFFLINE_RUNNER_GRACE` per owner, the owner's runners are listed (`GET
//! …/actions/runners`, every page) and filtered by our name prefix for that owner
//! (`gha-{owner}-`). One that is offline and idle, whose runner record is missing or finished,
//! is deleted once it has been seen so for the grace: left by a start that failed half-way, a
//! controller that lost its state, or a runner that crashed before taking its job. Foreign
//! runners (other names) are never touched. The decision is the pure [`leftover`].
//!
//! Only owners whose runner scope is known without listing repositories are swept: an
//! organization serving all its repositories (org runners) and a single-repository owner.

use std::collections::HashMap;

use shared::github::{RepoRef, Runner, Scope};
use tracing::{info, warn};

use super::containment::NAME_PREFIX;
use super::executor::Scheduler;
use crate::config::OwnerConfig;
use crate::metrics::ReasonLabels;
use crate::store::{RunnerRecord, StoreError};

/// What the last sweep of an owner found and did, for `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub owner: String,
    pub at_ms: i64,
    /// Registrations of ours listed.
    pub ours: usize,
    /// Of them, offline leftovers waiting out the grace.
    pub leftovers: usize,
    pub deleted: usize,
    pub error: Option<String>,
}

/// Whether `runner` is a leftover of `owner`'s: our name, offline, idle, with no live record.
pub fn leftover(owner: &str, runner: &Runner, record: Option<&RunnerRecord>) -> bool {
    let prefix = format!("{NAME_PREFIX}{}-", owner.to_ascii_lowercase());
    runner.name.to_ascii_lowercase().starts_with(&prefix)
        && runner.status == "offline"
        && !runner.busy
        && record.is_none_or(|r| !r.lifecycle.is_active())
}

impl Scheduler {
    /// The scope whose runners are ours to sweep, if it is known without listing repositories.
    fn sweep_scope(owner: &OwnerConfig) -> Option<Scope> {
        match (&owner.repo_name, owner.all_repos) {
            (Some(repo), _) => Some(Scope::Repo(RepoRef::new(owner.name.clone(), repo.clone()))),
            (None, true) => Some(Scope::Org(owner.name.clone())),
            (None, false) => None,
        }
    }

    /// Sweeps every owner whose last sweep is older than the grace.
    pub(super) async fn sweep_registrations(&self, now: i64) -> Result<(), StoreError> {
        let grace = self.config.containment.offline_runner_grace.as_millis() as i64;
        for owner in &self.config.owners {
            let name = owner.name.to_ascii_lowercase();
            let Some(scope) = Self::sweep_scope(owner) else {
                continue;
            };
            if !self.state.sweep_due(&name, now, grace) {
                continue;
            }
            let mut report = SweepReport {
                owner: name.clone(),
                at_ms: now,
                ..SweepReport::default()
            };
            match self.github.list_runners(&scope).await {
                Ok(runners) => {
                    let mut seen: HashMap<u64, i64> = HashMap::new();
                    for runner in &runners {
                        let record = self.store.runner_by_name(&runner.name).await?;
                        if runner
                            .name
                            .to_ascii_lowercase()
                            .starts_with(&format!("{NAME_PREFIX}{name}-"))
                        {
                            report.ours += 1;
                        }
                        if !leftover(&name, runner, record.as_ref()) {
                            continue;
                        }
                        report.leftovers += 1;
                        let since = self.state.leftover_since(&name, runner.id, now);
                        seen.insert(runner.id, since);
                        if now - since < grace || !self.state.claim_delete(&name, runner.id, now) {
                            continue;
                        }
                        match self.github.delete_runner(&scope, runner.id).await {
                            Ok(()) => {
                                info!(runner = %runner.name, owner = %name, "deleted an offline registration of ours that no runner uses");
                                report.deleted += 1;
                                self.metrics
                                    .containment
                                    .registrations_deleted
                                    .get_or_create(&ReasonLabels {
                                        reason: "offline".into(),
                                    })
                                    .inc();
                            }
                            Err(e) if e.is_not_found() => {}
                            Err(e) => {
                                warn!(runner = %runner.name, error = %e, "cannot delete an offline registration; next sweep retries");
                                self.state.release_delete(&name, runner.id);
                            }
                        }
                    }
                    self.state.keep_leftovers(&name, &seen);
                }
                Err(e) => {
                    warn!(owner = %name, error = %e, "cannot list the owner's runners; next sweep retries");
                    report.error = Some(e.to_string());
                }
            }
            self.decisions.update(|d| {
                d.sweeps.retain(|r| r.owner != name);
                d.sweeps.push(report);
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunnerLifecycle;

    fn runner(name: &str, status: &str, busy: bool) -> Runner {
        serde_json::from_value(serde_json::json!({
            "id": 7, "name": name, "os": "linux", "status": status, "busy": busy, "labels": []
        }))
        .unwrap()
    }

    fn record(lifecycle: RunnerLifecycle) -> RunnerRecord {
        RunnerRecord {
            id: "r-1".into(),
            name: "gha-acme-1".into(),
            owner: "acme".into(),
            repo: None,
            agent: "host".into(),
            arch: shared::arch::Arch::Amd64,
            labels: vec![],
            lifecycle,
            for_job: None,
            job_id: None,
            github_id: Some(7),
            exit_code: None,
            reason: String::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn only_our_offline_idle_registrations_without_a_live_runner_are_leftovers() {
        let ours = runner("gha-acme-1", "offline", false);
        assert!(leftover("Acme", &ours, None), "no record");
        assert!(leftover(
            "acme",
            &ours,
            Some(&record(RunnerLifecycle::Finished))
        ));
        assert!(
            !leftover("acme", &ours, Some(&record(RunnerLifecycle::Starting))),
            "starting: registered, not yet online"
        );
        assert!(!leftover(
            "acme",
            &runner("gha-acme-1", "online", false),
            None
        ));
        assert!(!leftover(
            "acme",
            &runner("gha-acme-1", "offline", true),
            None
        ));
        assert!(
            !leftover("acme", &runner("build-box", "offline", false), None),
            "foreign"
        );
        assert!(
            !leftover("acme", &runner("gha-other-1", "offline", false), None),
            "another owner's prefix"
        );
    }
}
