//! Who is calling and what they may do: bearer tokens, App JWTs, permissions, and error responses
//! shaped like GitHub's.
//!
//! GitHub's rules as the simulator applies them (GITHUB-API.md §8): a private resource the caller
//! cannot see is a **404**, not a 403; a visible one the caller may not change is a 403 whose
//! message says which kind of credential fell short ("Resource not accessible by personal access
//! token" / "… by integration", or "Must have admin rights to Repository." for a classic token),
//! with `X-Accepted-GitHub-Permissions` or `X-Accepted-OAuth-Scopes` naming what was needed.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::json;

use super::state::{Access, RepoRec, Role, State, TokenKind, epoch};

/// An error answer, GitHub-shaped: `{"message", "documentation_url"}` plus headers.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
    pub errors: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
            errors: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }

    pub fn bad_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Bad credentials")
    }

    /// A 422 with one `errors[]` entry.
    pub fn validation(resource: &str, field: &str, code: &str, message: &str) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
        e.errors =
            Some(json!([{"resource": resource, "field": field, "code": code, "message": message}]));
        e
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "message": self.message,
            "documentation_url": "https://docs.github.com/rest",
            "status": self.status.as_u16().to_string(),
        });
        if let (Some(errors), Some(map)) = (self.errors, body.as_object_mut()) {
            map.insert("errors".into(), errors);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = v.parse() {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

/// A fine-grained token's permissions and repository selection (`None` = all).
pub type FineGrant = (HashMap<String, Access>, Option<Vec<String>>);

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A PAT acting as `login`: classic (`scopes`) or fine-grained (`permissions`, `repos`).
    User {
        login: String,
        scopes: Option<Vec<String>>,
        fine: Option<FineGrant>,
    },
    /// An App installation token.
    Installation(u64),
    /// An App's own JWT (only for `/app…` endpoints).
    App(u64),
}

/// The bearer credential of a request (`Bearer x` or `token x`).
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (kind, token) = value.split_once(' ')?;
    matches!(kind.to_ascii_lowercase().as_str(), "bearer" | "token")
        .then(|| token.trim().to_owned())
}

/// Resolves the caller or answers 401.
pub fn principal(state: &State, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Requires authentication"))?;
    if token.starts_with("eyJ") && token.matches('.').count() == 2 {
        return verify_jwt(state, &token).map(Principal::App);
    }
    match state.tokens.get(&token) {
        Some(TokenKind::Classic { user, scopes }) => Ok(Principal::User {
            login: user.clone(),
            scopes: Some(scopes.clone()),
            fine: None,
        }),
        Some(TokenKind::FineGrained {
            user,
            permissions,
            repos,
        }) => Ok(Principal::User {
            login: user.clone(),
            scopes: None,
            fine: Some((permissions.clone(), repos.clone())),
        }),
        Some(TokenKind::Installation {
            installation_id,
            expires_at,
        }) if *expires_at > SystemTime::now() => Ok(Principal::Installation(*installation_id)),
        _ => Err(ApiError::bad_credentials()),
    }
}

/// Verifies an App JWT: RS256 by a known App, `exp` in the future and at most 10 minutes after `iat`.
fn verify_jwt(state: &State, token: &str) -> Result<u64, ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("A JSON web token could not be decoded ({why})"),
        )
    };
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("shape"));
    };
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("claims"))?;
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("header"))?;
    if header["alg"] != "RS256" {
        return Err(bad("alg"));
    }
    let iss = match &claims["iss"] {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return Err(bad("iss")),
    };
    let app = state
        .apps
        .values()
        .find(|a| a.id.to_string() == iss || a.client_id == iss)
        .ok_or_else(|| bad("unknown issuer"))?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad("signature"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &app.public_key_der)
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| bad("signature"))?;
    let now = epoch(SystemTime::now());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    if exp <= now {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ));
    }
    if iat > now + 60 || exp.saturating_sub(iat) > 600 + 60 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(app.id)
}

/// What an operation needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Runners, registration tokens and JIT configs of a repository (repository administration).
    RepoRunners(Access),
    /// Repository webhooks.
    RepoHooks(Access),
    /// Runs and jobs.
    RepoActions,
    /// Reading the repository itself.
    RepoMeta,
    /// Organization runners (organization self-hosted runners).
    OrgRunners(Access),
    /// Organization webhooks.
    OrgHooks(Access),
}

impl Need {
    /// (fine-grained / App permission, access, classic scopes that suffice, role needed).
    fn rule(self) -> (&'static str, Access, &'static [&'static str], Role) {
        match self {
            Need::RepoRunners(a) => ("administration", a, &["repo"], Role::Admin),
            Need::RepoHooks(Access::Read) => (
                "repository_hooks",
                Access::Read,
                &[
                    "repo",
                    "admin:repo_hook",
                    "write:repo_hook",
                    "read:repo_hook",
                ],
                Role::Admin,
            ),
            Need::RepoHooks(_) => (
                "repository_hooks",
                Access::Write,
                &["repo", "admin:repo_hook", "write:repo_hook"],
                Role::Admin,
            ),
            Need::RepoActions => ("actions", Access::Read, &["repo"], Role::Read),
            Need::RepoMeta => ("metadata", Access::Read, &["repo"], Role::Read),
            Need::OrgRunners(a) => (
                "organization_self_hosted_runners",
                a,
                &["admin:org", "manage_runners:org"],
                Role::Admin,
            ),
            Need::OrgHooks(a) => ("organization_hooks", a, &["admin:org_hook"], Role::Admin),
        }
    }
}

fn forbidden_for(p: &Principal, need: Need) -> ApiError {
    let (perm, access, scopes, _) = need.rule();
    match p {
        Principal::User { fine: Some(_), .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by personal access token",
        )
        .header(
            "x-accepted-github-permissions",
            format!("{perm}={}", access.as_str()),
        ),
        Principal::User { .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "Must have admin rights to Repository.",
        )
        .header("x-accepted-oauth-scopes", scopes.join(", ")),
        _ => ApiError::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )
        .header(
            "x-accepted-github-permissions",
            format!("{perm}={}", access.as_str()),
        ),
    }
}

fn has_perm(perms: &HashMap<String, Access>, name: &str, access: Access) -> bool {
    name == "metadata" || perms.get(name).is_some_and(|a| *a >= access)
}

/// A user's role on a repository (owner, org owner, collaborator, org member).
pub fn role_of(state: &State, login: &str, repo: &RepoRec) -> Option<Role> {
    let owner = state.accounts.get(&repo.owner_id)?;
    let login = login.to_ascii_lowercase();
    if owner.login.eq_ignore_ascii_case(&login) || owner.members.get(&login) == Some(&true) {
        return Some(Role::Admin);
    }
    let collab = repo.collaborators.get(&login).copied();
    let member = owner.members.contains_key(&login).then_some(Role::Read);
    collab.max(member)
}

/// Checks `need` on `repo`; returns the caller's role (for `permissions`).
pub fn check_repo(
    state: &State,
    p: &Principal,
    repo: &RepoRec,
    need: Need,
) -> Result<Option<Role>, ApiError> {
    let (perm, access, scopes, role_needed) = need.rule();
    match p {
        Principal::User {
            login,
            scopes: classic,
            fine,
        } => {
            let role = role_of(state, login, repo);
            if let Some((_, Some(repos))) = fine
                && repo.private
                && !repos.iter().any(|r| r.eq_ignore_ascii_case(&repo.name))
            {
                return Err(ApiError::not_found());
            }
            let private_scope_ok = classic
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == "repo"));
            if repo.private && (role.is_none() || !private_scope_ok) {
                return Err(ApiError::not_found());
            }
            let grants = match (classic, fine) {
                (Some(have), _) => {
                    !repo.private && role_needed == Role::Read
                        || scopes.iter().any(|s| have.iter().any(|h| h == s))
                }
                (_, Some((perms, _))) => has_perm(perms, perm, access),
                _ => false,
            };
            if !grants || role.unwrap_or(Role::Read) < role_needed {
                return Err(forbidden_for(p, need));
            }
            Ok(role)
        }
        Principal::Installation(id) => {
            let inst = state
                .installations
                .get(id)
                .ok_or_else(ApiError::bad_credentials)?;
            let covered = inst.account_id == repo.owner_id
                && inst
                    .repos
                    .as_ref()
                    .is_none_or(|rs| rs.iter().any(|r| r.eq_ignore_ascii_case(&repo.name)));
            if !covered {
                return Err(ApiError::not_found());
            }
            if !has_perm(&inst.permissions, perm, access) {
                return Err(forbidden_for(p, need));
            }
            Ok(None)
        }
        Principal::App(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "A JSON web token cannot be used for this endpoint; use an installation access token",
        )),
    }
}

/// Checks `need` on organization `org_id`.
pub fn check_org(state: &State, p: &Principal, org_id: u64, need: Need) -> Result<(), ApiError> {
    let (perm, access, scopes, _) = need.rule();
    match p {
        Principal::User {
            login,
            scopes: classic,
            fine,
        } => {
            let org = state
                .accounts
                .get(&org_id)
                .ok_or_else(ApiError::not_found)?;
            let Some(owner) = org.members.get(&login.to_ascii_lowercase()).copied() else {
                return Err(ApiError::not_found());
            };
            let grants = match (classic, fine) {
                (Some(have), _) => scopes.iter().any(|s| have.iter().any(|h| h == s)),
                (_, Some((perms, _))) => has_perm(perms, perm, access),
                _ => false,
            };
            if !grants || !owner {
                return Err(forbidden_for(p, need));
            }
            Ok(())
        }
        Principal::Installation(id) => {
            let inst = state
                .installations
                .get(id)
                .ok_or_else(ApiError::bad_credentials)?;
            if inst.account_id != org_id {
                return Err(ApiError::not_found());
            }
            if !has_perm(&inst.permissions, perm, access) {
                return Err(forbidden_for(p, need));
            }
            Ok(())
        }
        Principal::App(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )),
    }
}
