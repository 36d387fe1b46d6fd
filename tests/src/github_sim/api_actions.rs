//! Actions endpoints: registration and remove tokens, JIT configs, runners, runs and jobs, for a
//! repository (`/repos/{o}/{r}/actions/…`) or an organization (`/orgs/{org}/actions/…`).

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::access::{ApiError, Need, check_org, check_repo, principal};
use super::api::{PageQuery, page, with_link};
use super::scenario::{encode_jit, runner_labels};
use super::state::{Access, RegTokenRec, RunnerRec, ScopeRec, State as SimState, timestamp};
use super::{Shared, payloads, strict};

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route(
            "/repos/{o}/{r}/actions/runners/registration-token",
            post(repo_token),
        )
        .route(
            "/orgs/{o}/actions/runners/registration-token",
            post(org_token),
        )
        .route(
            "/repos/{o}/{r}/actions/runners/remove-token",
            post(repo_token),
        )
        .route("/orgs/{o}/actions/runners/remove-token", post(org_token))
        .route(
            "/repos/{o}/{r}/actions/runners/generate-jitconfig",
            post(repo_jit),
        )
        .route(
            "/orgs/{o}/actions/runners/generate-jitconfig",
            post(org_jit),
        )
        .route("/repos/{o}/{r}/actions/runners", get(repo_runners))
        .route("/orgs/{o}/actions/runners", get(org_runners))
        .route(
            "/repos/{o}/{r}/actions/runners/{id}",
            get(repo_runner).delete(repo_delete_runner),
        )
        .route(
            "/orgs/{o}/actions/runners/{id}",
            get(org_runner).delete(org_delete_runner),
        )
        .route("/repos/{o}/{r}/actions/runs", get(list_runs))
        .route("/repos/{o}/{r}/actions/runs/{id}", get(get_run))
        .route("/repos/{o}/{r}/actions/runs/{id}/jobs", get(list_jobs))
        .route("/repos/{o}/{r}/actions/jobs/{id}", get(get_job))
}

/// Resolves a repository or organization scope and checks `need` on it.
pub fn scope(
    st: &SimState,
    headers: &HeaderMap,
    owner: &str,
    repo: Option<&str>,
    need: Need,
) -> Result<ScopeRec, ApiError> {
    let p = principal(st, headers)?;
    match repo {
        Some(name) => {
            let repo = st.repo(owner, name).ok_or_else(ApiError::not_found)?;
            check_repo(st, &p, repo, need)?;
            Ok(ScopeRec::Repo(repo.id))
        }
        None => {
            let org = st
                .account(owner)
                .filter(|a| a.is_org)
                .ok_or_else(ApiError::not_found)?;
            check_org(st, &p, org.id, need)?;
            Ok(ScopeRec::Org(org.id))
        }
    }
}

fn runners_need(repo: bool, access: Access) -> Need {
    if repo {
        Need::RepoRunners(access)
    } else {
        Need::OrgRunners(access)
    }
}

fn token(
    sh: &Shared,
    headers: &HeaderMap,
    uri: &OriginalUri,
    owner: &str,
    repo: Option<&str>,
) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let scope = scope(
        &st,
        headers,
        owner,
        repo,
        runners_need(repo.is_some(), Access::Write),
    )?;
    let token = hex::encode(rand::random::<[u8; 15]>()).to_uppercase();
    let expires_at = SystemTime::now() + Duration::from_secs(3600);
    let remove = uri.0.path().ends_with("remove-token");
    st.reg_tokens.insert(
        token.clone(),
        RegTokenRec {
            scope,
            expires_at,
            remove,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": timestamp(expires_at)})),
    )
        .into_response())
}

async fn repo_token(
    State(sh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    uri: OriginalUri,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    token(&sh, &h, &uri, &o, Some(&r))
}

async fn org_token(
    State(sh): State<Shared>,
    Path(o): Path<String>,
    uri: OriginalUri,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    token(&sh, &h, &uri, &o, None)
}

/// `generate-jitconfig`: validates like GitHub (`name`, `runner_group_id`, 1–100 `labels`), refuses a
/// name already used in the scope (409), and creates an offline ephemeral runner that carries
/// exactly the labels requested (no implied `self-hosted`/`Linux`/`X64`). Group and GHES rules:
/// [`strict`].
fn jit(
    sh: &Shared,
    headers: &HeaderMap,
    owner: &str,
    repo: Option<&str>,
    body: Value,
) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    strict::jit_available(&st)?;
    let scope = scope(
        &st,
        headers,
        owner,
        repo,
        runners_need(repo.is_some(), Access::Write),
    )?;
    st.refusals.check_jit(owner, repo.is_some())?;
    let name = body["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::validation("Runner", "name", "missing_field", "name is required")
        })?;
    // "Runner names can only be 64 characters in length" (actions/runner#1710); the runner
    // refuses to configure with a longer one.
    if name.chars().count() > 64 {
        return Err(ApiError::validation(
            "Runner",
            "name",
            "invalid",
            "name must be 64 characters or fewer",
        ));
    }
    let group = body["runner_group_id"].as_u64().ok_or_else(|| {
        ApiError::validation(
            "Runner",
            "runner_group_id",
            "missing_field",
            "runner_group_id is required",
        )
    })?;
    let labels: Vec<String> = body["labels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() || labels.len() > 100 {
        return Err(ApiError::validation(
            "Runner",
            "labels",
            "invalid",
            "labels must have 1 to 100 items",
        ));
    }
    strict::jit_group(&st, scope, group)?;
    if st
        .runners
        .values()
        .any(|r| r.scope == scope && r.name.eq_ignore_ascii_case(name))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Already exists - A runner with the name {name} already exists."),
        ));
    }
    let id = st.next_id();
    let runner = RunnerRec {
        id,
        name: name.to_owned(),
        scope,
        labels: runner_labels(&labels, false),
        online: false,
        ephemeral: true,
        group_id: group,
        connected: false,
        job: None,
        credential: super::webhooks::guid(),
    };
    let encoded = encode_jit(&st, &runner);
    st.runners.insert(id, runner.clone());
    if let Some(fault) = st.refusals.take_after_create() {
        return Err(fault);
    }
    let body = json!({"runner": payloads::runner(&runner), "encoded_jit_config": encoded});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn repo_jit(
    State(sh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    jit(&sh, &h, &o, Some(&r), b)
}

async fn org_jit(
    State(sh): State<Shared>,
    Path(o): Path<String>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    jit(&sh, &h, &o, None, b)
}

fn list_runners(
    sh: &Shared,
    h: &HeaderMap,
    uri: &OriginalUri,
    q: &PageQuery,
    owner: &str,
    repo: Option<&str>,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let scope = scope(
        &st,
        h,
        owner,
        repo,
        runners_need(repo.is_some(), Access::Read),
    )?;
    let items: Vec<Value> = st
        .runners
        .values()
        .filter(|r| r.scope == scope)
        .map(payloads::runner)
        .collect();
    let total = items.len();
    let (items, link) = page(&st.web_url, uri, q, items);
    Ok(with_link(
        StatusCode::OK,
        json!({"total_count": total, "runners": items}),
        link,
    ))
}

async fn repo_runners(
    State(sh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list_runners(&sh, &h, &uri, &q, &o, Some(&r))
}

async fn org_runners(
    State(sh): State<Shared>,
    Path(o): Path<String>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list_runners(&sh, &h, &uri, &q, &o, None)
}

fn one_runner(
    sh: &Shared,
    h: &HeaderMap,
    owner: &str,
    repo: Option<&str>,
    id: u64,
    delete: bool,
) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let access = if delete { Access::Write } else { Access::Read };
    let scope = scope(&st, h, owner, repo, runners_need(repo.is_some(), access))?;
    let runner = st
        .runners
        .get(&id)
        .filter(|r| r.scope == scope)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    if !delete {
        return Ok(Json(payloads::runner(&runner)).into_response());
    }
    if runner.job.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Bad request - Runner \"{}\" is still running a job\"",
                runner.name
            ),
        ));
    }
    st.runners.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn repo_runner(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one_runner(&sh, &h, &o, Some(&r), id, false)
}

async fn org_runner(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one_runner(&sh, &h, &o, None, id, false)
}

async fn repo_delete_runner(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one_runner(&sh, &h, &o, Some(&r), id, true)
}

async fn org_delete_runner(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one_runner(&sh, &h, &o, None, id, true)
}

fn repo_id(st: &SimState, h: &HeaderMap, o: &str, r: &str) -> Result<u64, ApiError> {
    match scope(st, h, o, Some(r), Need::RepoActions)? {
        ScopeRec::Repo(id) => Ok(id),
        ScopeRec::Org(_) => Err(ApiError::not_found()),
    }
}

async fn list_runs(
    State(sh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let id = repo_id(&st, &h, &o, &r)?;
    // `status` matches a status or a conclusion; newest first, as GitHub lists them.
    let items: Vec<Value> = st
        .runs
        .values()
        .rev()
        .filter(|run| run.repo_id == id)
        .filter(|run| {
            q.status
                .as_deref()
                .is_none_or(|s| run.status == s || run.conclusion == Some(s))
        })
        .map(|run| payloads::run(&st, run, true))
        .collect();
    let total = items.len();
    let (items, link) = page(&st.web_url, &uri, &q, items);
    Ok(with_link(
        StatusCode::OK,
        json!({"total_count": total, "workflow_runs": items}),
        link,
    ))
}

async fn get_run(
    State(sh): State<Shared>,
    Path((o, r, run)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let id = repo_id(&st, &h, &o, &r)?;
    let run = st
        .runs
        .get(&run)
        .filter(|x| x.repo_id == id)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(payloads::run(&st, run, true)).into_response())
}

async fn list_jobs(
    State(sh): State<Shared>,
    Path((o, r, run)): Path<(String, String, u64)>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let id = repo_id(&st, &h, &o, &r)?;
    let run = st
        .runs
        .get(&run)
        .filter(|x| x.repo_id == id)
        .ok_or_else(ApiError::not_found)?;
    let items: Vec<Value> = run
        .job_ids
        .iter()
        .filter_map(|j| st.jobs.get(j))
        .map(|j| payloads::job(&st, j, true))
        .collect();
    let total = items.len();
    let (items, link) = page(&st.web_url, &uri, &q, items);
    Ok(with_link(
        StatusCode::OK,
        json!({"total_count": total, "jobs": items}),
        link,
    ))
}

async fn get_job(
    State(sh): State<Shared>,
    Path((o, r, job)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let id = repo_id(&st, &h, &o, &r)?;
    let job = st
        .jobs
        .get(&job)
        .filter(|x| x.repo_id == id)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(payloads::job(&st, job, true)).into_response())
}
