//! The REST API under `/api/v1`: the connected agents ([`agents`]) and the management
//! endpoints — repository webhooks, token validation, and repository listing with webhook
//! preview / setup — the seed's paths, JSON in and out. (The jobs API is beside `/status` in
//! [`super::status`], which explains jobs the same way.)
//!
//! | route | module |
//! |---|---|
//! | `GET\|POST /repos/{owner}/{repo}/hooks`, `GET\|DELETE …/hooks/{hook_id}`, `POST …/hooks/{hook_id}/test`, `PUT …/hooks/ensure` | [`hooks`] |
//! | `GET /owners/{owner}/token/validate`, `GET /owners/{owner}/token/scopes`, `GET /repos/{owner}/{repo}/token/validate` | [`tokens`] |
//! | `GET /owners/{owner}/repositories`, `POST /owners/{owner}/webhooks/preview`, `POST\|GET /owners/{owner}/webhooks/setup` | [`repos`] |
//!
//! Handlers are thin: they look the owner up (404 when not configured), call GitHub through
//! [`GithubApi`] with that owner's credentials or the [`WebhookSetup`] service, and shape JSON.
//! Authentication (`API_TOKEN`) is the HTTP layer's middleware, applied to every route here.
//! Before any handler, the `{owner}` and `{repo}` path segments are checked to be GitHub names
//! (`[A-Za-z0-9._-]`, not `.` or `..`, at most 100 characters): they go into GitHub URLs, where
//! `..` would be resolved away by the URL parser and retarget the request ([`valid_path_names`]).
//! Responses never contain a token or a webhook secret: hooks show `secret_set` only.

pub mod agents;
mod hooks;
mod repos;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawPathParams, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::github::{GithubApi, Hook};

use crate::config::{Config, OwnerConfig};
use crate::http::HttpError;
use crate::webhook_setup::{WebhookSetup, is_ours};

/// What the management handlers share.
#[derive(Clone)]
pub struct ApiState {
    owners: Arc<[OwnerConfig]>,
    github: Arc<dyn GithubApi>,
    setup: Arc<WebhookSetup>,
}

impl ApiState {
    pub fn new(config: &Config, github: Arc<dyn GithubApi>, setup: Arc<WebhookSetup>) -> Self {
        Self {
            owners: config.owners.clone().into(),
            github,
            setup,
        }
    }

    /// The configured owner called `name` (case-insensitive), or a 404 listing the configured ones.
    fn owner(&self, name: &str) -> Result<&OwnerConfig, HttpError> {
        let wanted = shared::owner::Owner::new(name);
        self.owners
            .iter()
            .find(|o| o.owner() == wanted)
            .ok_or_else(|| HttpError::UnknownOwner {
                owner: name.to_owned(),
                configured: self
                    .owners
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The management routes, relative to `/api/v1`, ready to merge into a router of any state.
pub fn router<S: Clone + Send + Sync + 'static>(state: ApiState) -> Router<S> {
    Router::new()
        .route(
            "/repos/{owner}/{repo}/hooks",
            get(hooks::list).post(hooks::create),
        )
        .route("/repos/{owner}/{repo}/hooks/ensure", put(hooks::ensure))
        .route(
            "/repos/{owner}/{repo}/hooks/{hook_id}",
            get(hooks::get_one).delete(hooks::delete),
        )
        .route(
            "/repos/{owner}/{repo}/hooks/{hook_id}/test",
            post(hooks::test),
        )
        .route(
            "/repos/{owner}/{repo}/token/validate",
            get(tokens::validate_repo),
        )
        .route(
            "/owners/{owner}/token/validate",
            get(tokens::validate_owner),
        )
        .route("/owners/{owner}/token/scopes", get(tokens::scopes))
        .route("/owners/{owner}/repositories", get(repos::list))
        .route("/owners/{owner}/webhooks/preview", post(repos::preview))
        .route(
            "/owners/{owner}/webhooks/setup",
            post(repos::setup).get(repos::last_setup),
        )
        .route_layer(middleware::from_fn(valid_path_names))
        .with_state(state)
}

/// Whether `name` may be an owner or repository name in a GitHub URL.
pub fn check_name(kind: &str, name: &str) -> Result<(), HttpError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(HttpError::BadRequest(format!(
            "{kind} {:?} is not a GitHub name: use letters, digits, '.', '_' and '-' (not . or ..)",
            name.chars().take(100).collect::<String>()
        )))
    }
}

/// Refuses a request whose `{owner}` or `{repo}` is not a GitHub name, before any handler.
async fn valid_path_names(
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    for (key, value) in params.iter() {
        if matches!(key, "owner" | "repo") {
            check_name(key, value)?;
        }
    }
    Ok(next.run(request).await)
}

/// A JSON body; an empty body is `T::default()`. Errors are JSON 400s, not axum's plain text.
fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A hook as the API shows it: GitHub's fields, `secret_set` instead of the secret, and whether
/// it is ours (its URL is `WEBHOOK_URL`).
#[derive(Debug, Serialize)]
pub struct HookView {
    pub id: u64,
    pub name: String,
    pub active: bool,
    pub events: Vec<String>,
    pub url: Option<String>,
    pub content_type: Option<String>,
    pub insecure_ssl: Option<serde_json::Value>,
    pub secret_set: bool,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub last_response: Option<serde_json::Value>,
    pub ours: bool,
}

impl HookView {
    pub fn new(hook: &Hook, webhook_url: Option<&str>) -> Self {
        Self {
            id: hook.id,
            name: hook.name.clone(),
            active: hook.active,
            events: hook.events.clone(),
            url: hook.config.url.clone(),
            content_type: hook.config.content_type.clone(),
            insecure_ssl: hook.config.insecure_ssl.clone(),
            secret_set: hook.config.secret.is_some(),
            created_at: hook.created_at.clone(),
            updated_at: hook.updated_at.clone(),
            last_response: hook.last_response.as_ref().map(
                |r| serde_json::json!({"code": r.code, "status": r.status, "message": r.message}),
            ),
            ours: webhook_url.is_some_and(|u| is_ours(hook, u)),
        }
    }
}
