//! What the store keeps: webhook deliveries, jobs, runners. Plain data, no I/O.

use serde::Serialize;
use shared::arch::Arch;
pub use shared::owner::Owner;

/// A job's state as GitHub reports it. It only moves forward:
/// `waiting → queued → in_progress → completed` (waiting means "needs approval", not demand yet;
/// an approved job's second `queued` delivery is the one move out of `waiting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Waiting,
    Queued,
    InProgress,
    Completed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => JobState::Waiting,
            "queued" => JobState::Queued,
            "in_progress" => JobState::InProgress,
            "completed" => JobState::Completed,
            _ => return None,
        })
    }

    /// Order of progress; a report may only raise it.
    pub fn rank(self) -> i64 {
        self as i64
    }
}

/// One GitHub Actions job the controller knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    /// GitHub's job id. Jobs are keyed by owner *and* id: a delivery verified with one
    /// owner's secret can never touch another owner's job, whatever id it names.
    pub id: u64,
    pub run_id: u64,
    pub owner: Owner,
    pub repo: String,
    pub name: String,
    /// `runs-on` labels, as GitHub sent them.
    pub labels: Vec<String>,
    pub state: JobState,
    /// The runner GitHub gave the job to (once in progress).
    pub runner_name: Option<String>,
    pub conclusion: Option<String>,
    /// When this controller first heard of the job (ms since the epoch).
    pub first_seen_ms: i64,
    /// When it first saw the job queued.
    pub queued_ms: Option<i64>,
    pub updated_ms: i64,
}

/// A webhook delivery as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// `X-GitHub-Delivery`; the same on redelivery.
    pub id: String,
    pub event: String,
    pub owner: Option<Owner>,
    pub received_ms: i64,
}

/// A workflow run whose jobs must be fetched from the REST API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    pub owner: Owner,
    pub repo: String,
    pub run_id: u64,
}

/// What a delivery changes, recorded atomically with the delivery itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEffect {
    /// A job was seen in some state.
    Job(JobRecord),
    /// A run was requested or started: fetch its jobs (level-triggered, retried until done).
    FetchRun(RunKey),
    /// Nothing to do (the reason is counted in metrics).
    Ignore,
}

/// Whether a delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
}

/// Where a runner the controller created is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerLifecycle {
    /// Decided and recorded; registration material not yet delivered to the agent.
    Requested,
    /// The agent was told to start it.
    Starting,
    /// Its container or pod runs; it may be idle or working.
    Running,
    /// Gone: exited, failed, stopped, or lost with its agent.
    Finished,
}

impl RunnerLifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerLifecycle::Requested => "requested",
            RunnerLifecycle::Starting => "starting",
            RunnerLifecycle::Running => "running",
            RunnerLifecycle::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "requested" => RunnerLifecycle::Requested,
            "starting" => RunnerLifecycle::Starting,
            "running" => RunnerLifecycle::Running,
            "finished" => RunnerLifecycle::Finished,
            _ => return None,
        })
    }

    pub fn is_active(self) -> bool {
        self != RunnerLifecycle::Finished
    }
}

/// A runner the controller created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerRecord {
    pub id: String,
    /// The name it registers with at GitHub.
    pub name: String,
    pub owner: Owner,
    /// The repository it registers to, for repository-level runners.
    pub repo: Option<String>,
    pub agent: String,
    pub arch: Arch,
    pub labels: Vec<String>,
    pub lifecycle: RunnerLifecycle,
    /// The job whose demand made the controller start it (GitHub may give it another).
    pub for_job: Option<u64>,
    /// The job it is running, once GitHub says so.
    pub job_id: Option<u64>,
    /// GitHub's runner id, from the JIT config.
    pub github_id: Option<u64>,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}
