//! What happens on GitHub's side of a job: a run is queued, a runner registers, claims any queued
//! job it matches, runs it and completes it, with the webhooks GitHub sends at each step.
//!
//! Like GitHub, a job is not bound to the runner made for it: any online, idle runner whose labels
//! include all the job's labels (compared case-insensitively) and whose scope covers the repository
//! can take it. An ephemeral runner is removed after its one job.
//!
//! Event order for a one-job run: `workflow_run` requested (status `queued`), `workflow_job`
//! queued, `workflow_run` in_progress, `workflow_job` in_progress, `workflow_job` completed,
//! `workflow_run` completed.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::Shared;
use super::payloads;
use super::state::{JobRec, RunRec, RunnerRec, State, now};

/// The default labels GitHub gives a Linux x64 runner.
pub const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

/// Why a runner-side step was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunnerError {
    #[error("unknown or expired registration token")]
    BadRegistrationToken,
    #[error("the JIT config is not one this simulator issued")]
    BadJitConfig,
    #[error("no such runner")]
    NoRunner,
    #[error("the runner's credential is wrong")]
    BadCredential,
    #[error("the runner is not running a job")]
    NoJob,
    #[error("the runner is already running a job")]
    Busy,
    #[error("Could not find any self-hosted runner group with that name")]
    UnknownGroup,
}

/// The labels of a new runner: the defaults (`read-only`) then custom ones, without duplicates.
pub fn runner_labels(custom: &[String], default_labels: bool) -> Vec<(String, &'static str)> {
    let mut labels: Vec<(String, &'static str)> = Vec::new();
    if default_labels {
        labels.extend(
            DEFAULT_LABELS
                .iter()
                .map(|l| ((*l).to_owned(), "read-only")),
        );
    }
    for label in custom {
        if !labels.iter().any(|(l, _)| l.eq_ignore_ascii_case(label)) {
            labels.push((label.clone(), "custom"));
        }
    }
    labels
}

/// A JIT runner's `encoded_jit_config`: base64 of what the fake runner needs to connect.
pub fn encode_jit(state: &State, runner: &RunnerRec) -> String {
    STANDARD.encode(
        json!({"runner_id": runner.id, "runner_name": runner.name, "credential": runner.credential,
               "server_url": state.web_url})
        .to_string(),
    )
}

/// Queues a run of `workflow` with `jobs` (name, `runs-on` labels) in repository `repo_id` and
/// delivers `workflow_run` requested and one `workflow_job` queued per job.
pub fn queue_run(
    sh: &Shared,
    repo_id: u64,
    workflow: &str,
    jobs: &[(String, Vec<String>)],
) -> (u64, Vec<u64>) {
    queue_run_as(sh, repo_id, workflow, jobs, None, "queued")
}

/// One job (`labels`, or `labels: []` with a `group`) in status `status` (`queued` or `waiting`).
pub fn queue_one(
    sh: &Shared,
    repo_id: u64,
    labels: &[String],
    group: Option<&str>,
    status: &'static str,
) -> (u64, u64) {
    let jobs = [("build".to_owned(), labels.to_vec())];
    let (run, ids) = queue_run_as(sh, repo_id, "CI", &jobs, group, status);
    (run, ids[0])
}

/// A job behind an approval: `workflow_job` `queued` with status `waiting`, then `waiting`.
pub fn queue_awaiting_approval(sh: &Shared, repo_id: u64, labels: &[String]) -> (u64, u64) {
    let (run, job_id) = queue_one(sh, repo_id, labels, None, "waiting");
    let mut st = sh.lock();
    if let Some(job) = st.jobs.get(&job_id).cloned() {
        job_event(sh, &mut st, &job, "waiting");
    }
    (run, job_id)
}

/// Approval: a `waiting` job becomes `queued`, with a second `queued` delivery. `false` when
/// the job is not waiting.
pub fn approve(sh: &Shared, job_id: u64) -> bool {
    let mut st = sh.lock();
    let Some(job) = st.jobs.get_mut(&job_id).filter(|j| j.status == "waiting") else {
        return false;
    };
    job.status = "queued";
    let job = job.clone();
    job_event(sh, &mut st, &job, "queued");
    true
}

fn queue_run_as(
    sh: &Shared,
    repo_id: u64,
    workflow: &str,
    jobs: &[(String, Vec<String>)],
    group: Option<&str>,
    status: &'static str,
) -> (u64, Vec<u64>) {
    let mut st = sh.lock();
    let run_id = st.next_id();
    let workflow_id = st.next_id();
    let run_number = st.runs.values().filter(|r| r.repo_id == repo_id).count() as u64 + 1;
    let created = now();
    // A run starts from a push (the `push` event): GitHub moves the repository's `pushed_at`.
    if let Some(repo) = st.repos.get_mut(&repo_id) {
        repo.pushed_at = Some(created.clone());
    }
    let mut job_ids = Vec::new();
    for (name, labels) in jobs {
        let id = st.next_id();
        job_ids.push(id);
        st.jobs.insert(
            id,
            JobRec {
                id,
                run_id,
                repo_id,
                name: name.clone(),
                labels: labels.clone(),
                status,
                conclusion: None,
                runner: None,
                created_at: created.clone(),
                started_at: None,
                completed_at: None,
                duration_ms: 0,
                group: group.map(str::to_owned),
            },
        );
    }
    let head_sha = hex::encode(rand::random::<[u8; 20]>());
    let run = RunRec {
        id: run_id,
        repo_id,
        workflow_id,
        name: workflow.to_owned(),
        run_number,
        status: "queued",
        conclusion: None,
        created_at: created.clone(),
        updated_at: created,
        started: false,
        job_ids: job_ids.clone(),
        head_sha,
    };
    st.runs.insert(run_id, run.clone());
    run_event(sh, &mut st, &run, "requested");
    for id in &job_ids {
        if let Some(job) = st.jobs.get(id).cloned() {
            job_event(sh, &mut st, &job, "queued");
        }
    }
    (run_id, job_ids)
}

pub(crate) fn run_event(sh: &Shared, st: &mut State, run: &RunRec, action: &str) {
    let Some(repo) = st.repos.get(&run.repo_id).cloned() else {
        return;
    };
    let mut payload = payloads::envelope(st, action, &repo);
    if let Some(map) = payload.as_object_mut() {
        map.insert("workflow".into(), payloads::workflow(st, run));
        map.insert("workflow_run".into(), payloads::run(st, run, false));
    }
    sh.hooks
        .repo_event(st, run.repo_id, "workflow_run", Some(action), payload);
}

pub(crate) fn job_event(sh: &Shared, st: &mut State, job: &JobRec, action: &str) {
    let Some(repo) = st.repos.get(&job.repo_id).cloned() else {
        return;
    };
    let mut payload = payloads::envelope(st, action, &repo);
    if let Some(map) = payload.as_object_mut() {
        map.insert("workflow_job".into(), payloads::job(st, job, false));
    }
    sh.hooks
        .repo_event(st, job.repo_id, "workflow_job", Some(action), payload);
}

/// Connects the runner of a JIT config: it comes online.
pub fn register_jit(sh: &Shared, encoded: &str) -> Result<RunnerRec, RunnerError> {
    let decoded: Value = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(RunnerError::BadJitConfig)?;
    let id = decoded["runner_id"]
        .as_u64()
        .ok_or(RunnerError::BadJitConfig)?;
    let mut st = sh.lock();
    let runner = st.runners.get_mut(&id).ok_or(RunnerError::NoRunner)?;
    if decoded["credential"].as_str() != Some(runner.credential.as_str()) {
        return Err(RunnerError::BadJitConfig);
    }
    runner.online = true;
    runner.connected = true;
    Ok(runner.clone())
}

/// `config.sh --url … --token …`: registers a runner with a registration token.
pub fn register_with_token(
    sh: &Shared,
    token: &str,
    name: &str,
    labels: &[String],
    ephemeral: bool,
    group: Option<&str>,
) -> Result<RunnerRec, RunnerError> {
    let mut st = sh.lock();
    let reg = st
        .reg_tokens
        .get(token)
        .filter(|t| !t.remove && t.expires_at > SystemTime::now())
        .cloned()
        .ok_or(RunnerError::BadRegistrationToken)?;
    // `config.sh --runnergroup NAME`: an organization group by name; repositories have only
    // the default group, and config.sh refuses a name it cannot find.
    let group_id = match (group.filter(|g| !g.is_empty()), reg.scope) {
        (None, _) => 1,
        (Some(name), super::state::ScopeRec::Org(org_id)) => st
            .runner_groups
            .iter()
            .find(|g| g.org_id == org_id && g.name.eq_ignore_ascii_case(name) && !g.hosted)
            .map(|g| g.id)
            .ok_or(RunnerError::UnknownGroup)?,
        (Some(_), super::state::ScopeRec::Repo(_)) => return Err(RunnerError::UnknownGroup),
    };
    let id = st.next_id();
    let runner = RunnerRec {
        id,
        name: name.to_owned(),
        scope: reg.scope,
        labels: runner_labels(labels, true),
        online: true,
        ephemeral,
        group_id,
        connected: true,
        job: None,
        credential: super::webhooks::guid(),
    };
    st.runners.insert(id, runner.clone());
    Ok(runner)
}

fn runner_mut<'a>(
    st: &'a mut State,
    runner_id: u64,
    credential: Option<&str>,
) -> Result<&'a mut RunnerRec, RunnerError> {
    let runner = st
        .runners
        .get_mut(&runner_id)
        .ok_or(RunnerError::NoRunner)?;
    if credential.is_some_and(|c| c != runner.credential) {
        return Err(RunnerError::BadCredential);
    }
    Ok(runner)
}

/// The runner takes the oldest queued job it matches, if any; `credential` is checked when given.
pub fn claim(
    sh: &Shared,
    runner_id: u64,
    credential: Option<&str>,
) -> Result<Option<JobRec>, RunnerError> {
    let mut st = sh.lock();
    let runner = runner_mut(&mut st, runner_id, credential)?.clone();
    if runner.job.is_some() {
        return Err(RunnerError::Busy);
    }
    let matches = |job: &JobRec| {
        job.status == "queued"
            && st.scope_covers(runner.scope, job.repo_id)
            && super::strict::group_admits(&st, &runner, job)
            && job
                .labels
                .iter()
                .all(|l| runner.labels.iter().any(|(r, _)| r.eq_ignore_ascii_case(l)))
    };
    let Some(job_id) = st.jobs.values().find(|j| matches(j)).map(|j| j.id) else {
        return Ok(None);
    };
    let started = now();
    if let Some(r) = st.runners.get_mut(&runner_id) {
        r.job = Some(job_id);
        r.online = true;
    }
    let Some(job) = st.jobs.get_mut(&job_id) else {
        return Ok(None);
    };
    job.status = "in_progress";
    job.runner = Some((runner.id, runner.name.clone()));
    job.started_at = Some(started.clone());
    let job = job.clone();
    if let Some(run) = st.runs.get_mut(&job.run_id).filter(|r| !r.started) {
        run.started = true;
        run.status = "in_progress";
        run.updated_at = started;
        let run = run.clone();
        run_event(sh, &mut st, &run, "in_progress");
    }
    job_event(sh, &mut st, &job, "in_progress");
    Ok(Some(job))
}

/// The runner finishes its job with `conclusion` (`success`, `failure`, …); the run completes when
/// its last job does; an ephemeral runner is then removed.
pub fn complete(
    sh: &Shared,
    runner_id: u64,
    credential: Option<&str>,
    conclusion: &str,
) -> Result<JobRec, RunnerError> {
    let conclusion: &'static str = match conclusion {
        "failure" => "failure",
        "cancelled" => "cancelled",
        "skipped" => "skipped",
        "timed_out" => "timed_out",
        _ => "success",
    };
    let mut st = sh.lock();
    let runner = runner_mut(&mut st, runner_id, credential)?;
    let job_id = runner.job.take().ok_or(RunnerError::NoJob)?;
    let ephemeral = runner.ephemeral;
    let finished = now();
    let job = {
        let job = st.jobs.get_mut(&job_id).ok_or(RunnerError::NoJob)?;
        job.status = "completed";
        job.conclusion = Some(conclusion);
        job.completed_at = Some(finished.clone());
        job.clone()
    };
    if ephemeral {
        st.runners.remove(&runner_id);
    }
    job_event(sh, &mut st, &job, "completed");
    let run_done = st.runs.get(&job.run_id).is_some_and(|run| {
        run.job_ids
            .iter()
            .all(|id| st.jobs.get(id).is_some_and(|j| j.status == "completed"))
    });
    if run_done {
        let failed = st.runs.get(&job.run_id).is_some_and(|run| {
            run.job_ids.iter().any(|id| {
                st.jobs
                    .get(id)
                    .is_some_and(|j| j.conclusion == Some("failure"))
            })
        });
        if let Some(run) = st.runs.get_mut(&job.run_id) {
            run.status = "completed";
            run.conclusion = Some(if failed { "failure" } else { "success" });
            run.updated_at = finished;
            let run = run.clone();
            run_event(sh, &mut st, &run, "completed");
        }
    }
    Ok(job)
}

/// The runner process stops (a non-ephemeral runner goes offline and stays registered).
pub fn go_offline(
    sh: &Shared,
    runner_id: u64,
    credential: Option<&str>,
) -> Result<(), RunnerError> {
    let mut st = sh.lock();
    let runner = runner_mut(&mut st, runner_id, credential)?;
    runner.online = false;
    Ok(())
}

/// The run of a queued job is cancelled before any runner took the job: the job completes as
/// `cancelled` (GitHub sends `workflow_job` completed with `conclusion: cancelled`).
pub fn cancel_queued(sh: &Shared, job_id: u64) -> Result<JobRec, RunnerError> {
    let mut st = sh.lock();
    let job = {
        let job = st
            .jobs
            .get_mut(&job_id)
            .filter(|j| j.status == "queued")
            .ok_or(RunnerError::NoJob)?;
        job.status = "completed";
        job.conclusion = Some("cancelled");
        job.completed_at = Some(now());
        job.clone()
    };
    job_event(sh, &mut st, &job, "completed");
    Ok(job)
}
