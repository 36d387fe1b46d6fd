//! The queue as the scheduler reads it: queued jobs grouped into *classes* (owner, repository,
//! labels as GitHub sent them), each with its size and only its oldest few jobs.
//!
//! Why: a scheduling pass can serve at most an owner's free capacity plus its idle runners in
//! any class, and jobs of one class are served oldest first, so the jobs behind those wait for
//! the same reason as the last one looked at. Reading only the heads keeps a pass's cost
//! independent of how many jobs wait behind them (issue 15 §4: intake fell to 0.15× a bare
//! route at 39 000 queued jobs because every pass read, planned and published the whole queue).
//!
//! The SQLite store keeps the class sizes in a table maintained by triggers (`job_classes`) and
//! the heads in a partial index, so reading them costs O(classes × head), not O(queue). The
//! trait's default ([`heads_of`]) groups [`StateStore::queued_jobs`](super::StateStore) in
//! memory, so another store is correct before it is fast.

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;

use super::records::{JobRecord, Owner};
use super::sqlite::{JOB_COLUMNS, job_from_row};

/// How many of each class's oldest jobs to read, by owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadLimits {
    pub per_owner: HashMap<Owner, usize>,
    /// For owners not listed (jobs of an owner no longer configured).
    pub otherwise: usize,
}

impl HeadLimits {
    pub fn of(&self, owner: &Owner) -> usize {
        self.per_owner.get(owner).copied().unwrap_or(self.otherwise)
    }
}

/// The class of a queued job: what it asks for, and of whom.
pub type ClassKey = (Owner, String, Vec<String>);

/// One class of queued jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHead {
    pub owner: Owner,
    pub repo: String,
    /// As GitHub sent them (not lower-cased): jobs of one class store the same text.
    pub labels: Vec<String>,
    /// How many jobs of the class are queued.
    pub queued: u64,
    /// The oldest of them (by queued time, then id), at most the owner's limit.
    pub oldest: Vec<JobRecord>,
}

impl QueueHead {
    pub fn key(&self) -> ClassKey {
        (self.owner.clone(), self.repo.clone(), self.labels.clone())
    }
}

/// The classes of `queued` (jobs in state queued), each with its oldest `limits.of(owner)`.
pub fn heads_of(mut queued: Vec<JobRecord>, limits: &HeadLimits) -> Vec<QueueHead> {
    queued.sort_by_key(|j| (j.queued_ms, j.id));
    let mut classes: BTreeMap<ClassKey, QueueHead> = BTreeMap::new();
    for job in queued {
        let head = classes
            .entry((job.owner.clone(), job.repo.clone(), job.labels.clone()))
            .or_insert_with(|| QueueHead {
                owner: job.owner.clone(),
                repo: job.repo.clone(),
                labels: job.labels.clone(),
                queued: 0,
                oldest: Vec::new(),
            });
        head.queued += 1;
        if head.oldest.len() < limits.of(&job.owner) {
            head.oldest.push(job);
        }
    }
    classes.into_values().collect()
}

/// The SQLite reading of [`heads_of`]: class sizes from `job_classes`, heads from the partial
/// index `jobs_queue_heads`.
pub(super) fn read_heads(c: &Connection, limits: &HeadLimits) -> rusqlite::Result<Vec<QueueHead>> {
    let mut classes = c.prepare_cached(
        "SELECT owner, repo, labels, jobs FROM job_classes
         WHERE state = 'queued' AND jobs > 0 ORDER BY owner, repo, labels",
    )?;
    let rows: Vec<(String, String, String, i64)> = classes
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut oldest = c.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_queue_heads
         WHERE state = 'queued' AND owner = ?1 AND repo = ?2 AND labels = ?3
         ORDER BY queued_ms, id LIMIT ?4"
    ))?;
    let mut heads = Vec::with_capacity(rows.len());
    for (owner, repo, labels_text, queued) in rows {
        let owner = Owner::from(owner);
        let limit = limits.of(&owner);
        let jobs: Vec<JobRecord> = oldest
            .query_map(
                rusqlite::params![owner.as_str(), repo, labels_text, limit as i64],
                job_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        heads.push(QueueHead {
            labels: serde_json::from_str(&labels_text).unwrap_or_default(),
            owner,
            repo,
            queued: queued as u64,
            oldest: jobs,
        });
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobState;

    fn job(owner: &str, id: u64, repo: &str, labels: &[&str], queued_ms: i64) -> JobRecord {
        JobRecord {
            id,
            run_id: id,
            owner: Owner::new(owner),
            repo: repo.into(),
            name: "build".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            state: JobState::Queued,
            runner_name: None,
            conclusion: None,
            first_seen_ms: queued_ms,
            queued_ms: Some(queued_ms),
            updated_ms: queued_ms,
        }
    }

    #[test]
    fn each_class_keeps_its_size_and_only_its_oldest_jobs_up_to_its_owners_limit() {
        let jobs = vec![
            job("acme", 3, "app", &["linux"], 30),
            job("acme", 1, "app", &["linux"], 10),
            job("acme", 2, "app", &["linux"], 20),
            job("acme", 4, "app", &["linux", "gpu"], 5),
            job("globex", 5, "app", &["linux"], 1),
            job("globex", 6, "app", &["linux"], 2),
        ];
        let limits = HeadLimits {
            per_owner: HashMap::from([(Owner::new("acme"), 2)]),
            otherwise: 1,
        };
        let heads = heads_of(jobs, &limits);
        let summary: Vec<(String, Vec<String>, u64, Vec<u64>)> = heads
            .iter()
            .map(|h| {
                (
                    h.owner.to_string(),
                    h.labels.clone(),
                    h.queued,
                    h.oldest.iter().map(|j| j.id).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("acme".into(), vec!["linux".into()], 3, vec![1, 2]),
                (
                    "acme".into(),
                    vec!["linux".into(), "gpu".into()],
                    1,
                    vec![4]
                ),
                ("globex".into(), vec!["linux".into()], 2, vec![5]),
            ]
        );
    }
}
