//! Recovering from lost webhooks: GitHub never redelivers a failed delivery by itself, so a
//! controller that was down, or a delivery that was dropped, would leave a job queued forever.
//!
//! Every `RECONCILE_INTERVAL` the reconciler lists the queued and in-progress workflow runs of
//! every served repository through the REST API and asks for their jobs to be fetched, exactly
//! as a `workflow_run` webhook would. The scheduler then serves whatever is still queued.
//! Repeats are harmless: job states only move forward and runs are fetched idempotently.
//!
//! Which repositories an owner has: an organization's from `GET /orgs/{org}/repos`; a user's
//! from `GET /user/repos?affiliation=owner` when the token is that user's (`GET /users/{u}/repos`
//! lists public repositories only, so it is the last resort, with a warning); an App's from
//! `GET /installation/repositories`. A repository whose runs cannot be read (404/403) is
//! skipped with its reason; the owner's other repositories are still swept.

use std::sync::Arc;
use std::time::Duration;

use shared::github::{GithubApi, GithubError, RepoRef, RepoSource, RunStatus};

use super::registrar::Registrar;
use super::registration::OwnerKind;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, OwnerAuth, OwnerConfig};
use crate::store::{RunKey, StateStore};

pub struct Reconciler {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub github: Arc<dyn GithubApi>,
    /// Knows (once) whether an owner is a user or an organization.
    pub registrar: Arc<Registrar>,
    /// Wakes the scheduler when runs were found.
    pub nudge: Arc<Notify>,
    pub interval: Duration,
}

impl Reconciler {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let found = self.reconcile_once().await;
            if found > 0 {
                info!(
                    runs = found,
                    "reconciliation found active workflow runs; fetching their jobs"
                );
                self.nudge.notify_one();
            }
        }
    }

    /// One pass over every owner; returns how many runs it asked to fetch.
    pub async fn reconcile_once(&self) -> usize {
        let mut found = 0;
        for owner in &self.config.owners {
            match self.owner_runs(owner).await {
                Ok(n) => found += n,
                Err(e) => {
                    warn!(owner = %owner.name, error = %e, "reconciliation failed for this owner; next pass retries")
                }
            }
        }
        found
    }

    async fn repositories(&self, owner: &OwnerConfig) -> Result<Vec<String>, GithubError> {
        if !owner.all_repos {
            return Ok(owner.repo_name.iter().cloned().collect());
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
            .map(|r| r.name)
            .collect())
    }

    async fn owner_runs(&self, owner: &OwnerConfig) -> Result<usize, GithubError> {
        let mut found = 0;
        for repo in self.repositories(owner).await? {
            let repo_ref = RepoRef::new(owner.name.clone(), repo.clone());
            for status in [RunStatus::Queued, RunStatus::InProgress] {
                let runs = match self
                    .github
                    .list_workflow_runs(&repo_ref, Some(status))
                    .await
                {
                    Ok(runs) => runs,
                    // One unreadable repository does not end the owner's pass.
                    Err(e @ (GithubError::NotFound { .. } | GithubError::Forbidden { .. })) => {
                        warn!(repo = %repo_ref, error = %e, "skipping a repository whose runs cannot be read");
                        break;
                    }
                    Err(e) => return Err(e),
                };
                for run in runs {
                    let key = RunKey {
                        owner: owner.name.to_ascii_lowercase(),
                        repo: repo.clone(),
                        run_id: run.id,
                    };
                    debug!(run = run.id, %repo, "active run");
                    if let Err(e) = self
                        .store
                        .request_run_fetch(key, shared::runner::now_ms())
                        .await
                    {
                        warn!(error = %e, "cannot record a run to fetch");
                    }
                    found += 1;
                }
            }
        }
        Ok(found)
    }
}
