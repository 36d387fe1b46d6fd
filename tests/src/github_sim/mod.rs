//! A faithful GitHub simulator for tests: REST API, webhooks and the runner side of jobs.
//!
//! [`GithubSim::start`] serves the REST API on `127.0.0.1:0` (optionally under a GHES-style
//! `/api/v3` prefix) from in-memory state, with GitHub's shapes (built from the real fixtures in
//! `fixtures/`), status codes, pagination and rate-limit headers. The handle sets up owners,
//! repositories, credentials and hooks, drives jobs (queue → claim → complete, each step delivering
//! signed `workflow_run` / `workflow_job` webhooks), and injects faults into REST answers and
//! webhook deliveries. Registration refusals (403/404/422 on `generate-jitconfig`, a 5xx after the
//! runner was created) and their sources are in `refusals.rs`.
//!
//! ```ignore
//! let sim = GithubSim::start().await?;
//! sim.add_org("acme", &["alice"], &[]);
//! sim.add_repo("acme", "app", true);
//! let token = sim.classic_token("alice", &["repo", "admin:org"]);
//! sim.add_hook("acme", None, &format!("{controller}/webhook"), Some("s3cret"), "json", &["workflow_job"]);
//! let job = sim.queue_job("acme", "app", &["self-hosted", "linux"]);
//! // … the controller sees `workflow_job` queued, asks for a JIT config, starts a fake runner:
//! let runner = sim.register_jit_runner(&encoded_jit_config)?;
//! sim.claim_job(runner.id)?;            // any matching queued job, not necessarily `job`
//! sim.complete_job(runner.id, "success")?;
//! ```
//!
//! # What it refuses, as GitHub does (and where that is written down)
//!
//! `GITHUB-API.md` and `rest/openapi-subset.json` are in `/work/shared/github-fixtures/`.
//! - `/orgs/{name}/…` for a user account is a 404: users have no organization endpoints
//!   (OpenAPI: every `/orgs/{org}` operation takes an organization; GitHub answers 404 for a
//!   login that is not one). [`api_actions::scope`], `strict::list_groups`, `/orgs/{o}/repos`.
//! - `GET /users/{u}/repos` lists **public** repositories only, whoever asks; a user's private
//!   repositories come from `GET /user/repos` (`affiliation=owner`) with that user's token, or
//!   `GET /installation/repositories` for an App (GitHub docs, "List repositories for a user":
//!   "lists public repositories for the specified user"; "List repositories for the
//!   authenticated user"). `affiliation` (`owner`, `collaborator`, `organization_member`) is
//!   honoured.
//! - `generate-jitconfig`: `name`, `runner_group_id` and 1–100 `labels` are required (OpenAPI
//!   request body, `minItems 1`, `maxItems 100`); an organization's unknown `runner_group_id` is a
//!   404 and a GitHub-hosted group a 403; a repository has only the default group 1 (GitHub docs,
//!   "Managing access to self-hosted runners using groups": groups are an organization and
//!   enterprise feature). The runner carries **exactly** the labels requested: the request's
//!   labels are "the names of the custom labels to add", and a JIT runner gets no implied
//!   `self-hosted`/`Linux`/`X64` (issue 10 §5; `config.sh`'s default labels are a registration-token
//!   thing and stay on [`GithubSim::register_runner`]).
//! - Runner groups (`GET /orgs/{org}/actions/runner-groups`, paginated `runner_groups`): every
//!   organization has `Default` (id 1) with `allows_public_repositories: false`, GitHub's default
//!   for org groups; an organization runner in such a group never takes a public repository's
//!   job. A job that `runs-on: {group: NAME}` has `labels: []` and goes only to that group's
//!   runners ([`GithubSim::queue_group_job`]; GitHub docs "Choosing the runner for a job").
//! - Approvals: a job behind an environment with required reviewers is delivered as
//!   `workflow_job` `queued` with `status: waiting`, then `waiting`, and only on approval a second
//!   `queued` with `status: queued` (fixtures `workflow_job.queued.with-deployment.json`,
//!   `workflow_job.waiting.json`; GITHUB-API.md §4). Runners never take a `waiting` job.
//! - GHES profile ([`GithubSim::start_ghes`]): served under `/api/v3`, `X-GitHub-Enterprise-Version`
//!   on every answer (GITHUB-API.md §2), `GET /rate_limit` is a 404 "Rate limiting is not
//!   enabled." (GHES with rate limiting off, its default; issue 10 §4), and before 3.10
//!   `generate-jitconfig` does not exist (404; JIT runners arrived in GHES 3.10).

mod access;
mod api;
mod api_actions;
mod api_hooks;
mod payloads;
mod recorder;
mod refusals;
mod runner_http;
mod scenario;
mod state;
mod strict;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use recorder::{Received, WebhookRecorder};
pub use refusals::JitRefusal;
pub use scenario::{DEFAULT_LABELS, RunnerError};
pub use state::{
    Access, Counters, DeliveryFault, DeliveryRec, HookRec, JobRec, RestFault, Role, RunnerRec,
    ScopeRec,
};
pub use webhooks::{signature_1, signature_256};

use state::{
    AccountRec, AppRec, InstallationRec, Profile, RepoRec, RunnerGroupRec, State, TokenKind, now,
};
use webhooks::Deliverer;

/// What handlers, the scenario functions and the delivery worker share.
#[derive(Clone)]
pub(crate) struct Shared {
    state: Arc<Mutex<State>>,
    hooks: Deliverer,
}

impl Shared {
    /// The state; a poisoned lock (a panicking test thread) still yields the data.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running simulator. Dropping it stops the server.
pub struct GithubSim {
    shared: Shared,
    addr: SocketAddr,
    api_url: String,
    /// Cancelled on drop; the server shuts down gracefully from it.
    shutdown: CancellationToken,
}

impl Drop for GithubSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A runner registered with the simulator, and the credential its process uses.
#[derive(Debug, Clone)]
pub struct SimRunner {
    pub id: u64,
    pub name: String,
    pub credential: String,
}

impl From<RunnerRec> for SimRunner {
    fn from(r: RunnerRec) -> Self {
        Self {
            id: r.id,
            name: r.name,
            credential: r.credential,
        }
    }
}

impl GithubSim {
    /// Serves the API at the root (`http://127.0.0.1:PORT`, like `https://api.github.com`).
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_prefix("").await
    }

    /// Plays GitHub Enterprise Server `major.minor` under `/api/v3`, rate limiting off.
    pub async fn start_ghes(major: u32, minor: u32) -> std::io::Result<Self> {
        let sim = Self::start_with_prefix("/api/v3").await?;
        sim.lock().profile = Profile::Ghes { major, minor };
        Ok(sim)
    }

    /// Serves the API under `prefix` (e.g. `/api/v3`, like GitHub Enterprise Server).
    pub async fn start_with_prefix(prefix: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, prefix)
    }

    /// Serves on an already-bound listener (the `github-sim` binary binds its `--listen` address).
    /// Installs the ring rustls provider first: the webhook sender is a reqwest client.
    pub fn serve(listener: tokio::net::TcpListener, prefix: &str) -> std::io::Result<Self> {
        shared::tls::install_crypto_provider();
        let addr = listener.local_addr()?;
        let web_url = format!("http://{addr}");
        let api_url = format!("{web_url}{prefix}");
        let state = Arc::new(Mutex::new(State::new(api_url.clone(), web_url)));
        let shared = Shared {
            hooks: Deliverer::start(state.clone()),
            state,
        };
        let api = api::router(shared.clone());
        let app = if prefix.is_empty() {
            api
        } else {
            axum::Router::new().nest(prefix, api)
        }
        .merge(runner_http::routes(shared.clone()));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "github-sim server failed");
            }
        });
        Ok(Self {
            shared,
            addr,
            api_url,
            shutdown,
        })
    }

    /// The REST base URL to give the client (`GITHUB_API_URL`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    fn add_account(&self, login: &str, is_org: bool, members: HashMap<String, bool>) -> u64 {
        let mut st = self.lock();
        let id = st.next_id();
        st.accounts.insert(
            id,
            AccountRec {
                id,
                login: login.to_owned(),
                is_org,
                members,
            },
        );
        id
    }

    /// A user account.
    pub fn add_user(&self, login: &str) -> u64 {
        self.add_account(login, false, HashMap::new())
    }

    /// An organization with `owners` (admins) and `members`; users are created as needed.
    pub fn add_org(&self, login: &str, owners: &[&str], members: &[&str]) -> u64 {
        let mut roles = HashMap::new();
        for (list, owner) in [(owners, true), (members, false)] {
            for user in list {
                if self.lock().account(user).is_none() {
                    self.add_user(user);
                }
                roles.insert(user.to_ascii_lowercase(), owner);
            }
        }
        let id = self.add_account(login, true, roles);
        self.lock().runner_groups.push(strict::default_group(id));
        id
    }

    /// An extra runner group of organization `org`; returns its id (per organization, from 2).
    pub fn add_runner_group(
        &self,
        org: &str,
        name: &str,
        allows_public_repositories: bool,
        hosted: bool,
    ) -> u64 {
        let mut st = self.lock();
        let org_id = st
            .account(org)
            .filter(|a| a.is_org)
            .map(|a| a.id)
            .expect("add_runner_group: unknown organization");
        let id = st
            .runner_groups
            .iter()
            .filter(|g| g.org_id == org_id)
            .map(|g| g.id)
            .max()
            .unwrap_or(1)
            + 1;
        st.runner_groups.push(RunnerGroupRec {
            id,
            org_id,
            name: name.to_owned(),
            visibility: "all",
            allows_public_repositories,
            hosted,
        });
        id
    }

    /// Lets an organization's group (by name) serve public repositories, or not.
    pub fn set_group_allows_public(&self, org: &str, group: &str, allows: bool) {
        let mut st = self.lock();
        let Some(org_id) = st.account(org).map(|a| a.id) else {
            return;
        };
        for g in st
            .runner_groups
            .iter_mut()
            .filter(|g| g.org_id == org_id && g.name.eq_ignore_ascii_case(group))
        {
            g.allows_public_repositories = allows;
        }
    }

    /// A repository of an existing owner. Panics (test set-up error) when the owner is unknown.
    pub fn add_repo(&self, owner: &str, name: &str, private: bool) -> u64 {
        let mut st = self.lock();
        let owner_id = st
            .account(owner)
            .map(|a| a.id)
            .expect("add_repo: unknown owner");
        let id = st.next_id();
        st.repos.insert(
            id,
            RepoRec {
                id,
                owner_id,
                name: name.to_owned(),
                private,
                collaborators: HashMap::new(),
                pushed_at: None,
            },
        );
        id
    }

    /// Gives `user` a role on a repository.
    pub fn add_collaborator(&self, owner: &str, repo: &str, user: &str, role: Role) {
        if self.lock().account(user).is_none() {
            self.add_user(user);
        }
        let mut st = self.lock();
        let id = st
            .repo(owner, repo)
            .map(|r| r.id)
            .expect("add_collaborator: unknown repository");
        if let Some(r) = st.repos.get_mut(&id) {
            r.collaborators.insert(user.to_ascii_lowercase(), role);
        }
    }

    fn add_token(&self, prefix: &str, kind: TokenKind) -> String {
        let token = format!("{prefix}{}", hex::encode(rand::random::<[u8; 18]>()));
        self.lock().tokens.insert(token.clone(), kind);
        token
    }

    /// A classic PAT (`ghp_…`) of `user` with `scopes`.
    pub fn classic_token(&self, user: &str, scopes: &[&str]) -> String {
        let kind = TokenKind::Classic {
            user: user.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.add_token("ghp_", kind)
    }

    /// A classic PAT of `user` with a value chosen by the caller (the `github-sim` binary's
    /// `--token`, so a `.env` can name it before the simulator starts). Refused unless it has the
    /// shape of a classic PAT (`ghp_` and 36 letters or digits, as GitHub issues them), the
    /// stricter choice.
    pub fn classic_token_with_value(
        &self,
        token: &str,
        user: &str,
        scopes: &[&str],
    ) -> Result<(), String> {
        let body = token.strip_prefix("ghp_").unwrap_or_default();
        if body.len() != 36 || !body.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{token:?} is not a classic PAT (ghp_ followed by 36 letters or digits)"
            ));
        }
        let kind = TokenKind::Classic {
            user: user.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.lock().tokens.insert(token.to_owned(), kind);
        Ok(())
    }

    /// A fine-grained PAT (`github_pat_…`) of `user` with `permissions`, on `repos` (`None` = all).
    pub fn fine_grained_token(
        &self,
        user: &str,
        permissions: &[(&str, Access)],
        repos: Option<&[&str]>,
    ) -> String {
        let kind = TokenKind::FineGrained {
            user: user.to_owned(),
            permissions: permissions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            repos: repos.map(|r| r.iter().map(|s| s.to_ascii_lowercase()).collect()),
        };
        self.add_token("github_pat_", kind)
    }

    /// Registers a GitHub App by id with the PKCS#1 DER of its public key.
    pub fn add_app(&self, app_id: u64, public_key_der: Vec<u8>) {
        let app = AppRec {
            id: app_id,
            client_id: format!("Iv1.{app_id:016x}"),
            slug: format!("app-{app_id}"),
            public_key_der,
        };
        self.lock().apps.insert(app_id, app);
    }

    /// Installs an App on `owner` with `permissions`, on `repos` (`None` = all). Returns its id.
    pub fn install_app(
        &self,
        app_id: u64,
        owner: &str,
        permissions: &[(&str, Access)],
        repos: Option<&[&str]>,
    ) -> u64 {
        let mut st = self.lock();
        let account_id = st
            .account(owner)
            .map(|a| a.id)
            .expect("install_app: unknown owner");
        let id = st.next_id();
        let inst = InstallationRec {
            id,
            app_id,
            account_id,
            permissions: permissions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            repos: repos.map(|r| r.iter().map(|s| s.to_ascii_lowercase()).collect()),
        };
        st.installations.insert(id, inst);
        id
    }

    /// How long new installation tokens last (GitHub: one hour).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.lock().installation_token_ttl = ttl;
    }

    /// Revokes a token: its next use gets a 401.
    pub fn revoke_token(&self, token: &str) {
        self.lock().tokens.remove(token);
    }

    /// Every installation token minted so far, newest last.
    pub fn installation_tokens(&self) -> Vec<String> {
        let st = self.lock();
        let mut tokens: Vec<(std::time::SystemTime, String)> = st
            .tokens
            .iter()
            .filter_map(|(t, k)| match k {
                TokenKind::Installation { expires_at, .. } => Some((*expires_at, t.clone())),
                _ => None,
            })
            .collect();
        tokens.sort();
        tokens.into_iter().map(|(_, t)| t).collect()
    }

    /// The primary limit of every credential from now on (GitHub: 5000/h for a PAT).
    pub fn set_rate_limit(&self, limit: u64) {
        let mut st = self.lock();
        st.default_rate_limit = limit;
        st.buckets.values_mut().for_each(|b| b.limit = limit);
    }

    /// Sets what is left of every credential's current window (as if other clients spent it).
    pub fn set_quota_remaining(&self, remaining: u64) {
        let mut st = self.lock();
        st.buckets
            .values_mut()
            .for_each(|b| b.used = b.limit.saturating_sub(remaining));
    }

    /// Turns `ETag`s and `304`s off (GitHub always has them; for a baseline measurement only).
    pub fn set_conditional_requests(&self, on: bool) {
        self.lock().conditional_requests = on;
    }

    /// Adds a hook directly (no ping), on a repository or, with `repo = None`, an organization.
    pub fn add_hook(
        &self,
        owner: &str,
        repo: Option<&str>,
        url: &str,
        secret: Option<&str>,
        content_type: &str,
        events: &[&str],
    ) -> u64 {
        let mut st = self.lock();
        let scope = match repo {
            Some(name) => ScopeRec::Repo(
                st.repo(owner, name)
                    .map(|r| r.id)
                    .expect("add_hook: unknown repository"),
            ),
            None => ScopeRec::Org(
                st.account(owner)
                    .map(|a| a.id)
                    .expect("add_hook: unknown owner"),
            ),
        };
        let id = st.next_id();
        let created = now();
        st.hooks.insert(
            id,
            HookRec {
                id,
                scope,
                active: true,
                events: events.iter().map(|e| (*e).to_owned()).collect(),
                url: url.to_owned(),
                content_type: content_type.to_owned(),
                secret: secret.map(str::to_owned),
                insecure_ssl: "0".into(),
                created_at: created.clone(),
                updated_at: created,
                last_response: None,
            },
        );
        id
    }

    /// Queues a one-job run whose job `runs-on` `labels`; returns (run id, job id).
    pub fn queue_job(&self, owner: &str, repo: &str, labels: &[&str]) -> (u64, u64) {
        let (run, jobs) = self.queue_run(owner, repo, "CI", &[("build", labels)]);
        (run, jobs[0])
    }

    /// Queues a run of `workflow` with `jobs` (name, labels); returns (run id, job ids).
    pub fn queue_run(
        &self,
        owner: &str,
        repo: &str,
        workflow: &str,
        jobs: &[(&str, &[&str])],
    ) -> (u64, Vec<u64>) {
        let repo_id = self
            .lock()
            .repo(owner, repo)
            .map(|r| r.id)
            .expect("queue_run: unknown repository");
        let jobs: Vec<(String, Vec<String>)> = jobs
            .iter()
            .map(|(n, l)| ((*n).to_owned(), l.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        scenario::queue_run(&self.shared, repo_id, workflow, &jobs)
    }

    /// Queues a one-job run behind an environment with required reviewers: `workflow_job`
    /// `queued` (status `waiting`) then `waiting`; nothing takes it until [`Self::approve_job`].
    pub fn queue_job_awaiting_approval(
        &self,
        owner: &str,
        repo: &str,
        labels: &[&str],
    ) -> (u64, u64) {
        let repo_id = self
            .lock()
            .repo(owner, repo)
            .map(|r| r.id)
            .expect("queue_job_awaiting_approval: unknown repository");
        let labels: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        scenario::queue_awaiting_approval(&self.shared, repo_id, &labels)
    }

    /// Approves a waiting job: it becomes `queued` and a second `queued` delivery goes out.
    pub fn approve_job(&self, job_id: u64) -> bool {
        scenario::approve(&self.shared, job_id)
    }

    /// Queues a one-job run that `runs-on: {group: GROUP}`: its `labels` are `[]`.
    pub fn queue_group_job(&self, owner: &str, repo: &str, group: &str) -> (u64, u64) {
        let (run, job) = self.queue_job_with(owner, repo, &[], Some(group));
        (run, job)
    }

    fn queue_job_with(
        &self,
        owner: &str,
        repo: &str,
        labels: &[&str],
        group: Option<&str>,
    ) -> (u64, u64) {
        let repo_id = self
            .lock()
            .repo(owner, repo)
            .map(|r| r.id)
            .expect("queue_group_job: unknown repository");
        let labels: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        scenario::queue_one(&self.shared, repo_id, &labels, group, "queued")
    }

    /// How long the runner that claims job `job_id` works on it (default: no time at all).
    pub fn set_job_duration(&self, job_id: u64, duration: Duration) {
        if let Some(job) = self.lock().jobs.get_mut(&job_id) {
            job.duration_ms = duration.as_millis() as u64;
        }
    }

    /// Starts the runner of a JIT config (what `run.sh --jitconfig` does): it comes online.
    pub fn register_jit_runner(&self, encoded_jit_config: &str) -> Result<SimRunner, RunnerError> {
        scenario::register_jit(&self.shared, encoded_jit_config).map(Into::into)
    }

    /// `config.sh --token`: registers a runner with a registration token.
    pub fn register_runner(
        &self,
        token: &str,
        name: &str,
        labels: &[&str],
        ephemeral: bool,
    ) -> Result<SimRunner, RunnerError> {
        self.register_runner_in_group(token, name, labels, ephemeral, None)
    }

    /// `config.sh --token … --runnergroup GROUP`: as [`Self::register_runner`], in a group by name.
    pub fn register_runner_in_group(
        &self,
        token: &str,
        name: &str,
        labels: &[&str],
        ephemeral: bool,
        group: Option<&str>,
    ) -> Result<SimRunner, RunnerError> {
        let labels: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        scenario::register_with_token(&self.shared, token, name, &labels, ephemeral, group)
            .map(Into::into)
    }

    /// The runner takes any queued job it matches; returns the job id, if there was one.
    pub fn claim_job(&self, runner_id: u64) -> Result<Option<u64>, RunnerError> {
        scenario::claim(&self.shared, runner_id, None).map(|j| j.map(|j| j.id))
    }

    /// The runner completes its job with `conclusion`; returns the job id.
    pub fn complete_job(&self, runner_id: u64, conclusion: &str) -> Result<u64, RunnerError> {
        scenario::complete(&self.shared, runner_id, None, conclusion).map(|j| j.id)
    }

    /// Cancels a job no runner took yet (its run cancelled); `workflow_job` completed is sent.
    pub fn cancel_queued_job(&self, job_id: u64) -> Result<(), RunnerError> {
        scenario::cancel_queued(&self.shared, job_id).map(|_| ())
    }

    /// The next `count` REST requests whose path contains `path_contains` get `fault`.
    pub fn fail_rest(&self, path_contains: &str, count: usize, fault: RestFault) {
        self.lock()
            .faults
            .rest
            .push_back((path_contains.to_owned(), count, fault));
    }

    /// From now on `generate-jitconfig` for `owner` is refused as `how` says (`refusals.rs`).
    pub fn refuse_jit(&self, owner: &str, how: JitRefusal) {
        self.lock().refusals.refuse_jit(owner, Some(how));
    }

    /// `generate-jitconfig` for `owner` works again.
    pub fn clear_jit_refusal(&self, owner: &str) {
        self.lock().refusals.refuse_jit(owner, None);
    }

    /// The next `count` JIT configs are created, then answered with a `status` 5xx.
    pub fn fail_jit_after_create(&self, count: usize, status: u16) {
        self.lock().refusals.fail_after_create(count, status);
    }

    /// From now on every REST answer waits `latency` (a network round trip), so that requests
    /// sent at once are in flight together.
    pub fn set_rest_latency(&self, latency: Duration) {
        self.lock().faults.rest_latency = latency;
    }

    /// The most REST requests to one `METHOD /path` containing `route_contains` that were in
    /// flight at once.
    pub fn max_requests_in_flight(&self, route_contains: &str) -> usize {
        self.lock()
            .counters
            .route_max_in_flight
            .iter()
            .filter(|(route, _)| route.contains(route_contains))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// Requests refused because their token had more than 100 in flight.
    pub fn concurrency_refusals(&self) -> u64 {
        self.lock().counters.concurrency_refusals
    }

    /// How many `generate-jitconfig` requests arrived so far (refused ones included).
    pub fn jit_requests(&self) -> u64 {
        self.lock().refusals.jit_requests
    }

    /// Registers an offline JIT runner named `name` in `owner`'s organization (or, with `repo`,
    /// a repository), as one left behind by a runner that never started. Returns its id.
    pub fn add_offline_runner(&self, owner: &str, repo: Option<&str>, name: &str) -> u64 {
        let mut st = self.lock();
        let scope = match repo {
            Some(r) => ScopeRec::Repo(st.repo(owner, r).map(|r| r.id).expect("unknown repository")),
            None => ScopeRec::Org(st.account(owner).map(|a| a.id).expect("unknown owner")),
        };
        let id = st.next_id();
        let runner = RunnerRec {
            id,
            name: name.to_owned(),
            scope,
            labels: scenario::runner_labels(&["self-hosted".to_owned()], true),
            online: false,
            ephemeral: true,
            group_id: 1,
            connected: false,
            job: None,
            credential: webhooks::guid(),
        };
        st.runners.insert(id, runner);
        id
    }

    /// The next delivery of `event` (and `action`, if given) suffers `fault`.
    pub fn fault_delivery(&self, event: &str, action: Option<&str>, fault: DeliveryFault) {
        self.lock().faults.deliveries.push_back((
            event.to_owned(),
            action.map(str::to_owned),
            fault,
        ));
    }

    /// Every delivery attempt so far, oldest first.
    pub fn deliveries(&self) -> Vec<DeliveryRec> {
        self.lock().deliveries.clone()
    }

    /// Waits until no delivery is queued or in flight; `false` on time-out.
    pub async fn deliveries_settled(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.shared.hooks.pending() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A snapshot of the hooks, oldest first, with what GitHub stores but never shows (the secret).
    pub fn hooks(&self) -> Vec<HookRec> {
        self.lock().hooks.values().cloned().collect()
    }

    /// A snapshot of the runners.
    pub fn runners(&self) -> Vec<RunnerRec> {
        self.lock().runners.values().cloned().collect()
    }

    /// A snapshot of a job.
    pub fn job(&self, id: u64) -> Option<JobRec> {
        self.lock().jobs.get(&id).cloned()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }
}
