//! Reading GitHub's webhook payloads: who they are for, and what they change.
//!
//! Parsing is lenient where GitHub's payloads vary (every field but the core ones is optional;
//! see `workflow_job.queued.self-hosted.json`). Decisions follow `action`, except that a
//! `queued` action whose job says `status: waiting` (a job behind a deployment approval,
//! `workflow_job.queued.with-deployment.json`) is not demand yet: it is recorded as waiting, and
//! the `queued` delivery GitHub sends after approval moves it on. Labels are taken as GitHub
//! sends them, one string each (a label may contain commas). Pure functions, tested on GitHub's
//! fixtures.

use serde::Deserialize;

use crate::config::OwnerConfig;
use crate::store::{JobRecord, JobState, Owner, RunKey, WebhookEffect};

#[derive(Debug, Deserialize)]
struct Login {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Repository {
    name: String,
    owner: Login,
}

/// The part of every payload that says whose it is.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    organization: Option<Login>,
}

impl Envelope {
    pub fn parse(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// The owner the delivery is for: the repository's owner, else the organisation.
    pub fn owner(&self) -> Option<&str> {
        self.repository
            .as_ref()
            .map(|r| r.owner.login.as_str())
            .or(self.organization.as_ref().map(|o| o.login.as_str()))
    }

    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }
}

#[derive(Debug, Deserialize)]
struct WorkflowJob {
    id: u64,
    run_id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    runner_name: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WorkflowJobEvent {
    action: String,
    workflow_job: WorkflowJob,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct WorkflowRun {
    id: u64,
}

#[derive(Debug, Deserialize)]
struct WorkflowRunEvent {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repository,
}

/// Why a delivery changes nothing; counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// An event we do not act on (push, installation, ...).
    OtherEvent,
    /// An action of a known event we do not act on (e.g. `workflow_run` completed).
    OtherAction,
    /// The repository is outside the owner's `REPO_NAME` / `ALL_REPOS`.
    RepositoryNotServed,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::OtherEvent => "ignored_event",
            Ignored::OtherAction => "ignored_action",
            Ignored::RepositoryNotServed => "repository_not_served",
        }
    }
}

/// What a delivery means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    Ping,
    Effect(WebhookEffect),
    Ignored(Ignored),
}

/// A verified payload parsed once for the handler: whose it is ([`Read::envelope`]) and, for
/// a well-formed `workflow_job` delivery (the one GitHub sends for every job), the job, so
/// [`Read::interpret`] does not parse the body again (issue 15 §4). Any other payload is
/// interpreted from its bytes, as [`interpret`] does.
pub struct Read<'a> {
    bytes: &'a [u8],
    envelope: Envelope,
    job: Option<WorkflowJob>,
}

/// A `workflow_job` payload read in one pass; every field optional, so that a payload this
/// does not fit is read the usual way and fails (or not) exactly as it would have.
#[derive(Debug, Deserialize)]
struct JobPayload {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    organization: Option<Login>,
    #[serde(default)]
    workflow_job: Option<WorkflowJob>,
}

impl<'a> Read<'a> {
    pub fn parse(event: &str, bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        if event == "workflow_job"
            && let Ok(JobPayload {
                action: Some(action),
                repository: Some(repository),
                organization,
                workflow_job: Some(job),
            }) = serde_json::from_slice(bytes)
        {
            return Ok(Self {
                bytes,
                envelope: Envelope {
                    action: Some(action),
                    repository: Some(repository),
                    organization,
                },
                job: Some(job),
            });
        }
        Ok(Self {
            bytes,
            envelope: Envelope::parse(bytes)?,
            job: None,
        })
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// What the payload means for `owner`: the same as [`interpret`] of its bytes.
    pub fn interpret(
        self,
        event: &str,
        owner: &OwnerConfig,
        now_ms: i64,
    ) -> Result<Meaning, serde_json::Error> {
        match (event, self.job, self.envelope) {
            (
                "workflow_job",
                Some(job),
                Envelope {
                    action: Some(action),
                    repository: Some(repository),
                    ..
                },
            ) => Ok(job_meaning(
                WorkflowJobEvent {
                    action,
                    workflow_job: job,
                    repository,
                },
                owner,
                now_ms,
            )),
            _ => interpret(event, self.bytes, owner, now_ms),
        }
    }
}

/// Interprets a verified payload of `event` for `owner`.
pub fn interpret(
    event: &str,
    payload: &[u8],
    owner: &OwnerConfig,
    now_ms: i64,
) -> Result<Meaning, serde_json::Error> {
    match event {
        "ping" => Ok(Meaning::Ping),
        "workflow_job" => Ok(job_meaning(serde_json::from_slice(payload)?, owner, now_ms)),
        "workflow_run" => {
            let ev: WorkflowRunEvent = serde_json::from_slice(payload)?;
            if !owner.serves_repo(&ev.repository.name) {
                return Ok(Meaning::Ignored(Ignored::RepositoryNotServed));
            }
            match ev.action.as_str() {
                // A run's jobs carry the labels; a run that is already going may queue more later.
                "requested" | "in_progress" => {
                    Ok(Meaning::Effect(WebhookEffect::FetchRun(RunKey {
                        // RunKey stays a plain string (the reconciler builds it too).
                        owner: Owner::new(&ev.repository.owner.login),
                        repo: ev.repository.name,
                        run_id: ev.workflow_run.id,
                    })))
                }
                _ => Ok(Meaning::Ignored(Ignored::OtherAction)),
            }
        }
        _ => Ok(Meaning::Ignored(Ignored::OtherEvent)),
    }
}

/// What a `workflow_job` delivery means for `owner`.
fn job_meaning(ev: WorkflowJobEvent, owner: &OwnerConfig, now_ms: i64) -> Meaning {
    if !owner.serves_repo(&ev.repository.name) {
        return Meaning::Ignored(Ignored::RepositoryNotServed);
    }
    let waiting = ev.workflow_job.status.as_deref() == Some("waiting");
    let state = match ev.action.as_str() {
        "waiting" => JobState::Waiting,
        "queued" if waiting => JobState::Waiting,
        "queued" => JobState::Queued,
        "in_progress" => JobState::InProgress,
        "completed" => JobState::Completed,
        _ => return Meaning::Ignored(Ignored::OtherAction),
    };
    let job = ev.workflow_job;
    Meaning::Effect(WebhookEffect::Job(JobRecord {
        id: job.id,
        run_id: job.run_id,
        owner: Owner::new(&ev.repository.owner.login),
        repo: ev.repository.name,
        name: job.name.unwrap_or_default(),
        labels: job.labels,
        state,
        runner_name: job.runner_name.filter(|n| !n.is_empty()),
        conclusion: job.conclusion,
        first_seen_ms: now_ms,
        queued_ms: (state == JobState::Queued).then_some(now_ms),
        updated_ms: now_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OwnerAuth, Secret};

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/src/github_sim/fixtures/webhooks");
        std::fs::read(dir.join(name)).unwrap()
    }

    fn owner(all_repos: bool, repo: Option<&str>) -> OwnerConfig {
        OwnerConfig {
            name: "x".into(),
            auth: OwnerAuth::Token(Secret::new("t")),
            repo_name: repo.map(str::to_owned),
            all_repos,
            webhook_secret: None,
            max_runners: 5,
            labels: vec![],
            runner_group: None,
            warm: Default::default(),
        }
    }

    fn job_of(meaning: Meaning) -> JobRecord {
        match meaning {
            Meaning::Effect(WebhookEffect::Job(job)) => job,
            other => panic!("not a job: {other:?}"),
        }
    }

    #[test]
    fn a_queued_self_hosted_job_becomes_demand() {
        let body = fixture("workflow_job.queued.self-hosted.json");
        let env = Envelope::parse(&body).unwrap();
        assert_eq!(env.owner(), Some("philips-labs"));
        let job = job_of(interpret("workflow_job", &body, &owner(true, None), 42).unwrap());
        assert_eq!(job.id, 3169272040);
        assert_eq!(job.run_id, 1068820843);
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.labels, vec!["self-hosted"]);
        assert_eq!(job.owner.as_str(), "philips-labs");
        assert_eq!(job.queued_ms, Some(42));
    }

    #[test]
    fn a_queued_job_waiting_for_approval_is_not_demand() {
        // `queued` action whose job status says waiting: a deployment approval holds it.
        let body = fixture("workflow_job.queued.with-deployment.json");
        let job = job_of(interpret("workflow_job", &body, &owner(true, None), 1).unwrap());
        assert_eq!(job.state, JobState::Waiting);
        assert_eq!(job.queued_ms, None);
        // After approval GitHub sends `queued` again, with status queued.
        let approved = String::from_utf8(body)
            .unwrap()
            .replace("\"status\": \"waiting\"", "\"status\": \"queued\"");
        assert_eq!(
            job_of(interpret("workflow_job", approved.as_bytes(), &owner(true, None), 2).unwrap())
                .state,
            JobState::Queued
        );
        let body = fixture("workflow_job.waiting.json");
        assert_eq!(
            job_of(interpret("workflow_job", &body, &owner(true, None), 1).unwrap()).state,
            JobState::Waiting
        );
    }

    #[test]
    fn progress_and_completion_carry_the_runner_and_conclusion() {
        let body = fixture("workflow_job.in_progress.json");
        let job = job_of(interpret("workflow_job", &body, &owner(true, None), 1).unwrap());
        assert_eq!(job.state, JobState::InProgress);
        assert!(job.runner_name.is_some());
        let body = fixture("workflow_job.completed.failure.json");
        let job = job_of(interpret("workflow_job", &body, &owner(true, None), 1).unwrap());
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(job.conclusion.as_deref(), Some("failure"));
    }

    #[test]
    fn runs_requested_or_in_progress_ask_for_their_jobs() {
        for file in [
            "workflow_run.requested.json",
            "workflow_run.in_progress.json",
        ] {
            let body = fixture(file);
            let meaning = interpret("workflow_run", &body, &owner(true, None), 1).unwrap();
            assert!(
                matches!(meaning, Meaning::Effect(WebhookEffect::FetchRun(_))),
                "{file}: {meaning:?}"
            );
        }
        let body = fixture("workflow_run.completed.json");
        assert_eq!(
            interpret("workflow_run", &body, &owner(true, None), 1).unwrap(),
            Meaning::Ignored(Ignored::OtherAction)
        );
    }

    #[test]
    fn repositories_outside_the_configuration_are_ignored() {
        let body = fixture("workflow_job.queued.self-hosted.json");
        assert_eq!(
            interpret(
                "workflow_job",
                &body,
                &owner(false, Some("another-repo")),
                1
            )
            .unwrap(),
            Meaning::Ignored(Ignored::RepositoryNotServed)
        );
        let job = job_of(
            interpret(
                "workflow_job",
                &body,
                &owner(false, Some("Terraform-AWS-GitHub-Runner")),
                1,
            )
            .unwrap(),
        );
        assert_eq!(job.repo, "terraform-aws-github-runner");
    }

    #[test]
    fn other_events_are_ignored_and_ping_is_recognised() {
        assert_eq!(
            interpret("push", &fixture("push.json"), &owner(true, None), 1).unwrap(),
            Meaning::Ignored(Ignored::OtherEvent)
        );
        assert_eq!(
            interpret("ping", &fixture("ping.repo.json"), &owner(true, None), 1).unwrap(),
            Meaning::Ping
        );
        assert!(
            interpret(
                "workflow_job",
                b"{\"action\":\"queued\"}",
                &owner(true, None),
                1
            )
            .is_err()
        );
    }
}
