//! The registration target of every runner, with what GitHub told us about it cached: whether
//! an owner is a user or an organization, its runner groups, which repositories are public,
//! whether this GitHub has JIT, and registrations that failed lately (so a job says why it
//! waits and GitHub is not asked again at every activation).
//!
//! The rules are pure ([`super::registration`]); this is the I/O around them. Caches live in
//! memory for the life of the process (not persisted): an owner's kind is looked up once and
//! kept; groups and repository visibility are refreshed after [`REFRESH`]. Every map is behind
//! a `std::sync::Mutex` held for a few map operations only, never across an `.await`; the
//! scheduler's task and the reconciler are the callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shared::command::Registration;
use shared::github::{GithubApi, GithubError, JitConfigRequest, RepoRef, Scope};
use shared::logsafe::Untrusted;
use shared::owner::Owner;
use shared::runner::now_ms;
use tracing::{error, info, warn};

use super::registration::{
    self, ChosenGroup, GroupSetting, OwnerKind, Problem, check_public, check_runner, choose_group,
};
use crate::config::{Config, OwnerConfig, RegistrationMode};
use crate::metrics::Metrics;
use crate::store::RunnerRecord;

/// How long a group list or a repository's visibility is trusted.
const REFRESH: Duration = Duration::from_secs(600);
/// The first and the longest wait after a failed registration or lookup.
const MIN_BACKOFF_MS: i64 = 5_000;
const MAX_BACKOFF_MS: i64 = 300_000;

#[derive(Debug, Clone)]
struct Failure {
    problem: String,
    attempts: u32,
    until_ms: i64,
}

impl Failure {
    fn next(previous: Option<&Failure>, problem: String, now: i64) -> Self {
        let attempts = previous.map_or(1, |f| f.attempts + 1);
        let wait = (MIN_BACKOFF_MS << (attempts - 1).min(6)).min(MAX_BACKOFF_MS);
        Failure {
            problem,
            attempts,
            until_ms: now + wait,
        }
    }
}

#[derive(Default)]
struct Caches {
    kinds: HashMap<Owner, OwnerKind>,
    kind_failures: HashMap<Owner, Failure>,
    /// Organization → (its group for our runners or why there is none, fetched at).
    groups: HashMap<Owner, (Result<ChosenGroup, Problem>, i64)>,
    /// (owner, repo) → (public, fetched at).
    public: HashMap<(Owner, String), (bool, i64)>,
    /// (owner, repo or "" for organization runners) → the last failed registration.
    failures: HashMap<(Owner, String), Failure>,
    /// Set once JIT turned out to be missing (GHES before 3.10): why tokens are used instead.
    token_fallback: Option<String>,
}

/// One owner's registration target, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerTarget {
    pub owner: String,
    pub kind: Option<OwnerKind>,
    pub level: &'static str,
    pub runner_group: Option<ChosenGroup>,
    pub problem: Option<String>,
}

/// What `/status` shows under `registration`.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationStatus {
    /// `jit` or `token`, as configured.
    pub configured: &'static str,
    /// What is used now (`token` after a GHES fallback).
    pub mode: &'static str,
    pub fallback: Option<String>,
    pub owners: Vec<OwnerTarget>,
}

/// Why no registration could be made for a runner.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// GitHub refused `what`: backed off (and classified) by the scheduler's containment.
    #[error("GitHub refused the {what}")]
    Github {
        what: &'static str,
        #[source]
        source: GithubError,
    },
    /// Refused before asking GitHub: a JIT limit, an unknown or hosted runner group.
    #[error("{0}")]
    Local(String),
}

pub struct Registrar {
    config: Arc<Config>,
    github: Arc<dyn GithubApi>,
    caches: Mutex<Caches>,
}

/// An owner, or one of its repositories (repository names are case-insensitive too).
fn scope_key(owner: &OwnerConfig, repo: Option<&str>) -> (Owner, String) {
    (owner.owner(), repo.unwrap_or("").to_ascii_lowercase())
}

impl Registrar {
    pub fn new(config: Arc<Config>, github: Arc<dyn GithubApi>) -> Self {
        Self {
            config,
            github,
            caches: Mutex::new(Caches::default()),
        }
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The owner's kind if known.
    pub fn kind(&self, owner: &str) -> Option<OwnerKind> {
        self.caches().kinds.get(&Owner::new(owner)).copied()
    }

    /// Looks the owner's kind up (`GET /users/{owner}`) once; failures back off.
    pub async fn resolve_kind(&self, owner: &OwnerConfig) -> Option<OwnerKind> {
        let key = owner.owner();
        let now = now_ms();
        {
            let caches = self.caches();
            if let Some(kind) = caches.kinds.get(&key) {
                return Some(*kind);
            }
            if caches
                .kind_failures
                .get(&key)
                .is_some_and(|f| now < f.until_ms)
            {
                return None;
            }
        }
        match self.github.get_owner(&owner.name).await {
            Ok(account) => {
                let kind = OwnerKind::from_type(&account.kind);
                info!(owner = %owner.name, ?kind, "owner kind resolved");
                let mut caches = self.caches();
                caches.kinds.insert(key.clone(), kind);
                caches.kind_failures.remove(&key);
                Some(kind)
            }
            Err(e) => {
                warn!(owner = %owner.name, error = %e, "cannot tell whether the owner is a user or an organization; registering repository runners meanwhile");
                let mut caches = self.caches();
                let next = Failure::next(caches.kind_failures.get(&key), e.to_string(), now);
                caches.kind_failures.insert(key, next);
                None
            }
        }
    }

    /// Whether `owner`'s runners register per repository (see [`registration::repo_level`]).
    pub fn repo_level(&self, owner: &OwnerConfig) -> bool {
        registration::repo_level(
            owner.repo_name.is_some(),
            owner.all_repos,
            self.kind(&owner.name),
        )
    }

    /// What GitHub knows that the next plan needs: owner kinds, and for organization runners
    /// the group and the visibility of the repositories with queued jobs. Owners without queued
    /// jobs or warm pools (`MIN_IDLE_RUNNERS`, which need the kind before any job) cost no
    /// request (their quota is left to webhook setup and the reconciler).
    pub async fn prepare(&self, jobs: &[(String, String)]) {
        for owner in &self.config.owners {
            if !jobs.iter().any(|(o, _)| owner.owner() == *o) && owner.warm.pools.is_empty() {
                continue;
            }
            if owner.all_repos && owner.repo_name.is_none() {
                self.resolve_kind(owner).await;
            }
            if self.repo_level(owner) {
                continue;
            }
            // Cached; `blocked` reads the outcome.
            let _ = self.group(owner).await;
            for (_, repo) in jobs.iter().filter(|(o, _)| owner.owner() == *o) {
                self.is_public(owner, repo).await;
            }
        }
    }

    /// The organization group for `owner`'s runners, cached for [`REFRESH`].
    async fn group(&self, owner: &OwnerConfig) -> Result<ChosenGroup, Problem> {
        let key = owner.owner();
        let now = now_ms();
        if let Some((chosen, at)) = self.caches().groups.get(&key)
            && now - at < REFRESH.as_millis() as i64
        {
            return chosen.clone();
        }
        let setting = owner.runner_group.as_deref().and_then(GroupSetting::parse);
        let variable = format!(
            "RUNNER_GROUP / {}",
            registration::group_variable(&owner.name)
        );
        let chosen = match self.github.list_runner_groups(&owner.name).await {
            Ok(groups) => choose_group(&owner.name, &variable, setting.as_ref(), &groups),
            // Without a setting, the default group works even when the groups cannot be read.
            Err(e) if setting.is_none() => {
                warn!(owner = %owner.name, error = %e, "cannot list runner groups; using the default group");
                Ok(ChosenGroup {
                    id: 1,
                    name: "Default".into(),
                    allows_public_repositories: true,
                })
            }
            Err(e) => Err(Problem::Github(format!(
                "cannot resolve {variable}={}: {e}",
                owner.runner_group.as_deref().unwrap_or_default()
            ))),
        };
        if let Err(p) = &chosen {
            error!(owner = %owner.name, problem = %p, "runner group unusable; this owner's jobs wait");
        }
        self.caches().groups.insert(key, (chosen.clone(), now));
        chosen
    }

    /// Whether `owner/repo` is public (`GET /repos/{o}/{r}`), cached; unknown counts as private.
    async fn is_public(&self, owner: &OwnerConfig, repo: &str) -> bool {
        let key = scope_key(owner, Some(repo));
        let now = now_ms();
        if let Some((public, at)) = self.caches().public.get(&key)
            && now - at < REFRESH.as_millis() as i64
        {
            return *public;
        }
        let repo_ref = RepoRef::new(owner.name.clone(), repo.to_owned());
        match self.github.get_repository(&repo_ref).await {
            Ok(r) => {
                self.caches().public.insert(key, (!r.private, now));
                !r.private
            }
            Err(e) => {
                // Remembered as private until the next refresh, so it is not asked every activation.
                warn!(repo = %Untrusted(&repo_ref.to_string()), error = %e, "cannot read the repository's visibility");
                self.caches().public.insert(key, (false, now));
                false
            }
        }
    }

    /// Why a job of `owner/repo` cannot get a runner now, if it cannot (from the caches only).
    pub fn blocked(&self, owner: &OwnerConfig, repo: &str, now: i64) -> Option<String> {
        let repo_level = self.repo_level(owner);
        let caches = self.caches();
        let scope = scope_key(owner, repo_level.then_some(repo));
        if let Some(f) = caches.failures.get(&scope).filter(|f| now < f.until_ms) {
            return Some(format!("{} (retrying after a back-off)", f.problem));
        }
        if repo_level {
            return None;
        }
        let group = match caches.groups.get(&scope.0) {
            Some((Ok(group), _)) => group,
            Some((Err(problem), _)) => return Some(problem.to_string()),
            None => return None,
        };
        let public = caches
            .public
            .get(&scope_key(owner, Some(repo)))
            .is_some_and(|(p, _)| *p);
        check_public(&owner.name, repo, public, group)
            .err()
            .map(|p| p.to_string())
    }

    pub fn mode(&self) -> RegistrationMode {
        if self.caches().token_fallback.is_some() {
            RegistrationMode::Token
        } else {
            self.config.runners.registration
        }
    }

    /// Registration material for one runner (never the owner's PAT or App key), with its GitHub
    /// runner id for JIT. A failure is remembered for the runner's scope and backs off.
    pub async fn register(
        &self,
        owner: &OwnerConfig,
        record: &RunnerRecord,
        metrics: &Metrics,
    ) -> Result<(Registration, Option<u64>), RegisterError> {
        let result = self.try_register(owner, record, metrics).await;
        let key = scope_key(owner, record.repo.as_deref());
        let mut caches = self.caches();
        match &result {
            Ok(_) => {
                caches.failures.remove(&key);
            }
            // GitHub's refusals back off in the scheduler's containment (per owner, with
            // circuits); the registrar holds jobs only for what it refused itself.
            Err(RegisterError::Github { .. }) => {}
            Err(RegisterError::Local(problem)) => {
                let next = Failure::next(caches.failures.get(&key), problem.clone(), now_ms());
                caches.failures.insert(key, next);
            }
        }
        result
    }

    async fn try_register(
        &self,
        owner: &OwnerConfig,
        record: &RunnerRecord,
        metrics: &Metrics,
    ) -> Result<(Registration, Option<u64>), RegisterError> {
        let scope = match &record.repo {
            Some(repo) => Scope::Repo(RepoRef::new(owner.name.clone(), repo.clone())),
            None => Scope::Org(owner.name.clone()),
        };
        // Repositories have only the default group: RUNNER_GROUP applies to org runners.
        let group = match &scope {
            Scope::Org(_) => Some(
                self.group(owner)
                    .await
                    .map_err(|p| RegisterError::Local(p.to_string()))?,
            ),
            _ => None,
        };
        let mode = self.mode();
        check_runner(
            &record.name,
            &record.labels,
            mode == RegistrationMode::Token,
        )
        .map_err(|p| RegisterError::Local(p.to_string()))?;
        if mode == RegistrationMode::Jit {
            let request = JitConfigRequest {
                name: record.name.clone(),
                runner_group_id: group.as_ref().map_or(1, |g| g.id),
                labels: record.labels.clone(),
                work_folder: None,
            };
            match super::containment::jit_config(self.github.as_ref(), metrics, &scope, &request)
                .await
            {
                Ok(jit) => {
                    return Ok((
                        Registration::JitConfig(jit.encoded_jit_config.expose().to_owned()),
                        Some(jit.runner.id),
                    ));
                }
                Err(e @ GithubError::NotFound { .. })
                    if !registration::is_github_com(&self.config.github_api_url) =>
                {
                    let why = format!(
                        "{e}: this GitHub Enterprise Server has no JIT runner configs (they need GHES 3.10); \
                         using registration tokens instead (set RUNNER_REGISTRATION=token to make it explicit)"
                    );
                    let first = self.caches().token_fallback.replace(why.clone()).is_none();
                    if first {
                        warn!(reason = %why, "falling back to registration tokens");
                    }
                }
                Err(source) => {
                    return Err(RegisterError::Github {
                        what: "JIT registration",
                        source,
                    });
                }
            }
        }
        let token = self
            .github
            .registration_token(&scope)
            .await
            .map_err(|source| RegisterError::Github {
                what: if self.caches().token_fallback.is_some() {
                    "registration token (JIT is unavailable on this server: it needs GHES 3.10, \
                     or RUNNER_REGISTRATION=token with a runner image that registers with a token)"
                } else {
                    "registration token"
                },
                source,
            })?;
        let base = web_url(&self.config.github_api_url);
        let url = match &record.repo {
            Some(repo) => format!("{base}/{}/{repo}", owner.name),
            None => format!("{base}/{}", owner.name),
        };
        Ok((
            Registration::Token {
                token: token.token.expose().to_owned(),
                url,
                runner_group: group.map(|g| g.name).unwrap_or_default(),
            },
            None,
        ))
    }

    /// Resolves the target of every owner with a `RUNNER_GROUP` at start-up and logs what cannot
    /// work (an unknown group name names its variable). `check-config` cannot do this: it does
    /// not call GitHub. Owners without a group setting are resolved with their first job.
    pub async fn startup_check(&self) {
        for owner in self
            .config
            .owners
            .iter()
            .filter(|o| o.runner_group.is_some())
        {
            if owner.all_repos && owner.repo_name.is_none() {
                self.resolve_kind(owner).await;
            }
            if self.repo_level(owner) {
                if owner.runner_group.is_some() {
                    info!(owner = %owner.name, "RUNNER_GROUP is ignored: this owner registers repository runners, which have only the default group");
                }
                continue;
            }
            let _ = self.group(owner).await;
        }
    }

    /// For `/status`.
    pub fn status(&self) -> RegistrationStatus {
        let configured = match self.config.runners.registration {
            RegistrationMode::Jit => "jit",
            RegistrationMode::Token => "token",
        };
        let owners = self
            .config
            .owners
            .iter()
            .map(|owner| {
                let repo_level = self.repo_level(owner);
                let caches = self.caches();
                let key = owner.owner();
                let group = caches.groups.get(&key).filter(|_| !repo_level);
                OwnerTarget {
                    owner: owner.name.clone(),
                    kind: caches.kinds.get(&key).copied(),
                    level: if repo_level {
                        "repository"
                    } else {
                        "organization"
                    },
                    runner_group: group.and_then(|(g, _)| g.clone().ok()),
                    problem: group
                        .and_then(|(g, _)| g.clone().err().map(|p| p.to_string()))
                        .or_else(|| caches.kind_failures.get(&key).map(|f| f.problem.clone())),
                }
            })
            .collect();
        let caches = self.caches();
        RegistrationStatus {
            configured,
            mode: if caches.token_fallback.is_some() {
                "token"
            } else {
                configured
            },
            fallback: caches.token_fallback.clone(),
            owners,
        }
    }
}

/// `https://api.github.com` → `https://github.com`; `https://HOST/api/v3` → `https://HOST`.
pub fn web_url(api_url: &str) -> String {
    let trimmed = api_url.trim_end_matches('/');
    if let Some(host) = trimmed.strip_suffix("/api/v3") {
        return host.to_owned();
    }
    trimmed.replace("://api.", "://")
}

#[cfg(test)]
mod tests {
    use super::web_url;

    #[test]
    fn the_web_url_follows_the_api_url() {
        assert_eq!(web_url("https://api.github.com"), "https://github.com");
        assert_eq!(
            web_url("https://ghe.example.com/api/v3/"),
            "https://ghe.example.com"
        );
    }
}
