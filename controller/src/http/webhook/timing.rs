//! Queue-time metrics read off a delivery that says a job went in progress: how long the job
//! waited since it was first seen queued (`job_queued_to_in_progress_seconds`), and, when it
//! runs on one of our runners, how long that runner took from its start being sent to this
//! first claim (`runner_started_to_online_seconds`).
//!
//! Measured once per new delivery (a repeated delivery id is not recorded again), after the
//! delivery is committed, from two reads of the store; [`waits`] is the pure part. A job the
//! reconciler found in progress without a webhook is not measured (we never saw it go).

use crate::metrics::Metrics;
use crate::store::{JobRecord, JobState, RunnerRecord, StateStore, StoreError};

/// What a job that went in progress at `now_ms` waited: (queued → in progress, runner start →
/// its first claim), in seconds, each when known. `stored` is the job as now stored; `runner`
/// the runner it names, if it is ours.
pub fn waits(
    stored: &JobRecord,
    runner: Option<&RunnerRecord>,
    now_ms: i64,
) -> (Option<f64>, Option<f64>) {
    let secs = |from: i64| (now_ms - from).max(0) as f64 / 1000.0;
    let queued = stored.queued_ms.map(secs);
    let online = runner
        .filter(|r| r.owner == stored.owner && r.job_id == Some(stored.id))
        .map(|r| secs(r.created_ms));
    (queued, online)
}

/// Observes the waits of `job`, whose in-progress delivery was just recorded.
pub async fn job_in_progress(
    store: &dyn StateStore,
    metrics: &Metrics,
    job: &JobRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    if job.state != JobState::InProgress {
        return Ok(());
    }
    let Some(stored) = store.job(&job.owner, job.id).await? else {
        return Ok(());
    };
    let runner = match &job.runner_name {
        Some(name) => store.runner_by_name(name).await?,
        None => None,
    };
    let (queued, online) = waits(&stored, runner.as_ref(), now_ms);
    if let Some(s) = queued {
        metrics
            .queue
            .in_progress(stored.owner.as_str(), &stored.labels, s);
    }
    if let Some(s) = online {
        metrics.queue.online(stored.owner.as_str(), s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Owner, RunnerLifecycle};

    fn job(queued_ms: Option<i64>) -> JobRecord {
        JobRecord {
            id: 7,
            run_id: 1,
            owner: Owner::new("acme"),
            repo: "app".into(),
            name: "build".into(),
            labels: vec!["self-hosted".into()],
            state: JobState::InProgress,
            runner_name: Some("r".into()),
            conclusion: None,
            first_seen_ms: 0,
            queued_ms,
            updated_ms: 0,
        }
    }

    fn runner(owner: &str, job_id: Option<u64>) -> RunnerRecord {
        RunnerRecord {
            id: "r-1".into(),
            name: "r".into(),
            owner: owner.into(),
            repo: None,
            agent: "host-1".into(),
            arch: shared::arch::Arch::Amd64,
            labels: vec![],
            lifecycle: RunnerLifecycle::Running,
            for_job: Some(7),
            job_id,
            github_id: None,
            exit_code: None,
            reason: String::new(),
            created_ms: 4_000,
            updated_ms: 0,
        }
    }

    #[test]
    fn waits_are_measured_from_queued_and_from_the_runners_start() {
        for (stored, r, want) in [
            (
                job(Some(1_000)),
                Some(runner("Acme", Some(7))),
                (Some(9.0), Some(6.0)),
            ),
            // Not ours, or another owner's runner of that name, or one that took another job.
            (job(Some(1_000)), None, (Some(9.0), None)),
            (
                job(Some(1_000)),
                Some(runner("bob", Some(7))),
                (Some(9.0), None),
            ),
            (
                job(Some(1_000)),
                Some(runner("acme", Some(8))),
                (Some(9.0), None),
            ),
            // Never seen queued (first heard of in progress): no queue time.
            (job(None), Some(runner("acme", Some(7))), (None, Some(6.0))),
            // A clock that went backwards is 0, not negative.
            (job(Some(20_000)), None, (Some(0.0), None)),
        ] {
            assert_eq!(waits(&stored, r.as_ref(), 10_000), want, "{stored:?} {r:?}");
        }
    }
}
