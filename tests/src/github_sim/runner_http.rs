//! The fake runner's HTTP protocol under `/_sim` (not GitHub's; just enough to drive a job the
//! way a runner process does), and `POST /_sim/jobs` to queue work from another process.
//!
//! - `POST /_sim/runners/register` `{"jitconfig"}` or `{"token","name","labels","ephemeral"}` →
//!   `{"id","name","credential","labels"}`; the runner is online.
//! - `POST /_sim/runners/{id}/claim` (Bearer credential) → 200 job (plus `sim_duration_ms`, how
//!   long the runner should work on it), or 204 when nothing matches.
//! - `POST /_sim/runners/{id}/complete` `{"conclusion"}` → 200 job.
//! - `POST /_sim/runners/{id}/offline` → 204.
//! - `POST /_sim/jobs` `{"owner","repo","labels","workflow"?,"duration_ms"?}` → 201 `{"run_id","job_id"}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::access::{ApiError, bearer};
use super::scenario::{self, RunnerError};
use super::state::RunnerRec;
use super::{Shared, payloads};

/// `/_sim/runners/...`, outside the API prefix.
pub fn routes(sh: Shared) -> axum::Router {
    axum::Router::new()
        .route("/_sim/runners/register", post(runner_register))
        .route("/_sim/runners/{id}/claim", post(runner_claim))
        .route("/_sim/runners/{id}/complete", post(runner_complete))
        .route("/_sim/runners/{id}/offline", post(runner_offline))
        .route("/_sim/jobs", post(queue_job))
        .with_state(sh)
}

impl IntoResponse for RunnerError {
    fn into_response(self) -> Response {
        let status = match self {
            RunnerError::NoRunner => StatusCode::NOT_FOUND,
            RunnerError::BadCredential
            | RunnerError::BadRegistrationToken
            | RunnerError::BadJitConfig => StatusCode::UNAUTHORIZED,
            RunnerError::NoJob | RunnerError::Busy => StatusCode::CONFLICT,
            RunnerError::UnknownGroup => StatusCode::NOT_FOUND,
        };
        (status, Json(json!({"message": self.to_string()}))).into_response()
    }
}

/// Body of `POST /_sim/runners/register`: a JIT config, or a registration token with name and labels.
#[derive(Debug, serde::Deserialize)]
pub struct RegisterBody {
    pub jitconfig: Option<String>,
    pub token: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub ephemeral: bool,
    /// `config.sh --runnergroup` (organization runners only).
    #[serde(default)]
    pub runner_group: Option<String>,
}

fn runner_json(r: &RunnerRec) -> Value {
    json!({"id": r.id, "name": r.name, "credential": r.credential, "labels": r.labels.iter().map(|(l, _)| l).collect::<Vec<_>>()})
}

async fn runner_register(
    State(sh): State<Shared>,
    Json(body): Json<RegisterBody>,
) -> Result<Response, RunnerError> {
    let runner = match (&body.jitconfig, &body.token) {
        (Some(jit), _) => scenario::register_jit(&sh, jit)?,
        (None, Some(token)) => {
            let name = body
                .name
                .clone()
                .unwrap_or_else(|| format!("runner-{}", super::webhooks::guid()));
            scenario::register_with_token(
                &sh,
                token,
                &name,
                &body.labels,
                body.ephemeral,
                body.runner_group.as_deref(),
            )?
        }
        (None, None) => return Err(RunnerError::BadRegistrationToken),
    };
    Ok(Json(runner_json(&runner)).into_response())
}

async fn runner_claim(
    State(sh): State<Shared>,
    Path(id): Path<u64>,
    h: HeaderMap,
) -> Result<Response, RunnerError> {
    let credential = bearer(&h).ok_or(RunnerError::BadCredential)?;
    Ok(match scenario::claim(&sh, id, Some(&credential))? {
        Some(job) => {
            let st = sh.lock();
            let mut body = payloads::job(&st, &job, true);
            if let Some(map) = body.as_object_mut() {
                map.insert("sim_duration_ms".into(), json!(job.duration_ms));
            }
            Json(body).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[derive(Debug, serde::Deserialize)]
struct CompleteBody {
    conclusion: String,
}

async fn runner_complete(
    State(sh): State<Shared>,
    Path(id): Path<u64>,
    h: HeaderMap,
    Json(b): Json<CompleteBody>,
) -> Result<Response, RunnerError> {
    let credential = bearer(&h).ok_or(RunnerError::BadCredential)?;
    let job = scenario::complete(&sh, id, Some(&credential), &b.conclusion)?;
    let st = sh.lock();
    Ok(Json(payloads::job(&st, &job, true)).into_response())
}

async fn runner_offline(
    State(sh): State<Shared>,
    Path(id): Path<u64>,
    h: HeaderMap,
) -> Result<Response, RunnerError> {
    let credential = bearer(&h).ok_or(RunnerError::BadCredential)?;
    scenario::go_offline(&sh, id, Some(&credential))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `POST /_sim/jobs`: queue a run with one job (for the binary and other processes).
#[derive(Debug, serde::Deserialize)]
pub struct QueueBody {
    pub owner: String,
    pub repo: String,
    pub labels: Vec<String>,
    #[serde(default)]
    pub workflow: Option<String>,
    /// How long the runner that claims the job works on it.
    #[serde(default)]
    pub duration_ms: u64,
}

async fn queue_job(
    State(sh): State<Shared>,
    Json(b): Json<QueueBody>,
) -> Result<Response, ApiError> {
    let repo_id = sh
        .lock()
        .repo(&b.owner, &b.repo)
        .map(|r| r.id)
        .ok_or_else(ApiError::not_found)?;
    let workflow = b.workflow.unwrap_or_else(|| "CI".into());
    let (run_id, jobs) =
        scenario::queue_run(&sh, repo_id, &workflow, &[("build".into(), b.labels)]);
    if let Some(job) = sh.lock().jobs.get_mut(&jobs[0]) {
        job.duration_ms = b.duration_ms;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"run_id": run_id, "job_id": jobs[0]})),
    )
        .into_response())
}
