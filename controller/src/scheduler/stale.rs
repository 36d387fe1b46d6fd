//! Stale jobs: a job the store has held as queued for longer than `STALE_JOB_AGE` is re-checked
//! at GitHub (`GET …/actions/jobs/{id}`), a few per activation, oldest first, each at most once
//! per `STALE_JOB_AGE`. A lost `in_progress`/`completed` webhook therefore holds a runner slot
//! for at most one re-check period. A job queued for more than 24 h is closed without asking:
//! GitHub cancels self-hosted jobs queued that long (GITHUB-API.md §4, "Limits").
//!
//! Which jobs are due is the pure [`due`]; the executor does the calls.

use std::collections::HashMap;

use shared::github::{GithubError, RepoRef};
use tracing::{info, warn};

use super::executor::{Scheduler, job_from_rest};
use super::planner::JobKey;
use crate::metrics::OutcomeLabels;
use crate::store::{JobRecord, JobState, RunKey, StoreError};

/// Re-checks per activation.
pub const PER_PASS: usize = 5;
/// GitHub cancels a job queued this long.
pub const CLOSE_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

fn queued_since(j: &JobRecord) -> i64 {
    j.queued_ms.unwrap_or(j.first_seen_ms)
}

/// The jobs to re-check now, oldest first, at most `per_pass`: queued longer than `age_ms` and
/// not checked within `age_ms` (`checked`: job id → last check).
pub fn due(
    jobs: &[JobRecord],
    checked: &HashMap<JobKey, i64>,
    now_ms: i64,
    age_ms: i64,
    per_pass: usize,
) -> Vec<JobKey> {
    let mut due: Vec<&JobRecord> = jobs
        .iter()
        .filter(|j| j.state == JobState::Queued && now_ms - queued_since(j) > age_ms)
        .filter(|j| {
            checked
                .get(&(j.owner.clone(), j.id))
                .is_none_or(|at| now_ms - at >= age_ms)
        })
        .collect();
    due.sort_by_key(|j| (queued_since(j), j.id));
    due.into_iter()
        .take(per_pass)
        .map(|j| (j.owner.clone(), j.id))
        .collect()
}

impl Scheduler {
    /// Re-checks the stale queued jobs; returns whether any changed state.
    pub(super) async fn recheck_stale(
        &self,
        jobs: &[JobRecord],
        now: i64,
    ) -> Result<bool, StoreError> {
        let age = self.config.containment.stale_job_age.as_millis() as i64;
        let checked = self
            .state
            .stale_checks(jobs.iter().map(|j| (j.owner.clone(), j.id)));
        let mut changed = false;
        for key in due(jobs, &checked, now, age, PER_PASS) {
            // By owner and id: another owner's job of the same id is not this one.
            let Some(job) = jobs.iter().find(|j| j.owner == key.0 && j.id == key.1) else {
                continue;
            };
            let id = job.id;
            self.state.mark_stale_checked(key, now);
            let outcome = if now - queued_since(job) > CLOSE_AFTER_MS {
                self.close(job, now).await?;
                changed = true;
                "closed".to_owned()
            } else {
                let repo = RepoRef::new(job.owner.clone(), job.repo.clone());
                match self.github.get_job(&repo, id).await {
                    Ok(rest) if rest.status == "queued" => "still_queued".to_owned(),
                    Ok(rest) => {
                        let status = rest.status.clone();
                        let key = RunKey {
                            owner: job.owner.clone(),
                            repo: job.repo.clone(),
                            run_id: job.run_id,
                        };
                        if let Some(record) = job_from_rest(&key, rest, now) {
                            info!(job = id, %status, "a stale queued job moved on at GitHub (its webhook was lost)");
                            self.store.upsert_jobs(vec![record]).await?;
                            changed = true;
                        }
                        status
                    }
                    // Gone at GitHub (the run was deleted): nobody will run it.
                    Err(e) if e.is_not_found() => {
                        self.close(job, now).await?;
                        changed = true;
                        "not_found".to_owned()
                    }
                    // The API budget keeps the quota for registrations: background checks wait.
                    Err(GithubError::Deferred { .. }) => "deferred".to_owned(),
                    Err(e) => {
                        warn!(job = id, error = %e, "cannot re-check a stale job; next period retries");
                        "error".to_owned()
                    }
                }
            };
            self.metrics
                .containment
                .stale_checks
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
        Ok(changed)
    }

    async fn close(&self, job: &JobRecord, now: i64) -> Result<(), StoreError> {
        info!(
            job = job.id,
            "closing a job that stays queued (GitHub cancels it after 24 h)"
        );
        let mut closed = job.clone();
        closed.state = JobState::Completed;
        closed.conclusion = Some("cancelled".into());
        closed.updated_ms = now;
        self.store.upsert_jobs(vec![closed]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::owner::Owner;

    fn job(id: u64, queued_ms: i64) -> JobRecord {
        JobRecord {
            id,
            run_id: 1,
            owner: "acme".into(),
            repo: "app".into(),
            name: "build".into(),
            labels: vec![],
            state: JobState::Queued,
            runner_name: None,
            conclusion: None,
            first_seen_ms: queued_ms,
            queued_ms: Some(queued_ms),
            updated_ms: queued_ms,
        }
    }

    #[test]
    fn the_oldest_stale_jobs_are_due_a_few_at_a_time_once_per_period() {
        let jobs: Vec<JobRecord> = (1..=8).map(|i| job(i, 100 * i as i64)).collect();
        let none = HashMap::new();
        // At 1_000 with an age of 450: jobs queued before 550 (ids 1..=5) are stale.
        let ids = |keys: Vec<JobKey>| keys.into_iter().map(|(_, id)| id).collect::<Vec<_>>();
        assert_eq!(ids(due(&jobs, &none, 1_000, 450, 3)), vec![1, 2, 3]);
        assert_eq!(ids(due(&jobs, &none, 1_000, 450, 10)), vec![1, 2, 3, 4, 5]);
        let acme = |id| (Owner::new("acme"), id);
        let checked = HashMap::from([(acme(1), 900), (acme(2), 500)]);
        assert_eq!(
            ids(due(&jobs, &checked, 1_000, 450, 3)),
            vec![2, 3, 4],
            "1 was checked within the period, 2 before it"
        );
        // Another owner's check of the same id does not count for acme's job.
        let other = HashMap::from([((Owner::new("globex"), 1), 900)]);
        assert_eq!(ids(due(&jobs, &other, 1_000, 450, 1)), vec![1]);
    }

    #[test]
    fn a_fresh_job_is_not_due() {
        assert!(due(&[job(1, 900)], &HashMap::new(), 1_000, 450, 5).is_empty());
    }
}
