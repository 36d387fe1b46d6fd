//! The SQLite implementation of [`StateStore`](super::StateStore), in `STATE_DIR/gha-scaler.db`.
//!
//! - WAL mode with `synchronous=FULL`: a write answered OK survives `kill -9` and power loss.
//! - One writer thread owns the write connection. Writes queue on a bounded channel and are
//!   committed in groups: everything waiting is applied in one transaction, so a burst of
//!   webhooks pays one fsync per group, not one per delivery, and one bad operation still fails
//!   alone ([`group`]). A full queue is refused (`StoreError::Busy`).
//! - Reads use their own connection (WAL readers never block the writer).
//! - Schema changes are numbered migrations applied at open (`PRAGMA user_version`); a database
//!   of an older build is migrated in place, one of a newer build is refused.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use self::group::commit_group_with;
use super::connection_thread::ConnectionThread;
use super::records::*;
use super::{JoinRefusal, NewJoinToken, Pruned, StoreError};

mod group;

/// The database file inside `STATE_DIR`.
pub const DB_FILE: &str = "gha-scaler.db";

/// Writes waiting for the writer thread; past this the store answers `Busy`.
const WRITE_QUEUE: usize = 8192;
/// Reads waiting for the reader connection at most (a full queue is `Busy`).
const READ_QUEUE: usize = 4096;
/// The most operations committed together.
const MAX_GROUP: usize = 1024;

/// Numbered schema migrations; index + 1 is the `user_version` after each.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: one-time join tokens for agent enrollment. Only a hash of the secret is kept.
    "CREATE TABLE join_tokens (
        id TEXT PRIMARY KEY,
        secret_sha256 BLOB NOT NULL,
        agent_name TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        used_by TEXT
    );",
    // 2: webhook deliveries, jobs, runs to fetch, runners.
    "CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        event TEXT NOT NULL,
        owner TEXT,
        received_ms INTEGER NOT NULL
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        owner TEXT NOT NULL,
        repo TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        state_rank INTEGER NOT NULL,
        runner_name TEXT,
        conclusion TEXT,
        first_seen_ms INTEGER NOT NULL,
        queued_ms INTEGER,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs (state_rank, queued_ms);
    CREATE TABLE run_fetches (
        owner TEXT NOT NULL,
        repo TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        requested_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY (owner, repo, run_id)
    );
    CREATE TABLE runners (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        repo TEXT,
        agent TEXT NOT NULL,
        arch TEXT NOT NULL,
        labels TEXT NOT NULL,
        lifecycle TEXT NOT NULL,
        for_job INTEGER,
        job_id INTEGER,
        github_id INTEGER,
        exit_code INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX runners_by_lifecycle ON runners (lifecycle);",
    // 3: jobs keyed by owner and GitHub's id (an owner can never reach another owner's job);
    // indexes for "does this owner send workflow_job deliveries" and for retention pruning.
    // Existing rows keep their data; owners are lower-cased as `Owner` stores them.
    "CREATE TABLE jobs_v3 (
        owner TEXT NOT NULL,
        id INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        repo TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        state_rank INTEGER NOT NULL,
        runner_name TEXT,
        conclusion TEXT,
        first_seen_ms INTEGER NOT NULL,
        queued_ms INTEGER,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (owner, id)
    );
    INSERT INTO jobs_v3 (owner, id, run_id, repo, name, labels, state, state_rank, runner_name,
                         conclusion, first_seen_ms, queued_ms, updated_ms)
        SELECT lower(owner), id, run_id, repo, name, labels, state, state_rank, runner_name,
               conclusion, first_seen_ms, queued_ms, updated_ms FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v3 RENAME TO jobs;
    CREATE INDEX jobs_by_state ON jobs (state_rank, queued_ms);
    CREATE INDEX jobs_by_id ON jobs (id);
    CREATE INDEX jobs_by_update ON jobs (state_rank, updated_ms);
    CREATE INDEX deliveries_by_owner_event ON deliveries (owner, event, received_ms);
    CREATE INDEX deliveries_by_time ON deliveries (received_ms);",
    // 4: the queue by class (owner, repository, labels), so a scheduling pass reads each class's
    // size and oldest jobs without scanning the queue (see `queue`). Sizes per class and state
    // are kept by triggers on every insert, change and delete of a job, whoever makes it.
    "CREATE TABLE job_classes (
        owner TEXT NOT NULL,
        repo TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        jobs INTEGER NOT NULL,
        PRIMARY KEY (owner, repo, labels, state)
    );
    INSERT INTO job_classes (owner, repo, labels, state, jobs)
        SELECT owner, repo, labels, state, COUNT(*) FROM jobs GROUP BY owner, repo, labels, state;
    CREATE TRIGGER job_classes_on_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_classes (owner, repo, labels, state, jobs)
            VALUES (NEW.owner, NEW.repo, NEW.labels, NEW.state, 1)
            ON CONFLICT (owner, repo, labels, state) DO UPDATE SET jobs = jobs + 1;
    END;
    CREATE TRIGGER job_classes_on_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_classes SET jobs = jobs - 1
            WHERE owner = OLD.owner AND repo = OLD.repo AND labels = OLD.labels AND state = OLD.state;
        DELETE FROM job_classes
            WHERE owner = OLD.owner AND repo = OLD.repo AND labels = OLD.labels AND state = OLD.state
              AND jobs <= 0;
    END;
    CREATE TRIGGER job_classes_on_update AFTER UPDATE OF owner, repo, labels, state ON jobs
    WHEN OLD.owner IS NOT NEW.owner OR OLD.repo IS NOT NEW.repo OR OLD.labels IS NOT NEW.labels
         OR OLD.state IS NOT NEW.state
    BEGIN
        UPDATE job_classes SET jobs = jobs - 1
            WHERE owner = OLD.owner AND repo = OLD.repo AND labels = OLD.labels AND state = OLD.state;
        DELETE FROM job_classes
            WHERE owner = OLD.owner AND repo = OLD.repo AND labels = OLD.labels AND state = OLD.state
              AND jobs <= 0;
        INSERT INTO job_classes (owner, repo, labels, state, jobs)
            VALUES (NEW.owner, NEW.repo, NEW.labels, NEW.state, 1)
            ON CONFLICT (owner, repo, labels, state) DO UPDATE SET jobs = jobs + 1;
    END;
    CREATE INDEX jobs_queue_heads ON jobs (owner, repo, labels, queued_ms, id)
        WHERE state = 'queued';",
    // 5: each job's bounded timeline (see `timeline`).
    super::timeline::SQLITE_MIGRATION,
    // 6: a scheduling pass reads the active runners, oldest first, through their own index: the
    // condition `lifecycle != 'finished'` could use no index, so every pass read every runner
    // that ever existed. Retention forgets finished runners by `updated_ms`.
    RUNNERS_MIGRATION,
];

/// Migration 6 of SQLite, 4 of PostgreSQL (the same text: partial indexes exist in both).
pub(super) const RUNNERS_MIGRATION: &str = "
    CREATE INDEX runners_active ON runners (created_ms) WHERE lifecycle != 'finished';
    CREATE INDEX runners_finished ON runners (updated_ms) WHERE lifecycle = 'finished';";

/// The active runners, oldest first, read through `runners_active` (test below).
pub(super) fn active_runners_sql() -> String {
    format!(
        "SELECT {RUNNER_COLUMNS} FROM runners WHERE lifecycle != 'finished' ORDER BY created_ms"
    )
}

/// Retention's statement for finished runners (`?1`/`$1`: before, ms).
pub(super) fn prune_runners_sql(param: &str) -> String {
    format!("DELETE FROM runners WHERE lifecycle = 'finished' AND updated_ms < {param}")
}

/// A write and where its answer goes.
pub(super) enum WriteOp {
    Webhook(NewDelivery, WebhookEffect),
    UpsertJobs(Vec<JobRecord>),
    RequestRunFetch(RunKey, i64),
    FinishRunFetch(RunKey),
    FailRunFetch(RunKey, String),
    UpsertRunner(RunnerRecord),
    AppendTimeline(Vec<super::timeline::TimelineEntry>),
    /// Forgets deliveries received, and finished jobs and runners last updated, before this (ms).
    Prune(i64),
    InsertJoinToken(NewJoinToken, i64),
    TakeJoinToken {
        id: String,
        secret: String,
        now: i64,
        used_by: String,
    },
}

pub(super) enum WriteOutcome {
    Recorded(Recorded),
    JoinToken(Result<Option<String>, JoinRefusal>),
    Pruned(Pruned),
    Done,
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// The SQLite store. Clones share the writer thread and the read connection.
#[derive(Clone)]
pub struct SqliteStore {
    // The writer thread holds the receiver and exits when every clone is dropped.
    writes: mpsc::Sender<WriteRequest>,
    // Reads only, on the reader connection's own thread (see `connection_thread`).
    reader: ConnectionThread,
}

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    shared::private_files::create_private_file(path).map_err(|source| StoreError::CreateDir {
        path: path.to_owned(),
        source,
    })?;
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Temporary files in memory. A group's savepoints and a statement that changes many rows
    // keep a statement journal, which SQLite spills to a file in a temporary directory past
    // 64 KiB (https://www.sqlite.org/tempfiles.html). The image (FROM scratch, non-root) may
    // have no writable /tmp, a hardened host a read-only one: the spill then fails with
    // SQLITE_IOERR_GETTEMPPATH ("VFS is unable to determine a suitable directory for
    // temporary files") and ends the whole transaction; seen in the multi-host test after
    // every controller restart, when the backlog makes large groups. A group is bounded
    // (MAX_GROUP operations), so is the memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `state_dir`, migrates it and starts the writer.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        ensure_state_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let mut writer = open_connection(&path)?;
        migrate(&mut writer, &path)?;
        let reader = open_connection(&path)?;
        let reader =
            ConnectionThread::start("store-reader", reader, READ_QUEUE).map_err(|source| {
                StoreError::CreateDir {
                    path: path.clone(),
                    source,
                }
            })?;
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|source| StoreError::CreateDir { path, source })?;
        Ok(Self { writes, reader })
    }

    pub(super) async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .try_send(WriteRequest { op, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.reader
            .run(move |conn| f(conn).map_err(StoreError::from))
            .await
    }
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriteRequest>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcomes = commit_group(&mut conn, &batch);
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have given up waiting; the write stands either way.
            let _ = request.reply.send(outcome);
        }
    }
}

fn commit_group(
    conn: &mut Connection,
    batch: &[WriteRequest],
) -> Vec<Result<WriteOutcome, StoreError>> {
    commit_group_with(conn, batch, |conn, request| apply(conn, &request.op))
}

fn json(labels: &[String]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

fn apply(conn: &Connection, op: &WriteOp) -> rusqlite::Result<WriteOutcome> {
    match op {
        WriteOp::Webhook(delivery, effect) => {
            // Cached: each delivery would otherwise parse and compile the statement (and the
            // job triggers) again, the largest cost of intake in a profile (issue 15 §4).
            let inserted = conn.prepare_cached(
                "INSERT OR IGNORE INTO deliveries (id, event, owner, received_ms) VALUES (?1, ?2, ?3, ?4)",
            )?.execute(params![
                    delivery.id,
                    delivery.event,
                    delivery.owner.as_ref().map(Owner::as_str),
                    delivery.received_ms
                ],
            )?;
            if inserted == 0 {
                return Ok(WriteOutcome::Recorded(Recorded::Duplicate));
            }
            match effect {
                WebhookEffect::Job(job) => {
                    upsert_job(conn, job)?;
                    super::timeline::sqlite_append(
                        conn,
                        &super::timeline::of_webhook(delivery, job),
                    )?;
                }
                WebhookEffect::FetchRun(key) => {
                    conn.execute(
                        "INSERT OR IGNORE INTO run_fetches (owner, repo, run_id, requested_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![key.owner.as_str(), key.repo, key.run_id as i64, delivery.received_ms],
                    )?;
                }
                WebhookEffect::Ignore => {}
            }
            Ok(WriteOutcome::Recorded(Recorded::New))
        }
        WriteOp::UpsertJobs(jobs) => {
            for job in jobs {
                upsert_job(conn, job)?;
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::RequestRunFetch(key, now) => {
            conn.execute(
                "INSERT OR IGNORE INTO run_fetches (owner, repo, run_id, requested_ms) VALUES (?1, ?2, ?3, ?4)",
                params![key.owner.as_str(), key.repo, key.run_id as i64, now],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::FinishRunFetch(key) => {
            conn.execute(
                "DELETE FROM run_fetches WHERE owner = ?1 AND repo = ?2 AND run_id = ?3",
                params![key.owner.as_str(), key.repo, key.run_id as i64],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::FailRunFetch(key, error) => {
            conn.execute(
                "UPDATE run_fetches SET attempts = attempts + 1, last_error = ?4
                 WHERE owner = ?1 AND repo = ?2 AND run_id = ?3",
                params![key.owner.as_str(), key.repo, key.run_id as i64, error],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::UpsertRunner(r) => {
            conn.execute(
                "INSERT INTO runners (id, name, owner, repo, agent, arch, labels, lifecycle, for_job, job_id,
                                      github_id, exit_code, reason, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (id) DO UPDATE SET
                    lifecycle = excluded.lifecycle, job_id = COALESCE(excluded.job_id, runners.job_id), github_id = excluded.github_id,
                    exit_code = excluded.exit_code, reason = excluded.reason, updated_ms = excluded.updated_ms",
                params![
                    r.id,
                    r.name,
                    r.owner.as_str(),
                    r.repo,
                    r.agent,
                    r.arch.as_str(),
                    json(&r.labels),
                    r.lifecycle.as_str(),
                    r.for_job.map(|j| j as i64),
                    r.job_id.map(|j| j as i64),
                    r.github_id.map(|j| j as i64),
                    r.exit_code,
                    r.reason,
                    r.created_ms,
                    r.updated_ms
                ],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::AppendTimeline(entries) => {
            for e in entries {
                super::timeline::sqlite_append(conn, e)?;
            }
            Ok(WriteOutcome::Done)
        }
        WriteOp::Prune(before) => {
            let deliveries =
                conn.execute("DELETE FROM deliveries WHERE received_ms < ?1", [before])?;
            let jobs = conn.execute(
                "DELETE FROM jobs WHERE state_rank = ?1 AND updated_ms < ?2",
                params![JobState::Completed.rank(), before],
            )?;
            let runners = conn.execute(&prune_runners_sql("?1"), [before])?;
            conn.execute(super::timeline::PRUNE, [])?;
            Ok(WriteOutcome::Pruned(Pruned {
                deliveries: deliveries as u64,
                jobs: jobs as u64,
                runners: runners as u64,
            }))
        }
        WriteOp::InsertJoinToken(token, now) => {
            conn.execute(
                "INSERT INTO join_tokens (id, secret_sha256, agent_name, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    token.id,
                    Sha256::digest(token.secret.as_bytes()).to_vec(),
                    token.agent_name,
                    now,
                    token.expires_at
                ],
            )?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::TakeJoinToken {
            id,
            secret,
            now,
            used_by,
        } => take_join_token(conn, id, secret, *now, used_by).map(WriteOutcome::JoinToken),
    }
}

/// Inserts a job or moves it forward; never backwards (out-of-order deliveries are harmless).
/// Keyed by owner and id, so one owner's deliveries never reach another owner's job.
/// A job that names its runner marks that runner (if ours, and the same owner's) as working on it.
fn upsert_job(conn: &Connection, job: &JobRecord) -> rusqlite::Result<()> {
    if let Some(runner) = &job.runner_name
        && job.state >= JobState::InProgress
    {
        conn.prepare_cached(
            "UPDATE runners SET job_id = ?2 WHERE name = ?1 AND lower(owner) = ?3 AND job_id IS NULL",
        )?
        .execute(params![runner, job.id as i64, job.owner.as_str()],
        )?;
    }
    conn.prepare_cached(
        "INSERT INTO jobs (id, run_id, owner, repo, name, labels, state, state_rank, runner_name, conclusion,
                           first_seen_ms, queued_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (owner, id) DO UPDATE SET
            state = excluded.state,
            state_rank = excluded.state_rank,
            runner_name = COALESCE(excluded.runner_name, jobs.runner_name),
            conclusion = COALESCE(excluded.conclusion, jobs.conclusion),
            queued_ms = COALESCE(jobs.queued_ms, excluded.queued_ms),
            updated_ms = excluded.updated_ms
         WHERE excluded.state_rank > jobs.state_rank",
    )?
    .execute(params![
            job.id as i64,
            job.run_id as i64,
            job.owner.as_str(),
            job.repo,
            job.name,
            json(&job.labels),
            job.state.as_str(),
            job.state.rank(),
            job.runner_name,
            job.conclusion,
            job.first_seen_ms,
            job.queued_ms,
            job.updated_ms
        ],
    )?;
    Ok(())
}

/// A join token as stored: secret hash, fixed name, expiry, time of use.
type JoinTokenRow = (Vec<u8>, Option<String>, i64, Option<i64>);

pub(super) fn take_join_token(
    conn: &Connection,
    id: &str,
    secret: &str,
    now: i64,
    used_by: &str,
) -> rusqlite::Result<Result<Option<String>, JoinRefusal>> {
    let row: Option<JoinTokenRow> = conn
        .query_row(
            "SELECT secret_sha256, agent_name, expires_at, used_at FROM join_tokens WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((stored, agent_name, expires_at, used_at)) = row else {
        return Ok(Err(JoinRefusal::Unknown));
    };
    let given = Sha256::digest(secret.as_bytes());
    if !bool::from(given.as_slice().ct_eq(&stored)) {
        return Ok(Err(JoinRefusal::Unknown));
    }
    if used_at.is_some() {
        return Ok(Err(JoinRefusal::AlreadyUsed));
    }
    if now >= expires_at {
        return Ok(Err(JoinRefusal::Expired));
    }
    let changed = conn.execute(
        "UPDATE join_tokens SET used_at = ?2, used_by = ?3 WHERE id = ?1 AND used_at IS NULL",
        params![id, now, used_by],
    )?;
    Ok(if changed == 1 {
        Ok(agent_name)
    } else {
        Err(JoinRefusal::AlreadyUsed)
    })
}

fn labels_of(text: String) -> Vec<String> {
    serde_json::from_str(&text).unwrap_or_default()
}

pub(super) const JOB_COLUMNS: &str = "id, run_id, owner, repo, name, labels, state, runner_name, conclusion, first_seen_ms, queued_ms, updated_ms";

pub(super) fn job_from_row(r: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = r.get(6)?;
    Ok(JobRecord {
        id: r.get::<_, i64>(0)? as u64,
        run_id: r.get::<_, i64>(1)? as u64,
        owner: Owner::from(r.get::<_, String>(2)?),
        repo: r.get(3)?,
        name: r.get(4)?,
        labels: labels_of(r.get(5)?),
        state: JobState::parse(&state).unwrap_or(JobState::Queued),
        runner_name: r.get(7)?,
        conclusion: r.get(8)?,
        first_seen_ms: r.get(9)?,
        queued_ms: r.get(10)?,
        updated_ms: r.get(11)?,
    })
}

pub(super) const RUNNER_COLUMNS: &str = "id, name, owner, repo, agent, arch, labels, lifecycle, for_job, job_id, \
     github_id, exit_code, reason, created_ms, updated_ms";

pub(super) fn runner_from_row(r: &Row<'_>) -> rusqlite::Result<RunnerRecord> {
    let arch: String = r.get(5)?;
    let lifecycle: String = r.get(7)?;
    Ok(RunnerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        owner: Owner::new(&r.get::<_, String>(2)?),
        repo: r.get(3)?,
        agent: r.get(4)?,
        arch: arch.parse().unwrap_or(shared::arch::Arch::Amd64),
        labels: labels_of(r.get(6)?),
        lifecycle: RunnerLifecycle::parse(&lifecycle).unwrap_or(RunnerLifecycle::Finished),
        for_job: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        job_id: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        github_id: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        exit_code: r.get(11)?,
        reason: r.get(12)?,
        created_ms: r.get(13)?,
        updated_ms: r.get(14)?,
    })
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Creates `STATE_DIR` (mode 0700), or tightens it; see [`shared::private_files`].
pub(super) fn ensure_state_dir(state_dir: &Path) -> Result<(), StoreError> {
    shared::private_files::create_private_dir(state_dir).map_err(|source| StoreError::CreateDir {
        path: state_dir.to_owned(),
        source,
    })
}

/// Where the database of a state directory lives.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_reads_only_the_active_runners_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut conn = open_connection(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", active_runners_sql()))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Without the partial index: "SCAN runners" and "USE TEMP B-TREE FOR ORDER BY", every
        // runner that ever existed read and sorted at every pass.
        assert_eq!(
            plan,
            ["SCAN runners USING INDEX runners_active"],
            "{plan:?}"
        );
    }
}
