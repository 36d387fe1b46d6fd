//! The controller's durable state, behind the [`StateStore`] trait the controller owns, so a
//! server database can replace the embedded one later. [`SqliteStore`] is the implementation.
//!
//! What is stored: webhook deliveries (deduplication), jobs and their states, workflow runs
//! whose jobs must still be fetched, runners the controller created, and agent join tokens;
//! [`agents`] keeps enrolled agents' policies and revocations in tables of its own.

pub mod agents;
pub mod records;
mod sqlite;

use std::path::PathBuf;

pub use self::records::*;
pub use self::sqlite::{DB_FILE, SqliteStore, db_path};
use self::sqlite::{
    JOB_COLUMNS, RUNNER_COLUMNS, WriteOp, WriteOutcome, job_from_row, runner_from_row,
};

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
    /// Jobs in state `queued`, oldest first.
    async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    async fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError>;
    /// How many jobs are in each state.
    async fn job_states(&self) -> Result<Vec<(JobState, u64)>, StoreError>;
    /// Runs whose jobs must still be fetched.
    async fn run_fetches(&self) -> Result<Vec<RunKey>, StoreError>;
    /// Asks for a run's jobs to be fetched (the reconciler found it through the REST API).
    async fn request_run_fetch(&self, key: RunKey, now_ms: i64) -> Result<(), StoreError>;
    async fn finish_run_fetch(&self, key: RunKey) -> Result<(), StoreError>;
    async fn fail_run_fetch(&self, key: RunKey, error: String) -> Result<(), StoreError>;
    async fn upsert_runner(&self, runner: RunnerRecord) -> Result<(), StoreError>;
    /// Runners not finished.
    async fn active_runners(&self) -> Result<Vec<RunnerRecord>, StoreError>;
    async fn runner_by_name(&self, name: &str) -> Result<Option<RunnerRecord>, StoreError>;
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

    async fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id as i64],
                job_from_row,
            )
            .optional()
        })
        .await
    }

    async fn job_states(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
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
                    owner: r.get(0)?,
                    repo: r.get(1)?,
                    run_id: r.get::<_, i64>(2)? as u64,
                })
            })?;
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
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUNNER_COLUMNS} FROM runners WHERE lifecycle != 'finished' ORDER BY created_ms"
            ))?;
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

#[cfg(test)]
mod tests;
