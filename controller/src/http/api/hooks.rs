//! Repository webhooks: list, create, get, delete, test, and ensure ours.
//!
//! `POST …/hooks` defaults to our hook (URL `WEBHOOK_URL`, events `workflow_job` and
//! `workflow_run`, `json`) and signs it with the owner's secret only when the URL is ours: our
//! secret never goes to somebody else's endpoint. `POST …/hooks/{id}/test` asks GitHub for a
//! `ping` delivery: GitHub's own `…/tests` replays the latest *push*, and our hooks do not
//! subscribe to push, so it would send nothing. `PUT …/hooks/ensure` runs webhook setup for this
//! one repository (create, or update including the current secret).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::github::{HookConfigParams, HookParams, RepoRef, Scope};

use super::{ApiState, HookView, json_body};
use crate::http::HttpError;
use crate::webhook_setup::{Action, EVENTS, EnsureError, same_url};

fn repo_scope(
    state: &ApiState,
    owner: &str,
    repo: &str,
) -> Result<(crate::config::OwnerConfig, RepoRef), HttpError> {
    let owner = state.owner(owner)?.clone();
    let repo = RepoRef::new(&owner.name, repo);
    Ok((owner, repo))
}

fn hook_id(raw: &str) -> Result<u64, HttpError> {
    raw.parse()
        .map_err(|_| HttpError::BadRequest(format!("hook id {raw:?} is not a number")))
}

/// `GET /repos/{owner}/{repo}/hooks`: every hook of the repository (all pages).
pub async fn list(
    State(state): State<ApiState>,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let (_, repo) = repo_scope(&state, &owner, &repo)?;
    let hooks = state
        .github
        .list_hooks(&Scope::Repo(repo.clone()))
        .await
        .map_err(|e| HttpError::github(format!("listing the hooks of {repo}"), e))?;
    let url = state.setup.webhook_url();
    let views: Vec<HookView> = hooks.iter().map(|h| HookView::new(h, url)).collect();
    Ok(Json(json!({
        "repository": repo.to_string(),
        "webhook_url": url,
        "count": views.len(),
        "hooks": views,
    }))
    .into_response())
}

/// The body of `POST …/hooks`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    url: Option<String>,
    events: Option<Vec<String>>,
    content_type: Option<String>,
    active: Option<bool>,
    /// For a foreign URL only; a hook to `WEBHOOK_URL` always gets the owner's secret.
    secret: Option<String>,
    /// `true` turns TLS verification off (GitHub's `insecure_ssl: "1"`); not recommended.
    insecure_ssl: Option<bool>,
}

/// `POST /repos/{owner}/{repo}/hooks`.
pub async fn create(
    State(state): State<ApiState>,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (owner, repo) = repo_scope(&state, &owner, &repo)?;
    let body: CreateHook = json_body(&body)?;
    let url = match (body.url, state.setup.webhook_url()) {
        (Some(url), _) => url,
        (None, Some(ours)) => ours.to_owned(),
        (None, None) => return Err(HttpError::NoWebhookUrl),
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(HttpError::BadRequest(format!(
            "url {url:?} is not an http(s) URL"
        )));
    }
    let ours = state.setup.webhook_url().is_some_and(|u| same_url(u, &url));
    let secret = if ours {
        if body.secret.is_some() {
            return Err(HttpError::BadRequest(
                "a hook to WEBHOOK_URL is always signed with the owner's webhook secret; \
                 do not pass \"secret\""
                    .into(),
            ));
        }
        owner.webhook_secret.clone()
    } else {
        body.secret.map(shared::github::Secret::new)
    };
    let content_type = body.content_type.unwrap_or_else(|| "json".into());
    if content_type != "json" && content_type != "form" {
        return Err(HttpError::BadRequest(format!(
            "content_type {content_type:?} is not json or form"
        )));
    }
    let events = body
        .events
        .unwrap_or_else(|| EVENTS.iter().map(|e| (*e).to_owned()).collect());
    if events.is_empty() {
        return Err(HttpError::BadRequest("events must not be empty".into()));
    }
    let params = HookParams {
        name: Some("web".into()),
        config: Some(HookConfigParams {
            url,
            content_type: Some(content_type),
            secret,
            insecure_ssl: Some(
                if body.insecure_ssl == Some(true) {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
        }),
        events: Some(events),
        active: Some(body.active.unwrap_or(true)),
    };
    let hook = state
        .github
        .create_hook(&Scope::Repo(repo.clone()), &params)
        .await
        .map_err(|e| HttpError::github(format!("creating a hook on {repo}"), e))?;
    let view = HookView::new(&hook, state.setup.webhook_url());
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /repos/{owner}/{repo}/hooks/{hook_id}`.
pub async fn get_one(
    State(state): State<ApiState>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Result<Response, HttpError> {
    let (_, repo) = repo_scope(&state, &owner, &repo)?;
    let id = hook_id(&id)?;
    let hook = state
        .github
        .get_hook(&Scope::Repo(repo.clone()), id)
        .await
        .map_err(|e| HttpError::github(format!("reading hook {id} of {repo}"), e))?;
    Ok(Json(HookView::new(&hook, state.setup.webhook_url())).into_response())
}

/// `DELETE /repos/{owner}/{repo}/hooks/{hook_id}`.
pub async fn delete(
    State(state): State<ApiState>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Result<Response, HttpError> {
    let (_, repo) = repo_scope(&state, &owner, &repo)?;
    let id = hook_id(&id)?;
    state
        .github
        .delete_hook(&Scope::Repo(repo.clone()), id)
        .await
        .map_err(|e| HttpError::github(format!("deleting hook {id} of {repo}"), e))?;
    Ok(
        Json(json!({"deleted": true, "hook_id": id, "repository": repo.to_string()}))
            .into_response(),
    )
}

/// `POST /repos/{owner}/{repo}/hooks/{hook_id}/test`: GitHub sends the hook a `ping`.
pub async fn test(
    State(state): State<ApiState>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Result<Response, HttpError> {
    let (_, repo) = repo_scope(&state, &owner, &repo)?;
    let id = hook_id(&id)?;
    state
        .github
        .ping_hook(&Scope::Repo(repo.clone()), id)
        .await
        .map_err(|e| HttpError::github(format!("pinging hook {id} of {repo}"), e))?;
    let body = json!({
        "hook_id": id,
        "repository": repo.to_string(),
        "event": "ping",
        "message": "GitHub is sending a ping delivery to the hook's URL; its result shows in the \
                    hook's last_response and recent deliveries",
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `PUT /repos/{owner}/{repo}/hooks/ensure`: exactly one hook of ours, with the current secret.
pub async fn ensure(
    State(state): State<ApiState>,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let (owner, repo) = repo_scope(&state, &owner, &repo)?;
    let (report, hook) = state
        .setup
        .ensure_repo(&owner, &repo)
        .await
        .map_err(|err| match err {
            EnsureError::NoWebhookUrl => HttpError::NoWebhookUrl,
            EnsureError::List(e) => HttpError::github(format!("listing the hooks of {repo}"), e),
            EnsureError::Write(e) => HttpError::github(format!("writing our hook on {repo}"), e),
        })?;
    let status = if report.action == Action::Create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let hook = hook.map(|h| HookView::new(&h, state.setup.webhook_url()));
    let body = json!({
        "repository": report.target,
        "action": report.action,
        "reasons": report.reasons,
        "removed_hooks": report.removed_hooks,
        "foreign_hooks": report.foreign_hooks,
        "hook": hook,
    });
    Ok((status, Json(body)).into_response())
}
