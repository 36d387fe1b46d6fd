//! Cleanup of GitHub's side: registrations of ours that no runner uses any more, and runners
//! that never came online.
//!
//! Once per `OFFLINE_RUNNER_GRACE` per owner, the owner's runners are listed (`GET
//! …/actions/runners`, every page) and filtered to ours: a runner record of ours carries the
//! name, or the name carries this installation's tag (`gha-{owner}-{installation}-`, see
//! [`super::naming`]). One that is offline and idle, whose runner record is missing or finished,
//! is deleted once it has been seen so for the grace: left by a start that failed half-way, a
//! controller that lost its state, or a runner that crashed before taking its job. Foreign
//! runners (other names, or another installation's) are never touched. The decision is the pure [`leftover`].
//!
//! The same listing shows runners of ours whose container runs but that never came online at
//! GitHub within `RUNNER_REGISTER_TIMEOUT` (a runner that cannot reach GitHub, a wrong command,
//! a registration that failed inside the container): they are stopped and their registration
//! deleted ([`never_registered`]).
//!
//! Where an owner's runners live: an organization serving all its repositories has org runners
//! (one listing); a single-repository owner, that repository; an owner whose runners register
//! per repository under `ALL_REPOS` (a user account), the repositories its runners used since
//! the retention period, most recent first, at most [`REPOS_PER_SWEEP`] per sweep.

use std::collections::HashMap;

use shared::github::{RepoRef, Runner, Scope};
use shared::owner::Owner;
use tracing::{info, warn};

use super::containment::NAME_PREFIX;
use super::executor::Scheduler;
use super::naming::RunnerNames;
use super::planner::StopReason;
use super::registration::OwnerKind;
use crate::config::OwnerConfig;
use crate::metrics::ReasonLabels;
use crate::store::{RunnerLifecycle, RunnerRecord, StoreError};

/// Repository listings per owner per sweep, for owners with repository-level runners.
pub const REPOS_PER_SWEEP: usize = 50;

/// What the last sweep of an owner found and did, for `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    pub owner: String,
    pub at_ms: i64,
    /// Scopes listed (the organization, or repositories).
    pub scopes: usize,
    /// Registrations of ours listed.
    pub ours: usize,
    /// Of them, offline leftovers waiting out the grace.
    pub leftovers: usize,
    pub deleted: usize,
    /// Runners stopped because they never came online at GitHub.
    pub never_registered: usize,
    pub error: Option<String>,
}

/// Whether `runner` is a leftover of `owner`'s: ours (a record of ours carries its name, or its
/// name carries this installation's tag: [`RunnerNames`]), offline, idle, with no live record.
/// A name of another installation on the same owner is never ours, even with our prefix.
pub fn leftover(
    names: &RunnerNames,
    owner: &str,
    runner: &Runner,
    record: Option<&RunnerRecord>,
) -> bool {
    (record.is_some() || names.is_ours(owner, &runner.name))
        && runner.status == "offline"
        && !runner.busy
        && record.is_none_or(|r| !r.lifecycle.is_active())
}

/// Whether runner `r`, listed at GitHub as `listed` (`None`: not registered at all), runs without
/// ever having come online: its container runs, it knows no job, it is older than
/// `timeout_ms`, and GitHub does not show it online or busy.
pub fn never_registered(
    r: &RunnerRecord,
    listed: Option<&Runner>,
    now: i64,
    timeout_ms: i64,
) -> bool {
    r.lifecycle == RunnerLifecycle::Running
        && r.job_id.is_none()
        && now - r.created_ms > timeout_ms
        && listed.is_none_or(|g| g.status != "online" && !g.busy)
}

/// The registration of record `r` in a listing: by GitHub id (JIT), else by name (token mode).
fn listed<'a>(r: &RunnerRecord, runners: &'a [Runner]) -> Option<&'a Runner> {
    runners.iter().find(|g| match r.github_id {
        Some(id) => g.id == id,
        None => g.name.eq_ignore_ascii_case(&r.name),
    })
}

/// Whether record `r` registers in `scope`.
fn in_scope(r: &RunnerRecord, scope: &Scope) -> bool {
    match scope {
        Scope::Org(_) => r.repo.is_none(),
        Scope::Repo(repo) => r
            .repo
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(&repo.name)),
    }
}

impl Scheduler {
    /// The scopes whose runners are ours to sweep.
    async fn sweep_scopes(&self, owner: &OwnerConfig, now: i64) -> Result<Vec<Scope>, StoreError> {
        Ok(match (&owner.repo_name, owner.all_repos) {
            (Some(repo), _) => vec![Scope::Repo(RepoRef::new(owner.name.clone(), repo.clone()))],
            (None, true) => match self.registrar.resolve_kind(owner).await {
                Some(OwnerKind::Organization) => vec![Scope::Org(owner.name.clone())],
                // Not known yet (GitHub could not be asked): the next sweep tries again.
                None => Vec::new(),
                Some(OwnerKind::User) => {
                    let since = now - self.config.retention.as_millis() as i64;
                    self.store
                        .runner_repos(&owner.owner(), since, REPOS_PER_SWEEP)
                        .await?
                        .into_iter()
                        .map(|repo| Scope::Repo(RepoRef::new(owner.name.clone(), repo)))
                        .collect()
                }
            },
            (None, false) => Vec::new(),
        })
    }

    /// Sweeps every owner whose last sweep is older than the grace.
    pub(super) async fn sweep_registrations(&self, now: i64) -> Result<(), StoreError> {
        let grace = self.config.containment.offline_runner_grace.as_millis() as i64;
        for owner in &self.config.owners {
            let key = owner.owner();
            let name = key.to_string();
            if !self.state.sweep_due(&key, now, grace) {
                continue;
            }
            let scopes = self.sweep_scopes(owner, now).await?;
            if scopes.is_empty() {
                continue;
            }
            let mut report = SweepReport {
                owner: name.clone(),
                at_ms: now,
                scopes: scopes.len(),
                ..SweepReport::default()
            };
            let active: Vec<RunnerRecord> = self
                .store
                .active_runners()
                .await?
                .into_iter()
                .filter(|r| key == r.owner)
                .collect();
            let mut seen: HashMap<u64, i64> = HashMap::new();
            for scope in &scopes {
                match self.github.list_runners(scope).await {
                    Ok(runners) => {
                        self.sweep_leftovers(&key, scope, &runners, now, &mut seen, &mut report)
                            .await?;
                        self.stop_never_registered(scope, &runners, &active, now, &mut report)
                            .await;
                    }
                    Err(e) => {
                        warn!(owner = %name, target = %scope, error = %e, "cannot list the owner's runners; next sweep retries");
                        report.error = Some(format!("{scope}: {e}"));
                    }
                }
            }
            self.state.keep_leftovers(&key, &seen);
            self.decisions.update(|d| {
                d.sweeps.retain(|r| r.owner != name);
                d.sweeps.push(report);
            });
        }
        Ok(())
    }

    async fn sweep_leftovers(
        &self,
        owner: &Owner,
        scope: &Scope,
        runners: &[Runner],
        now: i64,
        seen: &mut HashMap<u64, i64>,
        report: &mut SweepReport,
    ) -> Result<(), StoreError> {
        let grace = self.config.containment.offline_runner_grace.as_millis() as i64;
        // Any installation's prefix: a record of ours may carry a name of the format before
        // installation tags.
        let name = owner.as_str();
        let prefix = format!("{NAME_PREFIX}{name}-");
        for runner in runners {
            if !runner.name.to_ascii_lowercase().starts_with(&prefix) {
                continue;
            }
            // Keyed by owner: a record of another owner with the same name is not this one's.
            let record = self
                .store
                .runner_by_name(&runner.name)
                .await?
                .filter(|r| *owner == r.owner);
            if record.is_none() && !self.names.is_ours(name, &runner.name) {
                // Another installation's (a staging controller on the same organization).
                continue;
            }
            report.ours += 1;
            if !leftover(&self.names, name, runner, record.as_ref()) {
                continue;
            }
            report.leftovers += 1;
            let since = self.state.leftover_since(owner, runner.id, now);
            seen.insert(runner.id, since);
            if now - since < grace || !self.state.claim_delete(owner, runner.id, now) {
                continue;
            }
            match self.github.delete_runner(scope, runner.id).await {
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
                    self.state.release_delete(owner, runner.id);
                }
            }
        }
        Ok(())
    }

    /// Stops the runners of `scope` that run but never came online (their registration is
    /// deleted with the stop).
    async fn stop_never_registered(
        &self,
        scope: &Scope,
        runners: &[Runner],
        active: &[RunnerRecord],
        now: i64,
        report: &mut SweepReport,
    ) {
        let timeout = self.config.containment.register_timeout.as_millis() as i64;
        for r in active.iter().filter(|r| in_scope(r, scope)) {
            if !never_registered(r, listed(r, runners), now, timeout) {
                continue;
            }
            warn!(runner = %r.name, agent = %r.agent, "the runner runs but never came online at GitHub; stopping it");
            report.never_registered += 1;
            self.metrics
                .containment
                .registrations_deleted
                .get_or_create(&ReasonLabels {
                    reason: "never_registered".into(),
                })
                .inc();
            self.stop_runner(r, StopReason::NeverRegistered, now).await;
            // A runner image that cannot come online would do the same again: back off.
            self.record_failure(
                super::backoff::Key::Image {
                    owner: r.owner.to_string(),
                    image: self.config.runners.image.clone(),
                },
                super::backoff::Failure {
                    reason: format!(
                        "owner {}: runner {} ran for {} s without coming online at GitHub",
                        r.owner,
                        r.name,
                        (now - r.created_ms) / 1000
                    ),
                    permanent: false,
                },
                now,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let names = RunnerNames::for_installation("ca", "gha-scaler");
        let ours_name = names.name("acme", "0123456789ab");
        let ours = runner(&ours_name, "offline", false);
        assert!(leftover(&names, "Acme", &ours, None), "no record");
        assert!(leftover(
            &names,
            "acme",
            &ours,
            Some(&record(RunnerLifecycle::Finished))
        ));
        assert!(
            !leftover(
                &names,
                "acme",
                &ours,
                Some(&record(RunnerLifecycle::Starting))
            ),
            "starting: registered, not yet online"
        );
        assert!(!leftover(
            &names,
            "acme",
            &runner(&ours_name, "online", false),
            None
        ));
        assert!(!leftover(
            &names,
            "acme",
            &runner(&ours_name, "offline", true),
            None
        ));
        assert!(
            !leftover(&names, "acme", &runner("build-box", "offline", false), None),
            "foreign"
        );
        let other_owner = names.name("other", "0123456789ab");
        assert!(
            !leftover(
                &names,
                "acme",
                &runner(&other_owner, "offline", false),
                None
            ),
            "another owner's prefix"
        );
        let staging = RunnerNames::for_installation("another ca", "gha-scaler");
        let theirs = runner(&staging.name("acme", "0123456789ab"), "offline", false);
        assert!(
            !leftover(&names, "acme", &theirs, None),
            "another installation's registration on the same owner"
        );
        assert!(
            leftover(
                &names,
                "acme",
                &runner("gha-acme-0123456789ab", "offline", false),
                Some(&record(RunnerLifecycle::Finished))
            ),
            "an untagged name of ours (before installation tags) with a finished record of ours"
        );
        assert!(
            !leftover(
                &names,
                "acme",
                &runner("gha-acme-0123456789ab", "offline", false),
                None
            ),
            "an untagged name without a record proves nothing"
        );
    }

    #[test]
    fn a_running_runner_that_never_came_online_is_found_after_the_timeout() {
        let mut r = record(RunnerLifecycle::Running);
        r.created_ms = 0;
        let offline = runner("gha-acme-1", "offline", false);
        let online = runner("gha-acme-1", "online", false);
        let busy = runner("gha-acme-1", "offline", true);
        assert!(never_registered(&r, Some(&offline), 1_001, 1_000));
        assert!(
            never_registered(&r, None, 1_001, 1_000),
            "token mode: never registered at all"
        );
        assert!(
            !never_registered(&r, Some(&offline), 1_000, 1_000),
            "within the timeout"
        );
        assert!(!never_registered(&r, Some(&online), 5_000, 1_000));
        assert!(!never_registered(&r, Some(&busy), 5_000, 1_000));
        let mut working = r.clone();
        working.job_id = Some(3);
        assert!(
            !never_registered(&working, Some(&offline), 5_000, 1_000),
            "it took a job"
        );
        let starting = record(RunnerLifecycle::Starting);
        assert!(
            !never_registered(&starting, None, 5_000, 1_000),
            "its container is not running yet"
        );
    }

    #[test]
    fn records_are_matched_by_github_id_else_by_name_and_by_scope() {
        let mut jit = record(RunnerLifecycle::Running);
        jit.github_id = Some(7);
        let listing = [runner("something-else", "online", false)];
        assert!(listed(&jit, &listing).is_some(), "id 7");
        let mut token = jit.clone();
        token.github_id = None;
        assert!(listed(&token, &listing).is_none());
        assert!(in_scope(&jit, &Scope::Org("acme".into())));
        let mut repo = jit.clone();
        repo.repo = Some("App".into());
        assert!(in_scope(&repo, &Scope::Repo(RepoRef::new("acme", "app"))));
        assert!(!in_scope(&repo, &Scope::Org("acme".into())));
    }
}
