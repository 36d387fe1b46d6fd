//! The GitHub objects the controller reads and writes, as GitHub's REST API shapes them.
//!
//! Only the fields the autoscaler uses are typed; everything that GitHub marks optional (or that old
//! payloads lack, see GITHUB-API.md §2) is an `Option`, so a missing key never fails a whole list.
//! Secrets (tokens, JIT configs, hook secrets) are wrapped in [`Secret`], whose `Debug` is redacted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that must never reach a log line or an error message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A repository, named the way GitHub does (`owner/name`). Names compare case-insensitively.
#[derive(Debug, Clone, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl RepoRef {
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            name: name.into(),
        }
    }
}

impl PartialEq for RepoRef {
    fn eq(&self, other: &Self) -> bool {
        self.owner.eq_ignore_ascii_case(&other.owner) && self.name.eq_ignore_ascii_case(&other.name)
    }
}

impl std::hash::Hash for RepoRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.owner.to_ascii_lowercase().hash(state);
        self.name.to_ascii_lowercase().hash(state);
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Where runners, registration tokens and webhooks live: one repository or a whole organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Repo(RepoRef),
    Org(String),
}

impl Scope {
    /// The owner whose credentials act on this scope.
    pub fn owner(&self) -> &str {
        match self {
            Scope::Repo(repo) => &repo.owner,
            Scope::Org(org) => org,
        }
    }

    /// The path segments of this scope's REST prefix (`repos/{o}/{r}` or `orgs/{org}`).
    pub(crate) fn segments(&self) -> Vec<&str> {
        match self {
            Scope::Repo(repo) => vec!["repos", &repo.owner, &repo.name],
            Scope::Org(org) => vec!["orgs", org],
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repo(repo) => write!(f, "repository {repo}"),
            Scope::Org(org) => write!(f, "organization {org}"),
        }
    }
}

/// A registration or remove token (`authentication-token`): valid for one hour.
#[derive(Debug, Clone, Deserialize)]
pub struct RunnerToken {
    pub token: Secret,
    pub expires_at: String,
}

/// The body of `POST …/actions/runners/generate-jitconfig`.
#[derive(Debug, Clone, Serialize)]
pub struct JitConfigRequest {
    pub name: String,
    pub runner_group_id: u64,
    /// 1 to 100 custom labels; GitHub adds the default read-only ones.
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_folder: Option<String>,
}

/// A just-in-time runner: the runner GitHub created and the config to start it with.
#[derive(Debug, Clone, Deserialize)]
pub struct JitConfig {
    pub runner: Runner,
    pub encoded_jit_config: Secret,
}

/// A self-hosted runner (`schema:runner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    pub os: String,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    #[serde(default)]
    pub ephemeral: Option<bool>,
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    #[serde(default)]
    pub version: Option<String>,
    pub labels: Vec<RunnerLabel>,
}

impl Runner {
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|label| label.name.as_str())
    }
}

/// A runner label: `read-only` (default labels) or `custom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerLabel {
    #[serde(default)]
    pub id: Option<u64>,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// A workflow run (`schema:workflow-run`), the fields reconciliation reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub run_number: Option<u64>,
    #[serde(default)]
    pub run_attempt: Option<u64>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub head_sha: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    /// Moves as the run's jobs change state.
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

/// The `status` filter of `GET /repos/{o}/{r}/actions/runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    InProgress,
    Completed,
    Requested,
    Waiting,
    Pending,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Completed => "completed",
            RunStatus::Requested => "requested",
            RunStatus::Waiting => "waiting",
            RunStatus::Pending => "pending",
        }
    }
}

/// A job of a workflow run (`schema:job`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    #[serde(default)]
    pub run_attempt: Option<u64>,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested` or `pending`.
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub workflow_name: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_id: Option<u64>,
    #[serde(default)]
    pub runner_name: Option<String>,
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    #[serde(default)]
    pub runner_group_name: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

/// A user or an organization (`simple-user`, `GET /users/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub login: String,
    pub id: u64,
    /// `User`, `Organization` or `Bot`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Account {
    pub fn is_organization(&self) -> bool {
        self.kind == "Organization"
    }
}

/// A repository (`full-repository` / `repository`), with the caller's `permissions` when GitHub sends them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    pub id: u64,
    pub name: String,
    pub full_name: String,
    pub owner: Account,
    pub private: bool,
    #[serde(default)]
    pub archived: Option<bool>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub permissions: Option<RepoPermissions>,
    /// The last push (RFC 3339); `null` for an empty repository.
    #[serde(default)]
    pub pushed_at: Option<String>,
}

/// What the authenticated caller may do on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RepoPermissions {
    pub admin: bool,
    #[serde(default)]
    pub maintain: Option<bool>,
    pub push: bool,
    #[serde(default)]
    pub triage: Option<bool>,
    pub pull: bool,
}

/// Which repositories to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSource {
    /// `GET /user/repos`: what the token's user can see.
    AuthenticatedUser,
    /// `GET /user/repos?affiliation=owner`: the token's user's own repositories, private ones
    /// included.
    AuthenticatedUserOwned,
    /// `GET /orgs/{owner}/repos`.
    Org,
    /// `GET /users/{owner}/repos`: **public** repositories only.
    User,
    /// `GET /installation/repositories`: what a GitHub App installation can see.
    Installation,
}

/// A repository or organization webhook (`schema:hook` / `org-hook`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Hook {
    pub id: u64,
    /// `Repository` or `Organization`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub name: String,
    pub active: bool,
    pub events: Vec<String>,
    pub config: HookConfig,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub last_response: Option<HookLastResponse>,
}

/// A hook's configuration as GitHub returns it (the secret reads back as `********`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HookConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub insecure_ssl: Option<serde_json::Value>,
    /// `Some("********")` when a secret is set; never the secret itself.
    #[serde(default)]
    pub secret: Option<String>,
}

/// The outcome of a hook's last delivery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HookLastResponse {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What to create a hook with, or change on it (`PATCH` sends the fields that are `Some`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HookParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<HookConfigParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

impl HookParams {
    /// A `web` hook posting JSON to `url`, signed with `secret`, for `events`.
    pub fn json(url: &str, secret: Option<Secret>, events: &[&str]) -> Self {
        Self {
            name: Some("web".into()),
            config: Some(HookConfigParams {
                url: url.to_owned(),
                content_type: Some("json".into()),
                secret,
                insecure_ssl: Some("0".into()),
            }),
            events: Some(events.iter().map(|e| (*e).to_owned()).collect()),
            active: Some(true),
        }
    }
}

/// A hook's config on the way in: the secret is sent, never echoed.
#[derive(Debug, Clone, Serialize)]
pub struct HookConfigParams {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_ssl: Option<String>,
}

/// One delivery attempt of a hook (`hook-delivery-item`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    /// The `X-GitHub-Delivery` GUID; the same on every redelivery.
    pub guid: String,
    pub delivered_at: String,
    pub redelivery: bool,
    #[serde(default)]
    pub duration: Option<f64>,
    /// `OK` when the receiver answered 2xx.
    pub status: String,
    pub status_code: i64,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub installation_id: Option<u64>,
    #[serde(default)]
    pub repository_id: Option<u64>,
}

impl HookDelivery {
    /// GitHub's own split for `status=success|failure`: 2xx/3xx versus everything else.
    pub fn succeeded(&self) -> bool {
        (200..400).contains(&self.status_code)
    }
}

/// `GET /rate_limit`: one bucket per resource (`core`, `search`, `actions_runner_registration`, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RateLimitStatus {
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, RateBucket>,
    /// GitHub Enterprise Server with rate limiting off answers `GET /rate_limit` with 404 "Rate
    /// limiting is not enabled.": no buckets, nothing to wait for. Not a GitHub field.
    #[serde(skip)]
    pub disabled: bool,
}

impl RateLimitStatus {
    /// What a server without rate limiting (GHES, by default) amounts to.
    pub fn disabled() -> Self {
        Self {
            resources: Default::default(),
            disabled: true,
        }
    }
}

/// An organization's runner group (`runner-groups-org`, `GET /orgs/{org}/actions/runner-groups`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    /// `all`, `selected` or `private`.
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub default: bool,
    /// Whether public repositories may use the group's runners (GitHub's default: no).
    #[serde(default)]
    pub allows_public_repositories: bool,
    /// Set on groups of GitHub-hosted (larger) runners; self-hosted runners cannot join them.
    #[serde(default)]
    pub hosted_runners_url: Option<String>,
}

impl RunnerGroup {
    pub fn is_hosted(&self) -> bool {
        self.hosted_runners_url.is_some()
    }
}

/// One rate-limit bucket; `reset` is in UTC epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RateBucket {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    pub reset: u64,
}

/// `GET /user`, plus the classic scopes from `X-OAuth-Scopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub account: Account,
    /// `Some` for classic PATs and OAuth tokens; `None` when the header is missing or empty
    /// (fine-grained PATs and App tokens have no scopes).
    pub scopes: Option<Vec<String>>,
}
