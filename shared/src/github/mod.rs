//! Everything the controller says to GitHub goes through here.
//!
//! - [`GithubApi`]: the small surface the controller consumes, so the scheduler and the webhook
//!   reconciler can be tested against a fake or the simulator in `tests/`.
//! - [`GithubClient`]: the one real implementation, over reqwest + rustls (ring). Credentials per
//!   owner ([`Credentials`]: PAT or GitHub App), pagination, rate-limit waits and typed
//!   [`GithubError`]s live in its submodules.
//! - [`OwnerAuth`], [`parse_api_url`]: the parsed forms of the controller's GitHub settings.
//!
//! Facts and citations for every behaviour: `shared/github-fixtures/GITHUB-API.md` in the work tree.

mod auth;
mod budget;
mod client;
mod config;
mod error;
mod etag;
mod http;
mod ops;
mod ratelimit;
mod types;

pub use auth::{AppCredentials, AppKey, Credentials, KeyError};
pub use budget::{BucketView, Budget, BudgetPolicy, CallKind, Deferral, Outcome, Window, admit};
pub use client::{BuildError, ClientBuilder, GithubClient};
pub use config::{DEFAULT_API_URL, OwnerAuth, parse_api_url};
pub use error::{GithubError, RateLimitKind};
pub use http::RetryPolicy;
pub use ratelimit::Quota;
pub use types::*;

/// The GitHub operations the controller needs. Every list is complete (all pages followed).
///
/// `owner` arguments pick the credentials; names compare case-insensitively.
#[async_trait::async_trait]
pub trait GithubApi: Send + Sync {
    // Runners.
    /// `POST …/actions/runners/registration-token` (valid one hour).
    async fn registration_token(&self, scope: &Scope) -> Result<RunnerToken, GithubError>;
    /// `POST …/actions/runners/remove-token`.
    async fn remove_token(&self, scope: &Scope) -> Result<RunnerToken, GithubError>;
    /// `POST …/actions/runners/generate-jitconfig`: an ephemeral runner that takes one job.
    async fn generate_jit_config(
        &self,
        scope: &Scope,
        request: &JitConfigRequest,
    ) -> Result<JitConfig, GithubError>;
    /// `GET …/actions/runners`.
    async fn list_runners(&self, scope: &Scope) -> Result<Vec<Runner>, GithubError>;
    /// `GET …/actions/runners/{id}`.
    async fn get_runner(&self, scope: &Scope, runner_id: u64) -> Result<Runner, GithubError>;
    /// `DELETE …/actions/runners/{id}`.
    async fn delete_runner(&self, scope: &Scope, runner_id: u64) -> Result<(), GithubError>;
    /// `GET /orgs/{org}/actions/runner-groups` (all pages).
    async fn list_runner_groups(&self, org: &str) -> Result<Vec<RunnerGroup>, GithubError>;

    // Workflow runs and jobs.
    /// `GET /repos/{o}/{r}/actions/runs[?status=]`.
    async fn list_workflow_runs(
        &self,
        repo: &RepoRef,
        status: Option<RunStatus>,
    ) -> Result<Vec<WorkflowRun>, GithubError>;
    /// `GET /repos/{o}/{r}/actions/runs/{run_id}/jobs` (latest attempt).
    async fn list_run_jobs(&self, repo: &RepoRef, run_id: u64) -> Result<Vec<Job>, GithubError>;
    /// `GET /repos/{o}/{r}/actions/jobs/{job_id}`.
    async fn get_job(&self, repo: &RepoRef, job_id: u64) -> Result<Job, GithubError>;

    // Repositories and owners.
    /// Repositories of `owner` (or visible to its credentials) from `source`.
    async fn list_repositories(
        &self,
        owner: &str,
        source: RepoSource,
    ) -> Result<Vec<Repository>, GithubError>;
    /// `GET /repos/{o}/{r}`, with the caller's `permissions`.
    async fn get_repository(&self, repo: &RepoRef) -> Result<Repository, GithubError>;
    /// `GET /users/{owner}`: a user or an organization.
    async fn get_owner(&self, owner: &str) -> Result<Account, GithubError>;

    // Webhooks (repository or organization).
    async fn list_hooks(&self, scope: &Scope) -> Result<Vec<Hook>, GithubError>;
    async fn create_hook(&self, scope: &Scope, params: &HookParams) -> Result<Hook, GithubError>;
    async fn get_hook(&self, scope: &Scope, hook_id: u64) -> Result<Hook, GithubError>;
    async fn update_hook(
        &self,
        scope: &Scope,
        hook_id: u64,
        params: &HookParams,
    ) -> Result<Hook, GithubError>;
    async fn delete_hook(&self, scope: &Scope, hook_id: u64) -> Result<(), GithubError>;
    /// `POST …/hooks/{id}/pings`: GitHub sends a `ping` delivery.
    async fn ping_hook(&self, scope: &Scope, hook_id: u64) -> Result<(), GithubError>;
    /// `POST /repos/{o}/{r}/hooks/{id}/tests` (repository hooks only).
    async fn test_hook(&self, repo: &RepoRef, hook_id: u64) -> Result<(), GithubError>;
    async fn list_hook_deliveries(
        &self,
        scope: &Scope,
        hook_id: u64,
    ) -> Result<Vec<HookDelivery>, GithubError>;
    /// `GET …/hooks/{id}/deliveries`, newest first, at most `max_pages` pages of 100.
    async fn recent_hook_deliveries(
        &self,
        scope: &Scope,
        hook_id: u64,
        max_pages: usize,
    ) -> Result<Vec<HookDelivery>, GithubError>;
    /// `POST …/deliveries/{id}/attempts`: GitHub resends it with the same GUID.
    async fn redeliver(
        &self,
        scope: &Scope,
        hook_id: u64,
        delivery_id: u64,
    ) -> Result<(), GithubError>;

    // Credentials.
    /// `GET /rate_limit` (does not count against the primary limit). A 404 (GHES with rate
    /// limiting off) is [`RateLimitStatus::disabled`], not an error.
    async fn rate_limit(&self, owner: &str) -> Result<RateLimitStatus, GithubError>;
    /// `GET /user` and its `X-OAuth-Scopes`.
    async fn authenticated_user(&self, owner: &str) -> Result<AuthenticatedUser, GithubError>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_is_usable_as_a_trait_object() {
        fn takes(_: std::sync::Arc<dyn super::GithubApi>) {}
        let url = url::Url::parse(super::DEFAULT_API_URL).unwrap();
        takes(std::sync::Arc::new(
            super::GithubClient::builder(&url).build().unwrap(),
        ));
    }
}
