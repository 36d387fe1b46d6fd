//! The controller's durable state, behind the [`StateStore`] trait the controller owns.
//! [`SqliteStore`] (in `STATE_DIR`, the default) and [`PgStore`] (`DATABASE_URL=postgres://…`,
//! which several replicas can share) implement it; [`open`] picks one from the configuration.
//!
//! What is stored: webhook deliveries (deduplication), jobs and their states, workflow runs
//! whose jobs must still be fetched, runners the controller created, and agent join tokens;
//! [`agents`] keeps enrolled agents' policies, revocations and drains in tables of its own,
//! in the same database (SQLite or PostgreSQL);
//! [`timeline`] each job's bounded history (webhooks, decisions, its runner).
//! Jobs are keyed by owner and GitHub id. Delivery ids and completed jobs are kept for
//! `RETENTION` ([`prune_periodically`]), so the database does not grow forever.

pub mod agents;
mod connection_thread;
mod postgres;
pub mod queue;
pub mod records;
mod sqlite;
#[cfg(test)]
pub(crate) mod testdb;
pub mod timeline;

use std::path::PathBuf;

pub use self::postgres::{POOL_SIZE as PG_POOL_SIZE, PgStore};
pub use self::queue::{ClassKey, HeadLimits, QueueHead};
pub use self::records::*;
pub use self::sqlite::{DB_FILE, SqliteStore, db_path};
use self::sqlite::{
    JOB_COLUMNS, RUNNER_COLUMNS, WriteOp, WriteOutcome, job_from_row, runner_from_row,
};
pub use self::timeline::TimelineEntry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL error")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("TLS to PostgreSQL cannot be set up: {0}")]
    Tls(#[from] crate::config::database::DatabaseTlsError),
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    #[error(
        "the database {path} has schema version {found}, newer than this build knows ({known}); \
         run a newer gha-controller"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("the store's write queue is full")]
    Busy,
    #[error("the store is shut down")]
    Closed,
    #[error("the store answered an operation with an unexpected outcome")]
    Unexpected,
}

impl StoreError {
    /// Whether trying again later may succeed: a full write queue, or a database that cannot be
    /// reached right now (a PostgreSQL connection refused or lost; an error the server answered,
    /// which carries an SQLSTATE, is not; an SQLite database locked by another process beyond the
    /// busy timeout, or a full or failing disk, is: the operator can free it).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy | StoreError::Unreachable(_) => true,
            StoreError::Postgres(e) => e.is_closed() || e.code().is_none(),
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            _ => false,
        }
    }
}

/// Why a join token bought no certificate. The messages are safe to show to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("the join token is unknown or its secret is wrong")]
    Unknown,
    #[error("the join token was already used")]
    AlreadyUsed,
    #[error("the join token expired")]
    Expired,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub jobs: u64,
    /// Finished runners (their records are history once the retention has passed).
    pub runners: u64,
}

/// A join token as minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJoinToken {
    pub id: String,
    pub secret: String,
    /// The identity the certificate will carry; `None` lets the agent's request choose.
    pub agent_name: Option<String>,
    pub expires_at: i64,
}

/// Everything the controller persists. Every write is durable when its future resolves `Ok`.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// Records a delivery and its effect atomically; a delivery id seen before changes nothing.
    async fn record_webhook(
        &self,
        delivery: NewDelivery,
        effect: WebhookEffect,
    ) -> Result<Recorded, StoreError>;
    /// Inserts jobs or moves them forward (never backwards).
    async fn upsert_jobs(&self, jobs: Vec<JobRecord>) -> Result<(), StoreError>;
    /// Adds entries to their jobs' timelines; each job keeps its newest
    /// [`timeline::MAX_PER_JOB`]. (A webhook's entry is added by [`Self::record_webhook`].)
    async fn append_timeline(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError>;
    /// Job `id` of `owner`'s timeline, oldest first.
    async fn job_timeline(&self, owner: &Owner, id: u64) -> Result<Vec<TimelineEntry>, StoreError>;
    /// Jobs in state `queued`, oldest first.
    async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// The oldest `limit` jobs in state `queued`, oldest first: what a periodic reader takes,
    /// so that its cost does not grow with the queue (the default reads the whole queue).
    async fn oldest_queued_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs = self.queued_jobs().await?;
        jobs.truncate(limit);
        Ok(jobs)
    }
    /// Queued jobs by class (owner, repository, labels): each class's size and its oldest
    /// `limits.of(owner)` jobs (see [`queue`]). What a scheduling pass reads, so its cost does
    /// not grow with the jobs waiting behind the heads. The default groups [`Self::queued_jobs`].
    async fn queue_heads(&self, limits: HeadLimits) -> Result<Vec<QueueHead>, StoreError> {
        Ok(queue::heads_of(self.queued_jobs().await?, &limits))
    }
    /// The job `id` of `owner`; another owner's job of the same id is never returned.
    async fn job(&self, owner: &Owner, id: u64) -> Result<Option<JobRecord>, StoreError>;
    /// Every owner's job with GitHub id `id` (for the operator's API, which names no owner).
    async fn jobs_with_id(&self, id: u64) -> Result<Vec<JobRecord>, StoreError>;
    /// Whether a `workflow_job` delivery for `owner` was received at or after `since_ms`.
    async fn job_deliveries_since(&self, owner: &Owner, since_ms: i64) -> Result<bool, StoreError>;
    /// Forgets delivery ids received, and completed jobs last updated, before `before_ms`.
    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError>;
    /// How many jobs are in each state.
    async fn job_states(&self) -> Result<Vec<(JobState, u64)>, StoreError>;
    /// Runs whose jobs must still be fetched.
    async fn run_fetches(&self) -> Result<Vec<RunKey>, StoreError>;
    /// Runs whose jobs must still be fetched, oldest request first, with the failed attempts so far.
    async fn run_fetch_attempts(&self) -> Result<Vec<(RunKey, u32)>, StoreError>;
    /// The states of the jobs we know of a run (owner and repository compared case-insensitively).
    async fn run_job_states(&self, key: &RunKey) -> Result<Vec<JobState>, StoreError>;
    /// Asks for a run's jobs to be fetched (the reconciler found it through the REST API).
    async fn request_run_fetch(&self, key: RunKey, now_ms: i64) -> Result<(), StoreError>;
    async fn finish_run_fetch(&self, key: RunKey) -> Result<(), StoreError>;
    async fn fail_run_fetch(&self, key: RunKey, error: String) -> Result<(), StoreError>;
    async fn upsert_runner(&self, runner: RunnerRecord) -> Result<(), StoreError>;
    /// Runners not finished.
    async fn active_runners(&self) -> Result<Vec<RunnerRecord>, StoreError>;
    async fn runner_by_name(&self, name: &str) -> Result<Option<RunnerRecord>, StoreError>;
    /// The repositories `owner`'s repository-level runners registered to since `since_ms`, the
    /// most recently used first, at most `limit`.
    async fn runner_repos(
        &self,
        owner: &Owner,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    async fn insert_join_token(&self, token: NewJoinToken, now: i64) -> Result<(), StoreError>;
    /// Spends a join token: secret checked in constant time, unused, not expired, marked used in
    /// the same transaction. Returns the name it fixes, if any.
    async fn take_join_token(
        &self,
        id: &str,
        secret: &str,
        now: i64,
        used_by: &str,
    ) -> Result<Result<Option<String>, JoinRefusal>, StoreError>;
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    async fn record_webhook(
        &self,
        delivery: NewDelivery,
        effect: WebhookEffect,
    ) -> Result<Recorded, StoreError> {
        match self.write(WriteOp::Webhook(delivery, effect)).await? {
            WriteOutcome::Recorded(r) => Ok(r),
            _ => Err(StoreError::Unexpected),
        }
    }

    async fn upsert_jobs(&self, jobs: Vec<JobRecord>) -> Result<(), StoreError> {
        self.write(WriteOp::UpsertJobs(jobs)).await.map(drop)
    }

    async fn append_timeline(&self, entries: Vec<TimelineEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(WriteOp::AppendTimeline(entries)).await.map(drop)
    }

    async fn job_timeline(&self, owner: &Owner, id: u64) -> Result<Vec<TimelineEntry>, StoreError> {
        let owner = owner.clone();
        self.read(move |c| timeline::sqlite_read(c, &owner, id))
            .await
    }

    async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY queued_ms, id"
            ))?;
            let rows = stmt.query_map([], job_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn oldest_queued_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            // `jobs_by_state` (state_rank, queued_ms): an index range read of `limit` rows.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state_rank = ?1 AND state = 'queued'
                 ORDER BY queued_ms, id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(
                rusqlite::params![JobState::Queued.rank(), limit],
                job_from_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn queue_heads(&self, limits: HeadLimits) -> Result<Vec<QueueHead>, StoreError> {
        self.read(move |c| queue::read_heads(c, &limits)).await
    }

    async fn job(&self, owner: &Owner, id: u64) -> Result<Option<JobRecord>, StoreError> {
        let owner = owner.clone();
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ?1 AND id = ?2"),
                rusqlite::params![owner.as_str(), id as i64],
                job_from_row,
            )
            .optional()
        })
        .await
    }

    async fn jobs_with_id(&self, id: u64) -> Result<Vec<JobRecord>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 ORDER BY owner"
            ))?;
            let rows = stmt.query_map([id as i64], job_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn job_deliveries_since(&self, owner: &Owner, since_ms: i64) -> Result<bool, StoreError> {
        let owner = owner.clone();
        self.read(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM deliveries
                 WHERE owner = ?1 AND event = 'workflow_job' AND received_ms >= ?2)",
                rusqlite::params![owner.as_str(), since_ms],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError> {
        match self.write(WriteOp::Prune(before_ms)).await? {
            WriteOutcome::Pruned(p) => Ok(p),
            _ => Err(StoreError::Unexpected),
        }
    }

    async fn job_states(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.read(|c| {
            // From the class sizes the triggers keep: no scan of the jobs.
            let mut stmt =
                c.prepare_cached("SELECT state, SUM(jobs) FROM job_classes GROUP BY state")?;
            let rows = stmt.query_map([], |r| {
                let state: String = r.get(0)?;
                Ok((
                    JobState::parse(&state).unwrap_or(JobState::Queued),
                    r.get::<_, i64>(1)? as u64,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn run_fetches(&self) -> Result<Vec<RunKey>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT owner, repo, run_id FROM run_fetches ORDER BY requested_ms",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(RunKey {
                    owner: Owner::new(&r.get::<_, String>(0)?),
                    repo: r.get(1)?,
                    run_id: r.get::<_, i64>(2)? as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn run_fetch_attempts(&self) -> Result<Vec<(RunKey, u32)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT owner, repo, run_id, attempts FROM run_fetches ORDER BY requested_ms",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    RunKey {
                        owner: Owner::new(&r.get::<_, String>(0)?),
                        repo: r.get(1)?,
                        run_id: r.get::<_, i64>(2)? as u64,
                    },
                    r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    async fn run_job_states(&self, key: &RunKey) -> Result<Vec<JobState>, StoreError> {
        let key = key.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT state FROM jobs WHERE run_id = ?1 AND lower(owner) = lower(?2) AND lower(repo) = lower(?3)",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![key.run_id as i64, key.owner.as_str(), key.repo],
                |r| {
                    let state: String = r.get(0)?;
                    Ok(JobState::parse(&state).unwrap_or(JobState::Queued))
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn request_run_fetch(&self, key: RunKey, now_ms: i64) -> Result<(), StoreError> {
        self.write(WriteOp::RequestRunFetch(key, now_ms))
            .await
            .map(drop)
    }

    async fn finish_run_fetch(&self, key: RunKey) -> Result<(), StoreError> {
        self.write(WriteOp::FinishRunFetch(key)).await.map(drop)
    }

    async fn fail_run_fetch(&self, key: RunKey, error: String) -> Result<(), StoreError> {
        self.write(WriteOp::FailRunFetch(key, error))
            .await
            .map(drop)
    }

    async fn upsert_runner(&self, runner: RunnerRecord) -> Result<(), StoreError> {
        self.write(WriteOp::UpsertRunner(runner)).await.map(drop)
    }

    async fn active_runners(&self) -> Result<Vec<RunnerRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sqlite::active_runners_sql())?;
            let rows = stmt.query_map([], runner_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn runner_by_name(&self, name: &str) -> Result<Option<RunnerRecord>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                &format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE name = ?1"),
                [name],
                runner_from_row,
            )
            .optional()
        })
        .await
    }

    async fn runner_repos(
        &self,
        owner: &Owner,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT min(repo) FROM runners
                 WHERE lower(owner) = ?1 AND repo IS NOT NULL AND updated_ms >= ?2
                 GROUP BY lower(repo) ORDER BY max(updated_ms) DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(rusqlite::params![owner.as_str(), since_ms, limit], |r| {
                r.get(0)
            })?;
            rows.collect()
        })
        .await
    }

    async fn insert_join_token(&self, token: NewJoinToken, now: i64) -> Result<(), StoreError> {
        self.write(WriteOp::InsertJoinToken(token, now))
            .await
            .map(drop)
    }

    async fn take_join_token(
        &self,
        id: &str,
        secret: &str,
        now: i64,
        used_by: &str,
    ) -> Result<Result<Option<String>, JoinRefusal>, StoreError> {
        let op = WriteOp::TakeJoinToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
            now,
            used_by: used_by.to_owned(),
        };
        match self.write(op).await? {
            WriteOutcome::JoinToken(r) => Ok(r),
            _ => Err(StoreError::Unexpected),
        }
    }
}

/// The store the configuration names: PostgreSQL when `DATABASE_URL` is set, else SQLite in
/// `STATE_DIR`.
pub async fn open(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn StateStore>, StoreError> {
    Ok(open_with_directory(config).await?.0)
}

/// The store and the agent directory the configuration names, in the same database: with
/// `DATABASE_URL` both on one PostgreSQL pool (shared by every replica), else SQLite in
/// `STATE_DIR`.
pub async fn open_with_directory(
    config: &crate::config::Config,
) -> Result<(std::sync::Arc<dyn StateStore>, agents::AgentDirectory), StoreError> {
    Ok(match &config.database_url {
        Some(url) => {
            let store = PgStore::connect(url).await?;
            let directory = agents::AgentDirectory::postgres(store.clone());
            (std::sync::Arc::new(store), directory)
        }
        None => (
            std::sync::Arc::new(SqliteStore::open(&config.state_dir)?),
            agents::AgentDirectory::sqlite(&config.state_dir)?,
        ),
    })
}

/// How often the retention pass runs.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Forgets delivery ids, completed jobs and finished runners older than `retention`
/// (`RETENTION`), at start and
/// then every [`PRUNE_EVERY`], until `shutdown`. A failed pass is logged and retried next time.
pub async fn prune_periodically(
    store: std::sync::Arc<dyn StateStore>,
    retention: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let before = shared::runner::now_ms() - retention.as_millis() as i64;
        match store.prune(before).await {
            Ok(p) if p.deliveries + p.jobs + p.runners > 0 => {
                tracing::info!(
                    deliveries = p.deliveries,
                    jobs = p.jobs,
                    runners = p.runners,
                    "retention: forgot old deliveries, finished jobs and finished runners"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention pass failed; retrying later"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests;
