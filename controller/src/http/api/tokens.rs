//! Token validation: what the owner's credentials may do, each permission `ok`, `missing` or
//! `unknown`, with what to grant. Never the token itself.
//!
//! How each credential is judged (GITHUB-API.md §8):
//! - **Classic tokens** (`ghp_`, `gho_`): by the scopes GitHub reports in `X-OAuth-Scopes` on
//!   `GET /user`. Webhooks on repositories: `repo`, `admin:repo_hook` or `write:repo_hook`;
//!   organization hook: `admin:org_hook`; organization runners: `admin:org` or
//!   `manage_runners:org`; repository runners and private runs/jobs: `repo`.
//! - **Fine-grained tokens** (`github_pat_`) **and GitHub App installations** have no scopes, so
//!   the endpoints we need are probed: listing hooks (read), a deliberately invalid hook create
//!   (write: GitHub checks access before content, so a 422 means allowed and a 403 names the
//!   permission; nothing is created), issuing a runner registration token (it expires unused
//!   within the hour) and listing queued runs. A 403's `X-Accepted-GitHub-Permissions` is passed
//!   on; a 404 means not visible to these credentials; a rate limit or outage leaves `unknown`.
//! - The token user's role comes from `GET /repos/{o}/{r}` (`permissions.admin`): GitHub requires
//!   repository admin for hooks and runners whatever the token allows.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use shared::github::{
    GithubError, HookConfigParams, HookParams, OwnerAuth, RepoRef, RunStatus, Scope,
};

use super::ApiState;
use crate::config::OwnerConfig;
use crate::http::HttpError;
use crate::http::error::{Grant, chain, rfc3339};
use crate::webhook_setup::list_owner_repos;

/// What kind of credential an owner is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ClassicToken,
    FineGrainedToken,
    /// A token of another kind (e.g. an installation token pasted as a PAT): probed.
    Token,
    GithubApp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Missing,
    Unknown,
}

/// One permission, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub needed_for: &'static str,
    /// Whether the controller cannot do its job without it.
    pub required: bool,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What to grant, for this kind of credential (set unless `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// The permissions the controller may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    RepoHooks,
    OrgHooks,
    OrgRunners,
    RepoRunners,
    Actions,
}

impl Need {
    fn name(self) -> &'static str {
        match self {
            Need::RepoHooks => "repository_webhooks",
            Need::OrgHooks => "organization_webhooks",
            Need::OrgRunners => "organization_runners",
            Need::RepoRunners => "repository_runners",
            Need::Actions => "actions",
        }
    }

    fn needed_for(self) -> &'static str {
        match self {
            Need::RepoHooks => "creating and updating our webhook on repositories",
            Need::OrgHooks => "one webhook for the whole organization (else one per repository)",
            Need::OrgRunners => "registering organization runners (JIT configs, tokens)",
            Need::RepoRunners => "registering repository runners (JIT configs, tokens)",
            Need::Actions => "reading workflow runs and jobs to reconcile missed webhooks",
        }
    }

    /// Classic scopes, any one of which suffices.
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Need::RepoHooks => &["repo", "admin:repo_hook", "write:repo_hook"],
            Need::OrgHooks => &["admin:org_hook"],
            Need::OrgRunners => &["admin:org", "manage_runners:org"],
            Need::RepoRunners | Need::Actions => &["repo"],
        }
    }

    /// The fine-grained / App permission, as GitHub's settings pages name it.
    fn permission(self) -> &'static str {
        match self {
            Need::RepoHooks => "Repository permissions → Webhooks: Read and write",
            Need::OrgHooks => "Organization permissions → Webhooks: Read and write",
            Need::OrgRunners => "Organization permissions → Self-hosted runners: Read and write",
            Need::RepoRunners => "Repository permissions → Administration: Read and write",
            Need::Actions => "Repository permissions → Actions: Read",
        }
    }

    fn grant(self, kind: CredentialKind) -> String {
        match kind {
            CredentialKind::ClassicToken => format!("scope {}", self.scopes().join(" or ")),
            CredentialKind::GithubApp => format!(
                "{} (in the App's settings; then approve the new permissions on the installation)",
                self.permission()
            ),
            CredentialKind::FineGrainedToken | CredentialKind::Token => {
                self.permission().to_owned()
            }
        }
    }

    fn check(self, kind: CredentialKind, required: bool, status: Status, detail: String) -> Check {
        Check {
            name: self.name(),
            needed_for: self.needed_for(),
            required,
            status,
            detail: Some(detail),
            grant: (status != Status::Ok).then(|| self.grant(kind)),
        }
    }
}

/// The kind of `owner`'s credential; for tokens, from the scopes header and the token's prefix
/// (GitHub's documented prefixes; the token is never shown).
fn credential_kind(owner: &OwnerConfig, scopes: Option<&[String]>) -> CredentialKind {
    match &owner.auth {
        OwnerAuth::App { .. } => CredentialKind::GithubApp,
        OwnerAuth::Token(token) => {
            let t = token.expose();
            if scopes.is_some() || t.starts_with("ghp_") || t.starts_with("gho_") {
                CredentialKind::ClassicToken
            } else if t.starts_with("github_pat_") {
                CredentialKind::FineGrainedToken
            } else {
                CredentialKind::Token
            }
        }
    }
}

/// A classic token's check, from its scopes.
fn by_scopes(need: Need, scopes: &[String], required: bool) -> Check {
    let has = need
        .scopes()
        .iter()
        .find(|s| scopes.iter().any(|h| h == *s));
    let (status, detail) = match has {
        Some(s) => (Status::Ok, format!("the token has scope {s}")),
        None if need == Need::Actions => (
            Status::Missing,
            "without scope repo, runs and jobs of private repositories cannot be read".into(),
        ),
        None => (
            Status::Missing,
            format!("the token's scopes are [{}]", scopes.join(", ")),
        ),
    };
    need.check(CredentialKind::ClassicToken, required, status, detail)
}

/// A probe's result as a check.
fn by_probe(
    need: Need,
    kind: CredentialKind,
    required: bool,
    result: Result<String, GithubError>,
) -> Check {
    let (status, detail) = match result {
        Ok(detail) => (Status::Ok, detail),
        Err(err @ GithubError::Forbidden { .. }) => {
            let asks = Grant::from_error(&err)
                .and_then(|g| g.permissions.or(g.scopes))
                .map(|p| format!("; GitHub asks for {p}"))
                .unwrap_or_default();
            (Status::Missing, format!("{}{asks}", chain(&err)))
        }
        Err(err @ (GithubError::NotFound { .. } | GithubError::Unauthorized { .. })) => {
            (Status::Missing, chain(&err))
        }
        Err(err) => (
            Status::Unknown,
            format!("could not be checked: {}", chain(&err)),
        ),
    };
    need.check(kind, required, status, detail)
}

/// Probes read and write access to hooks of `scope` without changing anything.
async fn probe_hooks(state: &ApiState, scope: &Scope) -> Result<String, GithubError> {
    state.github.list_hooks(scope).await?;
    let invalid = HookParams {
        name: Some("web".into()),
        config: Some(HookConfigParams {
            url: String::new(),
            content_type: Some("json".into()),
            secret: None,
            insecure_ssl: Some("0".into()),
        }),
        events: Some(vec!["workflow_job".into()]),
        active: Some(false),
    };
    match state.github.create_hook(scope, &invalid).await {
        Err(GithubError::Validation { .. }) => Ok(format!(
            "read and write on {scope}: hooks listed, and a deliberately invalid hook was refused \
             for its content, not for access"
        )),
        Err(err) => Err(err),
        Ok(hook) => {
            // GitHub accepted a hook without a URL: take it away again.
            let _ = state.github.delete_hook(scope, hook.id).await;
            Ok(format!("read and write on {scope}"))
        }
    }
}

/// The checks for `owner`, by scopes (classic) or by probing (`probe_repo` for repository ones).
async fn checks(
    state: &ApiState,
    owner: &OwnerConfig,
    kind: CredentialKind,
    scopes: Option<&[String]>,
    is_org: bool,
    probe_repo: Result<RepoRef, String>,
) -> Vec<Check> {
    let runners = if is_org {
        Need::OrgRunners
    } else {
        Need::RepoRunners
    };
    let org_hooks = is_org && owner.all_repos;
    if kind == CredentialKind::ClassicToken {
        let scopes = scopes.unwrap_or_default();
        let mut out = vec![
            by_scopes(Need::RepoHooks, scopes, !org_hooks),
            by_scopes(runners, scopes, true),
            by_scopes(Need::Actions, scopes, false),
        ];
        if org_hooks {
            out.push(by_scopes(Need::OrgHooks, scopes, false));
        }
        return out;
    }
    let mut out = Vec::new();
    match &probe_repo {
        Ok(repo) => {
            let scope = Scope::Repo(repo.clone());
            let hooks = probe_hooks(state, &scope).await;
            out.push(by_probe(Need::RepoHooks, kind, !org_hooks, hooks));
            let runs = state
                .github
                .list_workflow_runs(repo, Some(RunStatus::Queued))
                .await
                .map(|_| format!("queued runs of {repo} listed"));
            out.push(by_probe(Need::Actions, kind, true, runs));
        }
        Err(why) => {
            for need in [Need::RepoHooks, Need::Actions] {
                out.push(need.check(kind, true, Status::Unknown, why.clone()));
            }
        }
    }
    let runner_scope = match (runners, &probe_repo) {
        (Need::OrgRunners, _) => Ok(Scope::Org(owner.name.clone())),
        (_, Ok(repo)) => Ok(Scope::Repo(repo.clone())),
        (_, Err(why)) => Err(why.clone()),
    };
    out.push(match runner_scope {
        Ok(scope) => {
            let token = state.github.registration_token(&scope).await.map(|_| {
                format!("a registration token for {scope} was issued (it expires unused)")
            });
            by_probe(runners, kind, true, token)
        }
        Err(why) => runners.check(kind, true, Status::Unknown, why),
    });
    if org_hooks {
        let scope = Scope::Org(owner.name.clone());
        out.push(by_probe(
            Need::OrgHooks,
            kind,
            false,
            probe_hooks(state, &scope).await,
        ));
    }
    out
}

/// `true` when every required check is ok, `false` when one is missing, else unknown (`null`).
fn ready(checks: &[Check]) -> Option<bool> {
    let required = || checks.iter().filter(|c| c.required);
    if required().any(|c| c.status == Status::Missing) {
        Some(false)
    } else if required().all(|c| c.status == Status::Ok) {
        Some(true)
    } else {
        None
    }
}

/// Who the credentials are: `Ok(Some(login), scopes)` for tokens, `Ok(None, None)` for Apps;
/// `Err(Ok(report))` when GitHub refused them, `Err(Err(_))` when it could not be asked.
async fn identify(
    state: &ApiState,
    owner: &OwnerConfig,
) -> Result<(Option<String>, Option<Vec<String>>), Result<serde_json::Value, HttpError>> {
    let refused = |err: &GithubError| {
        json!({
            "owner": owner.name,
            "credential": credential_kind(owner, None),
            "valid": false,
            "ready": false,
            "error": crate::webhook_setup::ErrorReport::from_github(err),
            "checks": [],
        })
    };
    match &owner.auth {
        OwnerAuth::Token(_) => match state.github.authenticated_user(&owner.name).await {
            Ok(user) => Ok((Some(user.account.login), user.scopes)),
            Err(err @ GithubError::Unauthorized { .. }) => Err(Ok(refused(&err))),
            Err(err) => Err(Err(HttpError::github("checking the token", err))),
        },
        OwnerAuth::App { .. } => match state.github.rate_limit(&owner.name).await {
            Ok(_) => Ok((None, None)),
            Err(
                err @ (GithubError::AppAuth { .. }
                | GithubError::Unauthorized { .. }
                | GithubError::Signing),
            ) => Err(Ok(refused(&err))),
            Err(err) => Err(Err(HttpError::github(
                "checking the GitHub App installation",
                err,
            ))),
        },
    }
}

async fn rate_limit(state: &ApiState, owner: &str) -> serde_json::Value {
    match state.github.rate_limit(owner).await {
        Ok(status) => match status.resources.get("core") {
            Some(core) => json!({
                "limit": core.limit, "remaining": core.remaining, "used": core.used,
                "reset": rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(core.reset)),
            }),
            None => serde_json::Value::Null,
        },
        Err(_) => serde_json::Value::Null,
    }
}

/// `GET /owners/{owner}/token/validate`.
pub async fn validate_owner(
    State(state): State<ApiState>,
    Path(owner): Path<String>,
) -> Result<Response, HttpError> {
    let owner = state.owner(&owner)?;
    let (login, scopes) = match identify(&state, owner).await {
        Ok(who) => who,
        Err(Ok(refused)) => return Ok(Json(refused).into_response()),
        Err(Err(err)) => return Err(err),
    };
    let kind = credential_kind(owner, scopes.as_deref());
    let account = state
        .github
        .get_owner(&owner.name)
        .await
        .map_err(|e| HttpError::github(format!("looking up {}", owner.name), e))?;
    let probe_repo = match (&owner.repo_name, owner.all_repos) {
        (Some(name), false) => Ok(RepoRef::new(&account.login, name)),
        _ if kind == CredentialKind::ClassicToken => Err(String::new()),
        _ => {
            match list_owner_repos(state.github.as_ref(), owner, account.is_organization()).await {
                Ok(repos) => repos
                    .first()
                    .map(|r| RepoRef::new(&r.owner.login, &r.name))
                    .ok_or_else(|| "no repository is visible to these credentials to probe".into()),
                Err(err) => Err(format!("repositories could not be listed: {}", chain(&err))),
            }
        }
    };
    let probed = probe_repo.as_ref().ok().map(ToString::to_string);
    let checks = checks(
        &state,
        owner,
        kind,
        scopes.as_deref(),
        account.is_organization(),
        probe_repo,
    )
    .await;
    Ok(Json(json!({
        "owner": owner.name,
        "owner_type": account.kind,
        "credential": kind,
        "valid": true,
        "login": login,
        "scopes": scopes,
        "probe_repository": probed.filter(|_| kind != CredentialKind::ClassicToken),
        "ready": ready(&checks),
        "checks": checks,
        "rate_limit": rate_limit(&state, &owner.name).await,
    }))
    .into_response())
}

/// `GET /owners/{owner}/token/scopes`: a classic token's scopes (others have none).
pub async fn scopes(
    State(state): State<ApiState>,
    Path(owner): Path<String>,
) -> Result<Response, HttpError> {
    let owner = state.owner(&owner)?;
    let (login, scopes) = match identify(&state, owner).await {
        Ok(who) => who,
        Err(Ok(refused)) => return Ok(Json(refused).into_response()),
        Err(Err(err)) => return Err(err),
    };
    let kind = credential_kind(owner, scopes.as_deref());
    let note = match kind {
        CredentialKind::ClassicToken => {
            "scopes from GitHub's X-OAuth-Scopes; the controller needs repo (or admin:repo_hook) \
             for webhooks and repository runners, admin:org (or manage_runners:org) for \
             organization runners, admin:org_hook for an organization webhook"
        }
        _ => {
            "fine-grained tokens and GitHub Apps have permissions, not scopes: see \
             GET /api/v1/owners/{owner}/token/validate"
        }
    };
    Ok(Json(json!({
        "owner": owner.name,
        "credential": kind,
        "login": login,
        "scopes": if kind == CredentialKind::ClassicToken { Some(scopes.unwrap_or_default()) } else { None },
        "note": note,
    }))
    .into_response())
}

/// `GET /repos/{owner}/{repo}/token/validate`: the same, for one repository, plus the token
/// user's role on it.
pub async fn validate_repo(
    State(state): State<ApiState>,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let owner = state.owner(&owner)?;
    let repo = RepoRef::new(&owner.name, repo);
    let (login, scopes) = match identify(&state, owner).await {
        Ok(who) => who,
        Err(Ok(refused)) => return Ok(Json(refused).into_response()),
        Err(Err(err)) => return Err(err),
    };
    let kind = credential_kind(owner, scopes.as_deref());
    let found = match state.github.get_repository(&repo).await {
        Ok(found) => found,
        Err(err @ GithubError::NotFound { .. }) => {
            return Ok(Json(json!({
                "repository": repo.to_string(),
                "credential": kind,
                "valid": true,
                "visible": false,
                "ready": false,
                "detail": chain(&err),
                "checks": [],
            }))
            .into_response());
        }
        Err(err) => return Err(HttpError::github(format!("reading {repo}"), err)),
    };
    let is_org = found.owner.kind == "Organization";
    let mut checks = checks(
        &state,
        owner,
        kind,
        scopes.as_deref(),
        is_org,
        Ok(repo.clone()),
    )
    .await;
    // The organization hook is an owner-wide matter.
    checks.retain(|c| c.name != Need::OrgHooks.name());
    if let Some(p) = found
        .permissions
        .filter(|_| kind != CredentialKind::GithubApp)
    {
        let (status, detail) = if p.admin {
            (Status::Ok, "the token's user is an admin of the repository")
        } else {
            (
                Status::Missing,
                "the token's user is not an admin: GitHub requires admin for webhooks and runners",
            )
        };
        checks.insert(
            0,
            Check {
                name: "repository_admin",
                needed_for: "managing webhooks and runners at all",
                required: true,
                status,
                detail: Some(detail.into()),
                grant: (status != Status::Ok)
                    .then(|| "make the token's user an admin of the repository".into()),
            },
        );
    }
    Ok(Json(json!({
        "repository": repo.to_string(),
        "credential": kind,
        "valid": true,
        "visible": true,
        "login": login,
        "scopes": scopes,
        "permissions": found.permissions.map(|p| json!({"admin": p.admin, "push": p.push, "pull": p.pull})),
        "ready": ready(&checks),
        "checks": checks,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_scopes_decide_each_permission() {
        let scopes = vec![
            "admin:repo_hook".to_owned(),
            "manage_runners:org".to_owned(),
        ];
        assert_eq!(by_scopes(Need::RepoHooks, &scopes, true).status, Status::Ok);
        assert_eq!(
            by_scopes(Need::OrgRunners, &scopes, true).status,
            Status::Ok
        );
        let missing = by_scopes(Need::RepoRunners, &scopes, true);
        assert_eq!(missing.status, Status::Missing);
        assert_eq!(missing.grant.as_deref(), Some("scope repo"));
        assert_eq!(
            by_scopes(Need::OrgHooks, &scopes, false).grant.as_deref(),
            Some("scope admin:org_hook")
        );
    }

    #[test]
    fn readiness_is_tri_state() {
        let c = |required, status| {
            Need::RepoHooks.check(CredentialKind::Token, required, status, String::new())
        };
        assert_eq!(
            ready(&[c(true, Status::Ok), c(false, Status::Missing)]),
            Some(true)
        );
        assert_eq!(
            ready(&[c(true, Status::Ok), c(true, Status::Unknown)]),
            None
        );
        assert_eq!(
            ready(&[c(true, Status::Missing), c(true, Status::Unknown)]),
            Some(false)
        );
    }
}
