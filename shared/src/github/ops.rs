//! [`GithubApi`] for [`GithubClient`]: each operation is its REST path and shape, nothing more.

use reqwest::Method;

use super::GithubApi;
use super::client::GithubClient;
use super::error::GithubError;
use super::ratelimit::header_str;
use super::types::*;

/// `scope`'s prefix followed by `rest`.
fn path<'a>(scope: &'a Scope, rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = scope.segments();
    segments.extend_from_slice(rest);
    segments
}

fn repo_path<'a>(repo: &'a RepoRef, rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec!["repos", repo.owner.as_str(), repo.name.as_str()];
    segments.extend_from_slice(rest);
    segments
}

fn to_json<T: serde::Serialize>(value: &T) -> Option<serde_json::Value> {
    // Serialising our own plain structs cannot fail; `None` would send no body and GitHub would
    // answer 422, which surfaces as a typed error.
    serde_json::to_value(value).ok()
}

#[async_trait::async_trait]
impl GithubApi for GithubClient {
    async fn registration_token(&self, scope: &Scope) -> Result<RunnerToken, GithubError> {
        let segments = path(scope, &["actions", "runners", "registration-token"]);
        self.call(scope.owner(), Method::POST, &segments, None)
            .await
    }

    async fn remove_token(&self, scope: &Scope) -> Result<RunnerToken, GithubError> {
        let segments = path(scope, &["actions", "runners", "remove-token"]);
        self.call(scope.owner(), Method::POST, &segments, None)
            .await
    }

    async fn generate_jit_config(
        &self,
        scope: &Scope,
        request: &JitConfigRequest,
    ) -> Result<JitConfig, GithubError> {
        let segments = path(scope, &["actions", "runners", "generate-jitconfig"]);
        self.call(scope.owner(), Method::POST, &segments, to_json(request))
            .await
    }

    async fn list_runners(&self, scope: &Scope) -> Result<Vec<Runner>, GithubError> {
        let segments = path(scope, &["actions", "runners"]);
        self.paginate(scope.owner(), &segments, &[], Some("runners"))
            .await
    }

    async fn get_runner(&self, scope: &Scope, runner_id: u64) -> Result<Runner, GithubError> {
        let id = runner_id.to_string();
        self.get(scope.owner(), &path(scope, &["actions", "runners", &id]))
            .await
    }

    async fn delete_runner(&self, scope: &Scope, runner_id: u64) -> Result<(), GithubError> {
        let id = runner_id.to_string();
        let segments = path(scope, &["actions", "runners", &id]);
        self.call_empty(scope.owner(), Method::DELETE, &segments, None)
            .await?;
        Ok(())
    }

    async fn list_workflow_runs(
        &self,
        repo: &RepoRef,
        status: Option<RunStatus>,
    ) -> Result<Vec<WorkflowRun>, GithubError> {
        let segments = repo_path(repo, &["actions", "runs"]);
        let query: Vec<(&str, &str)> = status.map(|s| ("status", s.as_str())).into_iter().collect();
        self.paginate(&repo.owner, &segments, &query, Some("workflow_runs"))
            .await
    }

    async fn list_run_jobs(&self, repo: &RepoRef, run_id: u64) -> Result<Vec<Job>, GithubError> {
        let id = run_id.to_string();
        let segments = repo_path(repo, &["actions", "runs", &id, "jobs"]);
        self.paginate(&repo.owner, &segments, &[], Some("jobs"))
            .await
    }

    async fn get_job(&self, repo: &RepoRef, job_id: u64) -> Result<Job, GithubError> {
        let id = job_id.to_string();
        self.get(&repo.owner, &repo_path(repo, &["actions", "jobs", &id]))
            .await
    }

    async fn list_repositories(
        &self,
        owner: &str,
        source: RepoSource,
    ) -> Result<Vec<Repository>, GithubError> {
        match source {
            RepoSource::AuthenticatedUser => {
                self.paginate(owner, &["user", "repos"], &[], None).await
            }
            RepoSource::AuthenticatedUserOwned => {
                self.paginate(owner, &["user", "repos"], &[("affiliation", "owner")], None)
                    .await
            }
            RepoSource::Org => {
                self.paginate(owner, &["orgs", owner, "repos"], &[], None)
                    .await
            }
            RepoSource::User => {
                self.paginate(owner, &["users", owner, "repos"], &[], None)
                    .await
            }
            RepoSource::Installation => {
                self.paginate(
                    owner,
                    &["installation", "repositories"],
                    &[],
                    Some("repositories"),
                )
                .await
            }
        }
    }

    async fn get_repository(&self, repo: &RepoRef) -> Result<Repository, GithubError> {
        self.get(&repo.owner, &repo_path(repo, &[])).await
    }

    async fn get_owner(&self, owner: &str) -> Result<Account, GithubError> {
        self.get(owner, &["users", owner]).await
    }

    async fn list_hooks(&self, scope: &Scope) -> Result<Vec<Hook>, GithubError> {
        self.paginate(scope.owner(), &path(scope, &["hooks"]), &[], None)
            .await
    }

    async fn create_hook(&self, scope: &Scope, params: &HookParams) -> Result<Hook, GithubError> {
        let segments = path(scope, &["hooks"]);
        self.call(scope.owner(), Method::POST, &segments, to_json(params))
            .await
    }

    async fn get_hook(&self, scope: &Scope, hook_id: u64) -> Result<Hook, GithubError> {
        let id = hook_id.to_string();
        self.get(scope.owner(), &path(scope, &["hooks", &id])).await
    }

    async fn update_hook(
        &self,
        scope: &Scope,
        hook_id: u64,
        params: &HookParams,
    ) -> Result<Hook, GithubError> {
        let id = hook_id.to_string();
        let segments = path(scope, &["hooks", &id]);
        self.call(scope.owner(), Method::PATCH, &segments, to_json(params))
            .await
    }

    async fn delete_hook(&self, scope: &Scope, hook_id: u64) -> Result<(), GithubError> {
        let id = hook_id.to_string();
        let segments = path(scope, &["hooks", &id]);
        self.call_empty(scope.owner(), Method::DELETE, &segments, None)
            .await?;
        Ok(())
    }

    async fn ping_hook(&self, scope: &Scope, hook_id: u64) -> Result<(), GithubError> {
        let id = hook_id.to_string();
        let segments = path(scope, &["hooks", &id, "pings"]);
        self.call_empty(scope.owner(), Method::POST, &segments, None)
            .await?;
        Ok(())
    }

    async fn test_hook(&self, repo: &RepoRef, hook_id: u64) -> Result<(), GithubError> {
        let id = hook_id.to_string();
        let segments = repo_path(repo, &["hooks", &id, "tests"]);
        self.call_empty(&repo.owner, Method::POST, &segments, None)
            .await?;
        Ok(())
    }

    async fn list_hook_deliveries(
        &self,
        scope: &Scope,
        hook_id: u64,
    ) -> Result<Vec<HookDelivery>, GithubError> {
        let id = hook_id.to_string();
        self.paginate(
            scope.owner(),
            &path(scope, &["hooks", &id, "deliveries"]),
            &[],
            None,
        )
        .await
    }

    async fn recent_hook_deliveries(
        &self,
        scope: &Scope,
        hook_id: u64,
        max_pages: usize,
    ) -> Result<Vec<HookDelivery>, GithubError> {
        let id = hook_id.to_string();
        self.paginate_up_to(
            scope.owner(),
            &path(scope, &["hooks", &id, "deliveries"]),
            &[],
            None,
            max_pages,
        )
        .await
    }

    async fn redeliver(
        &self,
        scope: &Scope,
        hook_id: u64,
        delivery_id: u64,
    ) -> Result<(), GithubError> {
        let (hook, delivery) = (hook_id.to_string(), delivery_id.to_string());
        let segments = path(
            scope,
            &["hooks", &hook, "deliveries", &delivery, "attempts"],
        );
        self.call_empty(scope.owner(), Method::POST, &segments, None)
            .await?;
        Ok(())
    }

    async fn rate_limit(&self, owner: &str) -> Result<RateLimitStatus, GithubError> {
        match self.get(owner, &["rate_limit"]).await {
            // GHES with rate limiting off: "Rate limiting is not enabled." (github.com never 404s here).
            Err(e) if e.is_not_found() => Ok(RateLimitStatus::disabled()),
            other => other,
        }
    }

    async fn list_runner_groups(&self, org: &str) -> Result<Vec<RunnerGroup>, GithubError> {
        let segments = ["orgs", org, "actions", "runner-groups"];
        self.paginate(org, &segments, &[], Some("runner_groups"))
            .await
    }

    async fn authenticated_user(&self, owner: &str) -> Result<AuthenticatedUser, GithubError> {
        let resp = self.call_empty(owner, Method::GET, &["user"], None).await?;
        let account: Account =
            serde_json::from_slice(&resp.body).map_err(|source| GithubError::Decode {
                request: "GET /user".into(),
                source,
            })?;
        let scopes = header_str(&resp.headers, "x-oauth-scopes")
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            });
        Ok(AuthenticatedUser { account, scopes })
    }
}
