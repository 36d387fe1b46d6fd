//! The simulator's in-memory GitHub: accounts, repositories, credentials, runners, runs, jobs,
//! hooks and deliveries, plus the fault plan.
//!
//! One `std::sync::Mutex<State>` guards it all (held by REST handlers, the scenario API and the
//! delivery worker for a few map operations, never across an `.await`). Ids come from one counter
//! so an id of one kind is never valid as another.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A user or an organization.
#[derive(Debug, Clone)]
pub struct AccountRec {
    pub id: u64,
    pub login: String,
    pub is_org: bool,
    /// Organization members (lower-cased login) and whether they own it.
    pub members: HashMap<String, bool>,
}

/// A user's role on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

#[derive(Debug, Clone)]
pub struct RepoRec {
    pub id: u64,
    pub owner_id: u64,
    pub name: String,
    pub private: bool,
    /// Collaborators (lower-cased login) and their role.
    pub collaborators: HashMap<String, Role>,
    /// The last push (RFC 3339; `None`: never pushed, which GitHub shows as `null`). Queuing a
    /// run sets it: runs come from pushes here, and the reconciler polls by it.
    pub pushed_at: Option<String>,
}

/// Read or write access of a fine-grained token or an App installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// What a bearer token is.
#[derive(Debug, Clone)]
pub enum TokenKind {
    /// `ghp_…`: acts as `user` within `scopes`.
    Classic { user: String, scopes: Vec<String> },
    /// `github_pat_…`: acts as `user` with `permissions` on `repos` (lower-cased names; `None` = all).
    FineGrained {
        user: String,
        permissions: HashMap<String, Access>,
        repos: Option<Vec<String>>,
    },
    /// `ghs_…`: an App installation token.
    Installation {
        installation_id: u64,
        expires_at: SystemTime,
    },
}

#[derive(Debug, Clone)]
pub struct AppRec {
    pub id: u64,
    pub client_id: String,
    pub slug: String,
    /// PKCS#1 DER of the App's public key.
    pub public_key_der: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct InstallationRec {
    pub id: u64,
    pub app_id: u64,
    pub account_id: u64,
    pub permissions: HashMap<String, Access>,
    /// Lower-cased repository names; `None` = all repositories.
    pub repos: Option<Vec<String>>,
}

/// Where a runner or a hook lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRec {
    Repo(u64),
    Org(u64),
}

#[derive(Debug, Clone)]
pub struct RunnerRec {
    pub id: u64,
    pub name: String,
    pub scope: ScopeRec,
    /// (name, `read-only` | `custom`).
    pub labels: Vec<(String, &'static str)>,
    pub online: bool,
    pub ephemeral: bool,
    pub group_id: u64,
    /// Whether its process ever connected (GitHub sets `version` then).
    pub connected: bool,
    pub job: Option<u64>,
    /// What the fake runner process authenticates with (from its JIT config or registration).
    pub credential: String,
}

#[derive(Debug, Clone)]
pub struct RunRec {
    pub id: u64,
    pub repo_id: u64,
    pub workflow_id: u64,
    pub name: String,
    pub run_number: u64,
    pub status: &'static str,
    pub conclusion: Option<&'static str>,
    pub created_at: String,
    pub updated_at: String,
    pub started: bool,
    pub job_ids: Vec<u64>,
    pub head_sha: String,
}

#[derive(Debug, Clone)]
pub struct JobRec {
    pub id: u64,
    pub run_id: u64,
    pub repo_id: u64,
    pub name: String,
    pub labels: Vec<String>,
    pub status: &'static str,
    pub conclusion: Option<&'static str>,
    pub runner: Option<(u64, String)>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// How long a fake runner process works on the job once claimed (not a GitHub field: the
    /// runner protocol's claim answer carries it as `sim_duration_ms`).
    pub duration_ms: u64,
    /// `runs-on: { group: NAME }` without labels: only runners of that organization group take it.
    pub group: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HookRec {
    pub id: u64,
    pub scope: ScopeRec,
    pub active: bool,
    pub events: Vec<String>,
    pub url: String,
    pub content_type: String,
    pub secret: Option<String>,
    pub insecure_ssl: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_response: Option<(i64, String)>,
}

impl HookRec {
    pub fn wants(&self, event: &str) -> bool {
        self.active && self.events.iter().any(|e| e == "*" || e == event)
    }
}

/// One delivery attempt, as the deliveries API reports it.
#[derive(Debug, Clone)]
pub struct DeliveryRec {
    pub id: u64,
    pub hook_id: u64,
    pub guid: String,
    pub delivered_at: String,
    pub redelivery: bool,
    pub duration: f64,
    pub status: String,
    pub status_code: i64,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<u64>,
    pub repository_id: Option<u64>,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub payload: Value,
    pub response_headers: Vec<(String, String)>,
    pub response_body: String,
}

#[derive(Debug, Clone)]
pub struct RegTokenRec {
    pub scope: ScopeRec,
    pub expires_at: SystemTime,
    pub remove: bool,
}

/// A failure the REST API answers with instead of doing the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestFault {
    /// A 5xx with this status.
    ServerError(u16),
    /// The primary limit: 403 with `x-ratelimit-remaining: 0`, lifting after the duration.
    PrimaryRateLimit { reset_in: Duration },
    /// A secondary limit: 403 "You have exceeded a secondary rate limit", with or without `retry-after`.
    SecondaryRateLimit { retry_after: Option<Duration> },
}

/// A failure of webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFault {
    /// Not sent; recorded as a failed delivery (as when the receiver is unreachable), so it can
    /// be found in the deliveries API and redelivered.
    Drop,
    /// Sent after the given delay, while later deliveries go ahead (so it arrives out of order).
    Delay(Duration),
    /// Sent twice with the same GUID.
    Duplicate,
    /// Held back and sent right after the next delivery.
    Reorder,
}

/// Faults waiting for a matching request or delivery.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Every REST request's answer waits this long (a network's round trip), so requests a
    /// client sends at once overlap as they would against github.com.
    pub rest_latency: Duration,
    /// (path substring, remaining count, fault).
    pub rest: VecDeque<(String, usize, RestFault)>,
    /// (event, optional action, fault), each used once.
    pub deliveries: VecDeque<(String, Option<String>, DeliveryFault)>,
}

impl FaultPlan {
    pub fn take_rest(&mut self, path: &str) -> Option<RestFault> {
        let index = self
            .rest
            .iter()
            .position(|(p, n, _)| *n > 0 && path.contains(p.as_str()))?;
        let entry = &mut self.rest[index];
        entry.1 -= 1;
        let fault = entry.2;
        if entry.1 == 0 {
            self.rest.remove(index);
        }
        Some(fault)
    }

    pub fn take_delivery(&mut self, event: &str, action: Option<&str>) -> Option<DeliveryFault> {
        let index = self
            .deliveries
            .iter()
            .position(|(e, a, _)| e == event && (a.is_none() || a.as_deref() == action))?;
        self.deliveries.remove(index).map(|(_, _, f)| f)
    }
}

/// A primary rate-limit bucket per credential.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub limit: u64,
    pub used: u64,
    pub reset: u64,
}

/// Counters tests read.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Every REST request, 304s included.
    pub rest_requests: u64,
    /// REST requests being answered now, by token (see `api::gate`'s concurrency rule).
    pub in_flight: HashMap<String, usize>,
    /// REST requests being answered now, and the most at once so far, by `METHOD /path`.
    pub route_in_flight: HashMap<String, usize>,
    pub route_max_in_flight: HashMap<String, usize>,
    /// Requests refused because their token had too many in flight.
    pub concurrency_refusals: u64,
    /// Conditional requests answered `304 Not Modified`.
    pub not_modified: u64,
    /// Requests by `METHOD /path` with numbers as `{n}`, for benchmarks.
    pub by_route: BTreeMap<String, u64>,
    pub installation_tokens: u64,
}

/// The whole simulated GitHub.
#[derive(Debug)]
pub struct State {
    /// API base without a trailing slash, e.g. `http://127.0.0.1:4000/api/v3`.
    pub api_url: String,
    /// Web base (`html_url`s), e.g. `http://127.0.0.1:4000`.
    pub web_url: String,
    next_id: u64,
    pub accounts: BTreeMap<u64, AccountRec>,
    pub repos: BTreeMap<u64, RepoRec>,
    pub tokens: HashMap<String, TokenKind>,
    pub apps: BTreeMap<u64, AppRec>,
    pub installations: BTreeMap<u64, InstallationRec>,
    pub runners: BTreeMap<u64, RunnerRec>,
    pub runs: BTreeMap<u64, RunRec>,
    pub jobs: BTreeMap<u64, JobRec>,
    pub hooks: BTreeMap<u64, HookRec>,
    pub deliveries: Vec<DeliveryRec>,
    pub reg_tokens: HashMap<String, RegTokenRec>,
    pub faults: FaultPlan,
    pub buckets: HashMap<String, Bucket>,
    pub default_rate_limit: u64,
    /// Whether `GET`s carry an `ETag` and honour `If-None-Match` (GitHub always does; off only
    /// to measure a baseline).
    pub conditional_requests: bool,
    pub installation_token_ttl: Duration,
    pub counters: Counters,
    /// Registration refusals and after-create faults (`refusals.rs`).
    pub refusals: super::refusals::Refusals,
    /// Organization runner groups (see [`super::strict`]).
    pub runner_groups: Vec<RunnerGroupRec>,
    /// github.com or a GitHub Enterprise Server version (see [`super::strict`]).
    pub profile: Profile,
}

/// An organization's runner group (`GET /orgs/{org}/actions/runner-groups`).
#[derive(Debug, Clone)]
pub struct RunnerGroupRec {
    /// Group ids are per organization: every organization's `Default` group is id 1.
    pub id: u64,
    pub org_id: u64,
    pub name: String,
    /// `all`, `selected` or `private`.
    pub visibility: &'static str,
    pub allows_public_repositories: bool,
    /// A GitHub-hosted (larger runners) group: self-hosted runners cannot join it.
    pub hosted: bool,
}

/// Which GitHub the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Dotcom,
    /// GitHub Enterprise Server `major.minor` with rate limiting off (GHES's default).
    Ghes { major: u32, minor: u32 },
}

impl State {
    pub fn new(api_url: String, web_url: String) -> Self {
        Self {
            api_url,
            web_url,
            next_id: 1000,
            accounts: BTreeMap::new(),
            repos: BTreeMap::new(),
            tokens: HashMap::new(),
            apps: BTreeMap::new(),
            installations: BTreeMap::new(),
            runners: BTreeMap::new(),
            runs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            hooks: BTreeMap::new(),
            deliveries: Vec::new(),
            reg_tokens: HashMap::new(),
            faults: FaultPlan::default(),
            buckets: HashMap::new(),
            default_rate_limit: 5000,
            conditional_requests: true,
            installation_token_ttl: Duration::from_secs(3600),
            counters: Counters::default(),
            refusals: Default::default(),
            runner_groups: Vec::new(),
            profile: Profile::Dotcom,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn account(&self, login: &str) -> Option<&AccountRec> {
        self.accounts
            .values()
            .find(|a| a.login.eq_ignore_ascii_case(login))
    }

    pub fn repo(&self, owner: &str, name: &str) -> Option<&RepoRec> {
        let owner = self.account(owner)?;
        self.repos
            .values()
            .find(|r| r.owner_id == owner.id && r.name.eq_ignore_ascii_case(name))
    }

    /// `owner/name` of a repository.
    pub fn full_name(&self, repo: &RepoRec) -> String {
        let owner = self
            .accounts
            .get(&repo.owner_id)
            .map(|a| a.login.as_str())
            .unwrap_or("");
        format!("{owner}/{}", repo.name)
    }

    /// The organization id of a repository, when its owner is an organization.
    pub fn repo_org(&self, repo_id: u64) -> Option<u64> {
        let repo = self.repos.get(&repo_id)?;
        self.accounts
            .get(&repo.owner_id)
            .filter(|a| a.is_org)
            .map(|a| a.id)
    }

    /// The hooks that receive events of a repository: its own and its organization's.
    pub fn hooks_for_repo(&self, repo_id: u64, event: &str) -> Vec<HookRec> {
        let org = self.repo_org(repo_id);
        self.hooks
            .values()
            .filter(|h| match h.scope {
                ScopeRec::Repo(id) => id == repo_id,
                ScopeRec::Org(id) => Some(id) == org,
            })
            .filter(|h| h.wants(event))
            .cloned()
            .collect()
    }

    /// Whether a runner in `scope` may run jobs of `repo_id`.
    pub fn scope_covers(&self, scope: ScopeRec, repo_id: u64) -> bool {
        match scope {
            ScopeRec::Repo(id) => id == repo_id,
            ScopeRec::Org(id) => self.repo_org(repo_id) == Some(id),
        }
    }
}

/// GitHub's timestamp format (`2020-01-22T19:33:08Z`).
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

pub fn now() -> String {
    timestamp(SystemTime::now())
}

/// Epoch seconds.
pub fn epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
