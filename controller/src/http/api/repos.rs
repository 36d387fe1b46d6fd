//! An owner's repositories, and webhook setup for all of them: preview (plan only), setup
//! (plan and apply, per-target results), and the latest setup run (the start-up task's or an
//! operator's).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use crate::http::HttpError;
use crate::webhook_setup::{Mode, OwnerReport, list_owner_repos};

/// `GET /owners/{owner}/repositories`: every repository the owner's credentials see (all
/// pages), with the caller's permissions on each (absent for GitHub Apps, which have none of
/// their own) and whether this controller serves it.
pub async fn list(
    State(state): State<ApiState>,
    Path(owner): Path<String>,
) -> Result<Response, HttpError> {
    let owner = state.owner(&owner)?;
    let account = state
        .github
        .get_owner(&owner.name)
        .await
        .map_err(|e| HttpError::github(format!("looking up {}", owner.name), e))?;
    let repos = list_owner_repos(state.github.as_ref(), owner, account.is_organization())
        .await
        .map_err(|e| HttpError::github(format!("listing the repositories of {}", owner.name), e))?;
    let items: Vec<serde_json::Value> = repos
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "full_name": r.full_name,
                "private": r.private,
                "archived": r.archived.unwrap_or(false),
                "served": owner.serves_repo(&r.name),
                "permissions": r.permissions.map(|p| json!({
                    "admin": p.admin, "maintain": p.maintain, "push": p.push,
                    "triage": p.triage, "pull": p.pull,
                })),
                "can_manage_webhooks": r.permissions.map(|p| p.admin),
            })
        })
        .collect();
    Ok(Json(json!({
        "owner": owner.name,
        "owner_type": account.kind,
        "count": items.len(),
        "repositories": items,
    }))
    .into_response())
}

async fn run(state: &ApiState, owner: &str, mode: Mode) -> Result<Response, HttpError> {
    let owner = state.owner(owner)?;
    let report = state
        .setup
        .run(owner, mode, false)
        .await
        .ok_or(HttpError::NoWebhookUrl)?;
    Ok(report_response(report))
}

/// A report, with the status of the error that stopped it, if one did (never a 500).
fn report_response(report: OwnerReport) -> Response {
    let status = report
        .error
        .as_ref()
        .and_then(|e| StatusCode::from_u16(e.status).ok())
        .unwrap_or(StatusCode::OK);
    (status, Json(report)).into_response()
}

/// `POST /owners/{owner}/webhooks/preview`: what setup would do to each target, and why.
pub async fn preview(
    State(state): State<ApiState>,
    Path(owner): Path<String>,
) -> Result<Response, HttpError> {
    run(&state, &owner, Mode::Preview).await
}

/// `POST /owners/{owner}/webhooks/setup`: do it now; per-target results.
pub async fn setup(
    State(state): State<ApiState>,
    Path(owner): Path<String>,
) -> Result<Response, HttpError> {
    run(&state, &owner, Mode::Apply).await
}

/// `GET /owners/{owner}/webhooks/setup`: the latest setup run, if any.
pub async fn last_setup(
    State(state): State<ApiState>,
    Path(owner): Path<String>,
) -> Result<Response, HttpError> {
    let owner = state.owner(&owner)?;
    Ok(Json(json!({
        "owner": owner.name,
        "automatic": state.setup.webhook_url().is_some(),
        "last_run": state.setup.last_report(&owner.name),
    }))
    .into_response())
}
