//! Automatic webhook setup: exactly one hook of ours per target, with our current secret.
//!
//! A *target* is where a hook lives: the organization (an org owner with `ALL_REPOS`, when its
//! credentials may manage organization hooks), else each served repository (`REPO_NAME`, or every
//! repository of the owner under `ALL_REPOS`). For each, [`plan`] decides create / update /
//! nothing / skip from the hooks GitHub lists, and the executor here does it: duplicates of ours
//! deleted first, then one create or update carrying URL, events, `json`, TLS on, active and the
//! secret. Foreign hooks (other URLs) are never touched. Repositories we may not manage (no admin,
//! archived, hooks not readable with these credentials) are skipped with a reason that says what
//! to grant.
//!
//! The same code serves three callers: the start-up task ([`spawn`], level-triggered: it runs at
//! start, again after [`SetupOptions::resync_interval`], sooner after a failure, and never while
//! the rate limit is low), `POST …/webhooks/preview` (plan only) and `POST …/webhooks/setup`.
//! Runs for one owner are serialised by a per-owner async lock, so the start-up task and an
//! operator cannot race each other into two hooks. Content-creating requests are paced (GitHub's
//! secondary limit allows 80 a minute).

mod plan;
mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use shared::github::{
    GithubApi, GithubError, Hook, HookParams, RepoRef, RepoSource, Repository, Scope, Secret,
};
use shared::owner::Owner;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::plan::{Action, EVENTS, Plan, is_ours, repo_skip_reason, same_url};
pub use self::report::{ErrorReport, Outcome, OwnerReport, Summary, TargetReport};
use crate::config::{Config, OwnerAuth, OwnerConfig};
use crate::http::error::{Grant, chain, rfc3339};

/// How the setup paces itself.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The least time between two content-creating requests (create, update, delete).
    pub write_interval: Duration,
    /// After a clean run, the next one (repairs hooks someone deleted or edited).
    pub resync_interval: Duration,
    /// After a run with failures, the next one.
    pub retry_interval: Duration,
    /// Share of the hourly REST quota the start-up task leaves to scaling (it waits below it).
    pub reserve_fraction: f64,
}

impl Default for SetupOptions {
    fn default() -> Self {
        Self {
            write_interval: Duration::from_millis(800),
            resync_interval: Duration::from_secs(3600),
            retry_interval: Duration::from_secs(60),
            reserve_fraction: 0.2,
        }
    }
}

/// What a run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan only (`…/webhooks/preview`).
    Preview,
    /// Plan and apply (`…/webhooks/setup`, the start-up task).
    Apply,
}

/// What we know about a hook we wrote: GitHub's `updated_at` after our write, and which secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    updated_at: String,
    secret: Option<[u8; 32]>,
}

fn fingerprint(secret: Option<&Secret>) -> Option<[u8; 32]> {
    secret.map(|s| Sha256::digest(s.expose().as_bytes()).into())
}

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Repo(r) => format!("repo:{}", r.to_string().to_ascii_lowercase()),
        Scope::Org(o) => format!("org:{}", o.to_ascii_lowercase()),
    }
}

/// The webhook setup service, shared by the start-up task and the management API.
pub struct WebhookSetup {
    github: Arc<dyn GithubApi>,
    owners: Vec<OwnerConfig>,
    webhook_url: Option<String>,
    options: SetupOptions,
    /// One per configured owner: held for a whole run, across `.await`s on purpose,
    /// so that two runs for one owner never interleave.
    owner_locks: HashMap<Owner, Arc<tokio::sync::Mutex<()>>>,
    /// Hooks we wrote, by (scope key, hook id). Short sections, never held across `.await`.
    stamps: Mutex<HashMap<(String, u64), Stamp>>,
    /// The latest applied run per owner, for `GET …/webhooks/setup`.
    reports: Mutex<HashMap<Owner, OwnerReport>>,
    /// When the next content-creating request may go. Short sections only.
    next_write: Mutex<Instant>,
    /// Our hook per target (scope key → scope, hook id), as last seen or written: the hooks
    /// whose failed deliveries `redelivery` recovers. Short sections only.
    ours: Mutex<std::collections::BTreeMap<String, (Scope, u64)>>,
}

impl WebhookSetup {
    pub fn new(config: &Config, github: Arc<dyn GithubApi>, options: SetupOptions) -> Self {
        let owner_locks = config
            .owners
            .iter()
            .map(|o| (o.owner(), Arc::default()))
            .collect();
        Self {
            github,
            owners: config.owners.clone(),
            webhook_url: config.webhook_url.clone(),
            options,
            owner_locks,
            stamps: Mutex::default(),
            reports: Mutex::default(),
            next_write: Mutex::new(Instant::now()),
            ours: Mutex::default(),
        }
    }

    /// Our hooks (scope, id) as of the latest setup runs, in a stable order.
    pub fn our_hooks(&self) -> Vec<(Scope, u64)> {
        lock(&self.ours).values().cloned().collect()
    }

    fn remember_ours(&self, scope: &Scope, hook_id: Option<u64>) {
        let mut ours = lock(&self.ours);
        match hook_id {
            Some(id) => ours.insert(scope_key(scope), (scope.clone(), id)),
            None => ours.remove(&scope_key(scope)),
        };
    }

    /// `WEBHOOK_URL`, if set.
    pub fn webhook_url(&self) -> Option<&str> {
        self.webhook_url.as_deref()
    }

    /// The latest applied run for `owner`.
    pub fn last_report(&self, owner: &str) -> Option<OwnerReport> {
        lock(&self.reports).get(&Owner::new(owner)).cloned()
    }

    fn owner_lock(&self, owner: &OwnerConfig) -> Arc<tokio::sync::Mutex<()>> {
        self.owner_locks
            .get(&owner.owner())
            .cloned()
            .unwrap_or_default()
    }

    fn ensured(&self, scope: &Scope, hook: &Hook, secret: Option<&Secret>) -> bool {
        let Some(updated_at) = &hook.updated_at else {
            return false;
        };
        lock(&self.stamps)
            .get(&(scope_key(scope), hook.id))
            .is_some_and(|s| &s.updated_at == updated_at && s.secret == fingerprint(secret))
    }

    /// Waits for this request's slot under [`SetupOptions::write_interval`].
    async fn pace(&self) {
        let wait = {
            let mut next = lock(&self.next_write);
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.options.write_interval;
            slot - now
        };
        tokio::time::sleep(wait).await;
    }

    /// Plans one target from its hooks and, in [`Mode::Apply`], carries the plan out. A failed
    /// write comes back with its report (outcome `failed`) and GitHub's error.
    async fn reconcile(
        &self,
        owner: &OwnerConfig,
        url: &str,
        scope: &Scope,
        hooks: &[Hook],
        mode: Mode,
    ) -> Result<(TargetReport, Option<Hook>), (TargetReport, GithubError)> {
        let secret = owner.webhook_secret.as_ref();
        let plan = plan::plan(hooks, url, secret.is_some(), |h| {
            self.ensured(scope, h, secret)
        });
        let mut report = TargetReport::new(scope, plan.action, plan.reasons.clone());
        report.hook_id = plan.hook_id;
        report.foreign_hooks = plan.foreign_hooks;
        let kept = plan
            .hook_id
            .and_then(|id| hooks.iter().find(|h| h.id == id).cloned());
        if mode == Mode::Preview || !matches!(plan.action, Action::Create | Action::Update) {
            if mode == Mode::Apply {
                self.remember_ours(scope, kept.as_ref().map(|h| h.id));
            }
            return Ok((report, kept));
        }
        match self.apply(scope, url, secret, &plan, &mut report).await {
            Ok(hook) => {
                self.remember_ours(scope, Some(hook.id));
                info!(owner = %owner.name, target = %report.target, action = ?plan.action,
                      hook_id = hook.id, "webhook set up");
                report.hook_id = Some(hook.id);
                report.outcome = Some(Outcome::Applied);
                Ok((report, Some(hook)))
            }
            Err(err) => {
                warn!(owner = %owner.name, target = %report.target, error = %chain(&err),
                      "webhook setup failed");
                report.outcome = Some(Outcome::Failed);
                report.error = Some(ErrorReport::from_github(&err));
                Err((report, err))
            }
        }
    }

    async fn apply(
        &self,
        scope: &Scope,
        url: &str,
        secret: Option<&Secret>,
        plan: &Plan,
        report: &mut TargetReport,
    ) -> Result<Hook, GithubError> {
        // Duplicates go first: the kept hook's new events would overlap theirs (GitHub: 422).
        for id in &plan.remove {
            self.pace().await;
            match self.github.delete_hook(scope, *id).await {
                Ok(()) => report.removed_hooks.push(*id),
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err),
            }
        }
        let mut params = HookParams::json(url, secret.cloned(), &EVENTS);
        self.pace().await;
        let hook = match plan.hook_id {
            Some(id) if plan.action == Action::Update => {
                params.name = None;
                self.github.update_hook(scope, id, &params).await?
            }
            _ => self.github.create_hook(scope, &params).await?,
        };
        if let Some(updated_at) = hook.updated_at.clone() {
            lock(&self.stamps).insert(
                (scope_key(scope), hook.id),
                Stamp {
                    updated_at,
                    secret: fingerprint(secret),
                },
            );
        }
        Ok(hook)
    }

    /// `PUT …/hooks/ensure`: our hook on one repository, created or updated; GitHub's errors
    /// are returned as they are (the caller asked for this repository explicitly).
    pub async fn ensure_repo(
        &self,
        owner: &OwnerConfig,
        repo: &RepoRef,
    ) -> Result<(TargetReport, Option<Hook>), EnsureError> {
        let url = self
            .webhook_url
            .as_deref()
            .ok_or(EnsureError::NoWebhookUrl)?;
        let guard = self.owner_lock(owner);
        let _serialised = guard.lock().await;
        let scope = Scope::Repo(repo.clone());
        let hooks = self
            .github
            .list_hooks(&scope)
            .await
            .map_err(EnsureError::List)?;
        self.reconcile(owner, url, &scope, &hooks, Mode::Apply)
            .await
            .map_err(|(_, err)| EnsureError::Write(err))
    }

    /// Previews or applies setup for one owner. `budgeted`: stop early while the owner's REST
    /// quota is below the reserve (the start-up task); an operator's request is not budgeted.
    pub async fn run(
        &self,
        owner: &OwnerConfig,
        mode: Mode,
        budgeted: bool,
    ) -> Option<OwnerReport> {
        let url = self.webhook_url.clone()?;
        let guard = self.owner_lock(owner);
        let _serialised = guard.lock().await;
        let mut report = OwnerReport {
            owner: owner.name.clone(),
            webhook_url: url.clone(),
            mode: if mode == Mode::Apply {
                "setup"
            } else {
                "preview"
            },
            started_at: rfc3339(SystemTime::now()),
            finished_at: String::new(),
            summary: Summary::default(),
            targets: Vec::new(),
            error: None,
            rate_limited_until: None,
        };
        let targets = match self.targets(owner, &mut report).await {
            Ok(targets) => targets,
            Err(err) => {
                // The API budget holding background work back is the same wait as a rate limit.
                if let GithubError::RateLimited { until, .. }
                | GithubError::Deferred { until, .. } = &err
                {
                    report.rate_limited_until = Some(until.map_or_else(String::new, rfc3339));
                }
                warn!(owner = %owner.name, error = %chain(&err), "webhook setup cannot list its targets");
                report.error = Some(ErrorReport::from_github(&err));
                return Some(self.keep(report.finish(), mode));
            }
        };
        let mut stopped = None;
        for (index, (scope, repo)) in targets.iter().enumerate() {
            if budgeted
                && index % 25 == 0
                && let Some(until) = self.over_budget(owner).await
            {
                report.rate_limited_until = Some(rfc3339(until));
                stopped = Some(index);
                break;
            }
            if let Some(reason) = repo.as_ref().and_then(repo_skip_reason) {
                info!(owner = %owner.name, target = %scope, reason, "webhook setup skips a repository");
                report
                    .targets
                    .push(TargetReport::new(scope, Action::Skip, vec![reason]));
                continue;
            }
            let hooks = match self.github.list_hooks(scope).await {
                Ok(hooks) => hooks,
                Err(
                    GithubError::RateLimited { until, .. } | GithubError::Deferred { until, .. },
                ) => {
                    report.rate_limited_until = Some(until.map_or_else(String::new, rfc3339));
                    stopped = Some(index);
                    break;
                }
                Err(err) => {
                    report.targets.push(unreadable(owner, scope, &err));
                    continue;
                }
            };
            let target = match self.reconcile(owner, &url, scope, &hooks, mode).await {
                Ok((target, _)) | Err((target, _)) => target,
            };
            report.targets.push(target);
        }
        if let Some(index) = stopped {
            for (scope, _) in &targets[index..] {
                let reason = "not attempted: GitHub's rate limit is low; the next run continues";
                report
                    .targets
                    .push(TargetReport::new(scope, Action::Skip, vec![reason.into()]));
            }
        }
        Some(self.keep(report.finish(), mode))
    }

    fn keep(&self, report: OwnerReport, mode: Mode) -> OwnerReport {
        if mode == Mode::Apply {
            lock(&self.reports).insert(Owner::new(&report.owner), report.clone());
        }
        report
    }

    /// The owner's targets: its organization (when it may manage org hooks) or its repositories.
    /// Repositories come with GitHub's view of them (permissions) when known.
    async fn targets(
        &self,
        owner: &OwnerConfig,
        report: &mut OwnerReport,
    ) -> Result<Vec<(Scope, Option<Repository>)>, GithubError> {
        let account = self.github.get_owner(&owner.name).await?;
        if account.is_organization() && owner.all_repos {
            let org = Scope::Org(account.login.clone());
            match self.github.list_hooks(&org).await {
                Ok(_) => return Ok(vec![(org, None)]),
                Err(err @ (GithubError::Forbidden { .. } | GithubError::NotFound { .. })) => {
                    let mut skipped = unreadable(owner, &org, &err);
                    skipped
                        .reasons
                        .push("using a hook on each repository instead".into());
                    report.targets.push(skipped);
                }
                Err(err) => return Err(err),
            }
        }
        if let Some(name) = owner.repo_name.as_deref().filter(|_| !owner.all_repos) {
            let repo = RepoRef::new(&account.login, name);
            return match self.github.get_repository(&repo).await {
                Ok(r) => Ok(vec![(Scope::Repo(repo), Some(r))]),
                Err(err @ (GithubError::NotFound { .. } | GithubError::Forbidden { .. })) => {
                    report
                        .targets
                        .push(unreadable(owner, &Scope::Repo(repo), &err));
                    Ok(Vec::new())
                }
                Err(err) => Err(err),
            };
        }
        let repos =
            list_owner_repos(self.github.as_ref(), owner, account.is_organization()).await?;
        Ok(repos
            .into_iter()
            .map(|r| (Scope::Repo(RepoRef::new(&r.owner.login, &r.name)), Some(r)))
            .collect())
    }

    /// `Some(reset)` when the owner's core quota is at or below the reserve.
    async fn over_budget(&self, owner: &OwnerConfig) -> Option<SystemTime> {
        let status = self.github.rate_limit(&owner.name).await.ok()?;
        let core = status.resources.get("core")?;
        let reserve = (core.limit as f64 * self.options.reserve_fraction).ceil() as u64;
        (core.remaining <= reserve).then(|| {
            info!(owner = %owner.name, remaining = core.remaining, reserve,
                  "webhook setup pauses to leave the REST quota to scaling");
            SystemTime::UNIX_EPOCH + Duration::from_secs(core.reset)
        })
    }

    /// The start-up task: every owner, now and again later, until `shutdown`.
    async fn run_forever(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let mut next = self.options.resync_interval;
            for owner in &self.owners {
                let run = self.run(owner, Mode::Apply, true);
                let report = tokio::select! {
                    report = run => report,
                    () = shutdown.cancelled() => return,
                };
                let Some(report) = report else { return };
                let s = &report.summary;
                match report.failure() {
                    Some(failure) => warn!(owner = %owner.name, error = %failure,
                          created = s.create, updated = s.update, failed = s.failed,
                          "webhook setup failed; retrying soon"),
                    None => info!(owner = %owner.name, created = s.create, updated = s.update,
                          unchanged = s.nothing, skipped = s.skip, failed = s.failed,
                          "webhook setup finished"),
                }
                if report.needs_retry() {
                    next = next.min(self.options.retry_interval);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Why [`WebhookSetup::ensure_repo`] did not ensure.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("WEBHOOK_URL is not set")]
    NoWebhookUrl,
    #[error("reading the repository's hooks failed")]
    List(#[source] GithubError),
    #[error("writing the hook failed")]
    Write(#[source] GithubError),
}

/// A target whose hooks cannot be read: skipped (permission, visibility) or failed (anything else).
fn unreadable(owner: &OwnerConfig, scope: &Scope, err: &GithubError) -> TargetReport {
    let reason = match err {
        GithubError::Forbidden { message, .. } => {
            let grant = Grant::from_error(err)
                .map(|g| describe_grant(&owner.auth, &g))
                .unwrap_or_default();
            format!("GitHub refused to show its hooks ({message}){grant}")
        }
        GithubError::NotFound { .. } => match scope {
            Scope::Repo(_) => "not found, or not visible to these credentials (GitHub answers 404 \
                               for private resources a token cannot see)"
                .into(),
            Scope::Org(_) => "organization hooks are not visible to these credentials".into(),
        },
        other => {
            let mut report = TargetReport::new(scope, Action::Skip, vec![chain(other)]);
            report.outcome = Some(Outcome::Failed);
            report.error = Some(ErrorReport::from_github(other));
            return report;
        }
    };
    info!(owner = %owner.name, target = %scope, reason, "webhook setup skips a target");
    let mut report = TargetReport::new(scope, Action::Skip, vec![reason]);
    report.error = Some(ErrorReport::from_github(err));
    report
}

/// `: grant …` in the words of the credential kind.
fn describe_grant(auth: &OwnerAuth, grant: &Grant) -> String {
    match (auth, &grant.permissions, &grant.scopes) {
        (OwnerAuth::App { .. }, Some(p), _) => {
            format!("; grant the GitHub App the permission {p} and accept it on the installation")
        }
        (OwnerAuth::Token(_), _, Some(s)) => format!("; give the token one of the scopes: {s}"),
        (OwnerAuth::Token(_), Some(p), None) => {
            format!("; give the fine-grained token the permission {p}")
        }
        _ => String::new(),
    }
}

/// Every repository of `owner` its credentials can see, all pages.
pub async fn list_owner_repos(
    github: &dyn GithubApi,
    owner: &OwnerConfig,
    is_org: bool,
) -> Result<Vec<Repository>, GithubError> {
    let source = match (&owner.auth, is_org) {
        (OwnerAuth::App { .. }, _) => RepoSource::Installation,
        (OwnerAuth::Token(_), true) => RepoSource::Org,
        // `/user/repos` includes private repositories; `/users/{o}/repos` only public ones.
        (OwnerAuth::Token(_), false) => RepoSource::AuthenticatedUser,
    };
    let mut repos = github.list_repositories(&owner.name, source).await?;
    repos.retain(|r| owner.owner() == r.owner.login);
    repos.sort_by_key(|r| r.name.to_ascii_lowercase());
    Ok(repos)
}

/// Starts the start-up task, unless `WEBHOOK_URL` is unset (then it logs how to turn it on).
pub fn spawn(
    setup: Arc<WebhookSetup>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if setup.webhook_url.is_none() {
        info!(
            "automatic webhook setup is off: set WEBHOOK_URL to the public URL of this \
             controller's /webhook (e.g. https://scaler.example.com/webhook) to turn it on"
        );
        return None;
    }
    // Webhook setup is background work for the API budget (an operator's request is not).
    Some(tokio::spawn(
        shared::github::CallKind::Background.scope(setup.run_forever(shutdown)),
    ))
}

/// A std mutex's data, even after a panic elsewhere poisoned it (the maps stay consistent:
/// every section is a single insert or read).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
