//! A job's timeline, kept in the store so it outlives a controller restart: the webhooks that
//! moved the job (with their delivery ids), the scheduler's explanations, its runner planned,
//! started, taking it and ending (issue 14 §1 "Job detail", §2 `gha-controller job ID`).
//!
//! Who writes: the webhook intake adds one entry per delivery that changes a job, in the same
//! transaction as the change ([`of_webhook`]); the scheduler's executor its decisions about the
//! job's runner and the runner's state changes (`scheduler::journal`); the dashboard's observer
//! the scheduler's explanations of why the job waits, when they change. Readers
//! are `GET /api/v1/jobs/{id}` and the dashboard's job page.
//!
//! Bounded: each job keeps its newest [`MAX_PER_JOB`] entries (older ones are deleted as new
//! ones arrive), and a job's entries go when retention forgets the job ([`super::prune_periodically`]).
//! The SQL for both backends lives here, next to the table it reads and writes.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::records::{JobRecord, NewDelivery, Owner};

/// Entries kept per job; past it the oldest go first.
pub const MAX_PER_JOB: i64 = 64;

/// One line of a job's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    #[serde(skip)]
    pub owner: Owner,
    #[serde(skip)]
    pub job: u64,
    pub at_ms: i64,
    /// `webhook`, `job`, `decision` or `runner`.
    pub kind: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The `X-GitHub-Delivery` of a webhook entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

/// The entry for a delivery that brings `job` (its new state) to the store.
pub fn of_webhook(delivery: &NewDelivery, job: &JobRecord) -> TimelineEntry {
    let mut message = format!(
        "webhook {}: job {}",
        delivery.event,
        job.state.as_str().replace('_', " ")
    );
    if let Some(runner) = &job.runner_name {
        message.push_str(&format!(" on {runner}"));
    }
    if let Some(conclusion) = &job.conclusion {
        message.push_str(&format!(" ({conclusion})"));
    }
    TimelineEntry {
        owner: job.owner.clone(),
        job: job.id,
        at_ms: delivery.received_ms,
        kind: "webhook".into(),
        message,
        runner: job.runner_name.clone(),
        agent: None,
        delivery: Some(delivery.id.clone()),
    }
}

impl TimelineEntry {
    /// An entry about `owner`'s job `job`, of `kind` (see the field).
    pub fn new(owner: &Owner, job: u64, at_ms: i64, kind: &str, message: String) -> Self {
        Self {
            owner: owner.clone(),
            job,
            at_ms,
            kind: kind.into(),
            message,
            runner: None,
            agent: None,
            delivery: None,
        }
    }
}

/// The timeline as shown: the job's stored times (first heard of, queued, last change) merged
/// with its stored `entries`, oldest first (entries of the same time keep their order).
pub fn merged(job: &JobRecord, entries: Vec<TimelineEntry>) -> Vec<TimelineEntry> {
    let mut out = vec![TimelineEntry::new(
        &job.owner,
        job.id,
        job.first_seen_ms,
        "job",
        "first heard of (webhook or reconciler)".into(),
    )];
    if let Some(q) = job.queued_ms {
        out.push(TimelineEntry::new(
            &job.owner,
            job.id,
            q,
            "job",
            "queued".into(),
        ));
    }
    out.extend(entries);
    if job.state != super::JobState::Queued && job.updated_ms > job.first_seen_ms {
        out.push(TimelineEntry::new(
            &job.owner,
            job.id,
            job.updated_ms,
            "job",
            format!("last reported {}", job.state.as_str()),
        ));
    }
    out.sort_by_key(|e| e.at_ms);
    out
}

/// The delivery id of the newest webhook entry, if any.
pub fn last_delivery(entries: &[TimelineEntry]) -> Option<String> {
    entries.iter().rev().find_map(|e| e.delivery.clone())
}

/// SQLite: table `job_timeline` (migration 5).
pub(super) const SQLITE_MIGRATION: &str = "CREATE TABLE job_timeline (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        runner TEXT,
        agent TEXT,
        delivery TEXT
    );
    CREATE INDEX job_timeline_by_job ON job_timeline (owner, job_id, seq);";

/// PostgreSQL: the same table (migration 2).
pub(super) const PG_MIGRATION: &str = r#"CREATE TABLE job_timeline (
        seq BIGSERIAL PRIMARY KEY,
        owner TEXT COLLATE "C" NOT NULL,
        job_id BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        runner TEXT,
        agent TEXT,
        delivery TEXT
    );
    CREATE INDEX job_timeline_by_job ON job_timeline (owner, job_id, seq);"#;

const INSERT: &str =
    "INSERT INTO job_timeline (owner, job_id, at_ms, kind, message, runner, agent, delivery)";
/// SQLite: the newest of a job's entries beyond its newest [`MAX_PER_JOB`], if it has that many.
/// Read before deleting: nearly every append finds none, and a read is cheaper than a `DELETE`
/// that deletes nothing (issue 15 §4).
const OLDEST_KEPT_SQLITE: &str = "SELECT seq FROM job_timeline WHERE owner = ?1 AND job_id = ?2
        ORDER BY seq DESC LIMIT 1 OFFSET ?3";
/// SQLite: deletes a job's entries up to this `seq`.
const TRIM_SQLITE: &str = "DELETE FROM job_timeline WHERE owner = ?1 AND job_id = ?2 AND seq <= ?3";
const TRIM_PG: &str = "DELETE FROM job_timeline WHERE owner = $1 AND job_id = $2 AND seq <= (
        SELECT seq FROM job_timeline WHERE owner = $1 AND job_id = $2
        ORDER BY seq DESC LIMIT 1 OFFSET $3)";
/// Forgets the entries of jobs the store no longer has (run after retention deleted jobs).
pub(super) const PRUNE: &str = "DELETE FROM job_timeline WHERE NOT EXISTS (
        SELECT 1 FROM jobs WHERE jobs.owner = job_timeline.owner AND jobs.id = job_timeline.job_id)";
const SELECT: &str = "SELECT at_ms, kind, message, runner, agent, delivery FROM job_timeline";

pub(super) fn sqlite_append(conn: &Connection, e: &TimelineEntry) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!("{INSERT} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))?
        .execute(params![
            e.owner.as_str(),
            e.job as i64,
            e.at_ms,
            e.kind,
            e.message,
            e.runner,
            e.agent,
            e.delivery
        ])?;
    let beyond: Option<i64> = conn
        .prepare_cached(OLDEST_KEPT_SQLITE)?
        .query_row(params![e.owner.as_str(), e.job as i64, MAX_PER_JOB], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(seq) = beyond {
        conn.prepare_cached(TRIM_SQLITE)?
            .execute(params![e.owner.as_str(), e.job as i64, seq])?;
    }
    Ok(())
}

pub(super) fn sqlite_read(
    conn: &Connection,
    owner: &Owner,
    id: u64,
) -> rusqlite::Result<Vec<TimelineEntry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE owner = ?1 AND job_id = ?2 ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![owner.as_str(), id as i64], |r| {
        Ok(TimelineEntry {
            owner: owner.clone(),
            job: id,
            at_ms: r.get(0)?,
            kind: r.get(1)?,
            message: r.get(2)?,
            runner: r.get(3)?,
            agent: r.get(4)?,
            delivery: r.get(5)?,
        })
    })?;
    rows.collect()
}

pub(super) async fn pg_append(
    tx: &deadpool_postgres::Transaction<'_>,
    e: &TimelineEntry,
) -> Result<(), tokio_postgres::Error> {
    let insert = tx
        .prepare_cached(&format!("{INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
        .await?;
    tx.execute(
        &insert,
        &[
            &e.owner.as_str(),
            &(e.job as i64),
            &e.at_ms,
            &e.kind,
            &e.message,
            &e.runner,
            &e.agent,
            &e.delivery,
        ],
    )
    .await?;
    let trim = tx.prepare_cached(TRIM_PG).await?;
    tx.execute(&trim, &[&e.owner.as_str(), &(e.job as i64), &MAX_PER_JOB])
        .await?;
    Ok(())
}

pub(super) fn pg_select() -> String {
    format!("{SELECT} WHERE owner = $1 AND job_id = $2 ORDER BY seq")
}

pub(super) fn pg_row(owner: &Owner, id: u64, r: &tokio_postgres::Row) -> TimelineEntry {
    TimelineEntry {
        owner: owner.clone(),
        job: id,
        at_ms: r.get(0),
        kind: r.get(1),
        message: r.get(2),
        runner: r.get(3),
        agent: r.get(4),
        delivery: r.get(5),
    }
}
