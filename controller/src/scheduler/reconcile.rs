//! Recovering from lost webhooks: GitHub never redelivers a failed delivery by itself, so a
//! controller that was down, or a delivery that was dropped, would leave a job queued forever.
//!
//! Every `RECONCILE_INTERVAL` the reconciler lists each owner's repositories, polls the queued
//! and in-progress workflow runs of the repositories [`polling`] picks, and asks for the jobs of
//! new or changed runs to be fetched, exactly as a `workflow_run` webhook would. The scheduler
//! then serves whatever is still queued. Repeats are harmless: job states only move forward and
//! runs are fetched idempotently.
//!
//! The whole pass is background work for the API budget (`API_BACKGROUND_SHARE`): every list is
//! a conditional request (an unchanged one is a free `304`), recently pushed repositories go
//! first, the others are covered in a cycle as far as each pass's share of the hour goes, and a
//! deferral by the budget ends the owner's pass (the next one goes on from there).
//!
//! Which repositories an owner has: an organization's from `GET /orgs/{org}/repos`; a user's
//! from `GET /user/repos?affiliation=owner` when the token is that user's (`GET /users/{u}/repos`
//! lists public repositories only, so it is the last resort, with a warning); an App's from
//! `GET /installation/repositories`. A repository whose runs cannot be read (404/403) is
//! skipped with its reason; the owner's other repositories are still swept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shared::github::{
    Budget, CallKind, GithubApi, GithubError, RepoRef, RepoSource, RunStatus, WorkflowRun,
};

use super::polling::{self, RepoMemory, RepoSeen, RunVersion};
use super::registrar::Registrar;
use super::registration::OwnerKind;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, OwnerAuth, OwnerConfig};
use crate::store::{JobState, RunKey, StateStore};

pub struct Reconciler {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub github: Arc<dyn GithubApi>,
    /// The client's API budget: how much of this pass's share is spent.
    pub budget: Arc<Budget>,
    /// Knows (once) whether an owner is a user or an organization.
    pub registrar: Arc<Registrar>,
    /// Wakes the scheduler when runs were found.
    pub nudge: Arc<Notify>,
    pub interval: Duration,
    /// Each owner's completed pass is noted for `gha_scaler_reconcile_age_seconds`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What the reconciler remembers of an owner between passes (only its own task holds it).
#[derive(Debug, Default)]
struct OwnerMemory {
    repos: HashMap<String, RepoMemory>,
    /// Per repository, the runs last asked to be fetched and their version.
    runs: HashMap<String, HashMap<u64, RunVersion>>,
}

/// What one owner's pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub polled: usize,
    pub hot: usize,
    pub fetches: usize,
}

impl Reconciler {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut memory: HashMap<String, OwnerMemory> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let found = CallKind::Background
                .scope(self.reconcile_once(&mut memory))
                .await;
            if found > 0 {
                info!(
                    runs = found,
                    "reconciliation found new or changed workflow runs; fetching their jobs"
                );
                self.nudge.notify_one();
            }
        }
    }

    /// One pass over every owner; returns how many runs it asked to fetch.
    async fn reconcile_once(&self, memory: &mut HashMap<String, OwnerMemory>) -> usize {
        let mut found = 0;
        for owner in &self.config.owners {
            let mem = memory.entry(owner.name.to_ascii_lowercase()).or_default();
            match self.owner_pass(owner, mem).await {
                Ok(report) => {
                    debug!(owner = %owner.name, polled = report.polled, hot = report.hot, fetches = report.fetches, "reconciliation pass");
                    self.metrics
                        .fleet
                        .reconciled(&owner.name, shared::runner::now_ms());
                    found += report.fetches;
                }
                Err(e @ GithubError::Deferred { .. }) => {
                    info!(owner = %owner.name, reason = %e, "reconciliation paused by the API budget; the next pass goes on")
                }
                Err(e) => {
                    warn!(owner = %owner.name, error = %e, "reconciliation failed for this owner; next pass retries")
                }
            }
        }
        found
    }

    async fn repositories(&self, owner: &OwnerConfig) -> Result<Vec<RepoSeen>, GithubError> {
        if !owner.all_repos {
            return Ok(owner
                .repo_name
                .iter()
                .map(|name| RepoSeen {
                    name: name.clone(),
                    pushed_ms: None,
                })
                .collect());
        }
        let source = match owner.auth {
            OwnerAuth::App { .. } => RepoSource::Installation,
            OwnerAuth::Token(_) => {
                let kind = match self.registrar.resolve_kind(owner).await {
                    Some(kind) => kind,
                    None => OwnerKind::from_type(&self.github.get_owner(&owner.name).await?.kind),
                };
                match kind {
                    OwnerKind::Organization => RepoSource::Org,
                    OwnerKind::User => {
                        let login = self
                            .github
                            .authenticated_user(&owner.name)
                            .await?
                            .account
                            .login;
                        if login.eq_ignore_ascii_case(&owner.name) {
                            RepoSource::AuthenticatedUserOwned
                        } else {
                            warn!(owner = %owner.name, token_user = %login,
                                  "the token is not the owner's: only public repositories can be listed");
                            RepoSource::User
                        }
                    }
                }
            }
        };
        Ok(self
            .github
            .list_repositories(&owner.name, source)
            .await?
            .into_iter()
            .filter(|r| r.owner.login.eq_ignore_ascii_case(&owner.name) && r.archived != Some(true))
            .map(|r| RepoSeen {
                pushed_ms: r.pushed_at.as_deref().and_then(epoch_ms),
                name: r.name,
            })
            .collect())
    }

    async fn owner_pass(
        &self,
        owner: &OwnerConfig,
        mem: &mut OwnerMemory,
    ) -> Result<PassReport, GithubError> {
        let repos = self.repositories(owner).await?;
        let now = shared::runner::now_ms();
        // A single configured repository is always polled: there is nothing to choose from.
        let single = !owner.all_repos;
        let plan = polling::order(&repos, &mem.repos, now, polling::MAX_REPOS_PER_PASS);
        let limit = self.budget.limit(&owner.name).unwrap_or(5000);
        let allowance = polling::pass_allowance(
            self.budget.policy().background_allowance(limit),
            self.interval.as_millis() as i64,
        );
        let spent_before = self.budget.background_spent(&owner.name);
        let mut report = PassReport::default();
        for (repo, hot) in plan {
            let spent = self.budget.background_spent(&owner.name) - spent_before;
            if !hot && !single && spent >= allowance {
                debug!(owner = %owner.name, spent, allowance, "this pass's share is spent; the cycle goes on next pass");
                break;
            }
            let runs = self.repo_runs(owner, &repo).await?;
            report.polled += 1;
            report.hot += usize::from(hot);
            let entry = mem.repos.entry(repo.clone()).or_default();
            entry.last_polled_ms = Some(now);
            entry.active = runs.as_ref().is_some_and(|r| !r.is_empty());
            let Some(runs) = runs else { continue };
            let last = mem.runs.remove(&repo).unwrap_or_default();
            let mut seen = HashMap::new();
            for run in runs {
                let version: RunVersion = (run.status.clone(), run.updated_at.clone());
                let key = RunKey {
                    owner: owner.owner(),
                    repo: repo.clone(),
                    run_id: run.id,
                };
                if polling::fetch_needed(last.get(&run.id), &version)
                    && !self.webhooks_cover(&key).await
                {
                    debug!(run = run.id, %repo, "new or changed active run");
                    if let Err(e) = self
                        .store
                        .request_run_fetch(key, shared::runner::now_ms())
                        .await
                    {
                        warn!(error = %e, "cannot record a run to fetch");
                    }
                    report.fetches += 1;
                }
                seen.insert(run.id, version);
            }
            if !seen.is_empty() {
                mem.runs.insert(repo, seen);
            }
        }
        // Forget repositories that are gone, so the memory is bounded by the owner's repositories.
        let names: std::collections::HashSet<&str> =
            repos.iter().map(|r| r.name.as_str()).collect();
        mem.repos.retain(|name, _| names.contains(name.as_str()));
        mem.runs.retain(|name, _| names.contains(name.as_str()));
        Ok(report)
    }

    /// Whether webhooks already told us about this active run: a job of it we know is not
    /// finished. Then fetching it again would spend a call to learn nothing; a run that is active
    /// at GitHub while every job we know of it is finished (or none is known) hides a job.
    async fn webhooks_cover(&self, key: &RunKey) -> bool {
        match self.store.run_job_states(key).await {
            Ok(states) => states.iter().any(|s| *s != JobState::Completed),
            Err(e) => {
                warn!(error = %e, "cannot read a run's jobs; fetching it");
                false
            }
        }
    }

    /// The queued and in-progress runs of one repository; `None` when they cannot be read.
    async fn repo_runs(
        &self,
        owner: &OwnerConfig,
        repo: &str,
    ) -> Result<Option<Vec<WorkflowRun>>, GithubError> {
        let repo_ref = RepoRef::new(owner.name.clone(), repo.to_owned());
        let mut all = Vec::new();
        for status in [RunStatus::Queued, RunStatus::InProgress] {
            match self
                .github
                .list_workflow_runs(&repo_ref, Some(status))
                .await
            {
                Ok(runs) => all.extend(runs),
                // One unreadable repository does not end the owner's pass.
                Err(e @ (GithubError::NotFound { .. } | GithubError::Forbidden { .. })) => {
                    warn!(repo = %repo_ref, error = %e, "skipping a repository whose runs cannot be read");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(all))
    }
}

/// An RFC 3339 timestamp in epoch ms.
fn epoch_ms(value: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}
