//! The PostgreSQL implementation of [`StateStore`], selected by `DATABASE_URL=postgres://…`.
//! Several controller replicas can share one database (issue 15).
//!
//! - The same durability promise as SQLite: a write answers `Ok` only after its transaction
//!   committed, and every connection runs with `synchronous_commit=on` (whatever the server's
//!   default), so the commit is flushed to the server's WAL before the controller answers 2xx.
//! - One transaction per operation, on a bounded pool ([`POOL_SIZE`] connections). Writers
//!   beyond [`WRITE_QUEUE`] in flight are refused at once (`StoreError::Busy`), and a
//!   connection not free within [`POOL_WAIT`] is `Busy` too: a full queue is an error, never
//!   growth.
//! - Concurrency between replicas is the database's: delivery ids are a primary key (the
//!   second replica to insert one waits for the first's commit, then sees a duplicate), job
//!   updates are one `INSERT … ON CONFLICT DO UPDATE … WHERE` that only moves a job forward,
//!   and a join token is locked (`FOR UPDATE`) while it is spent.
//! - Schema changes are numbered migrations in `gha_schema_migrations`, applied at connect in
//!   one transaction under an advisory lock, so two replicas starting together migrate once; a
//!   database of a newer build is refused.
//! - Text columns use the "C" collation: orderings are byte orderings, as in SQLite, whatever
//!   locale the database was created with.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tokio_postgres::Row;

use super::records::*;
use super::{JoinRefusal, NewJoinToken, Pruned, StateStore, StoreError};
use crate::config::database::DatabaseUrl;

/// Connections the store keeps to the server.
pub const POOL_SIZE: usize = 16;
/// Writes in flight (waiting for or holding a connection); past this the store answers `Busy`.
const WRITE_QUEUE: usize = 8192;
/// How long an operation waits for a free connection before it is refused as `Busy`.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// A connection attempt's bound, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock migrations run under (any fixed number; "ghamigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x0067_6861_6d69_6772;

/// Numbered schema migrations; index + 1 is the version recorded after each. The first is the
/// SQLite schema as of its version 3, in PostgreSQL's words.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: join tokens, webhook deliveries, jobs keyed by owner and id, runs to fetch, runners.
    r#"CREATE TABLE join_tokens (
        id TEXT COLLATE "C" PRIMARY KEY,
        secret_sha256 BYTEA NOT NULL,
        agent_name TEXT COLLATE "C",
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        used_by TEXT
    );
    CREATE TABLE deliveries (
        id TEXT COLLATE "C" PRIMARY KEY,
        event TEXT COLLATE "C" NOT NULL,
        owner TEXT COLLATE "C",
        received_ms BIGINT NOT NULL
    );
    CREATE INDEX deliveries_by_owner_event ON deliveries (owner, event, received_ms);
    CREATE INDEX deliveries_by_time ON deliveries (received_ms);
    CREATE TABLE jobs (
        owner TEXT COLLATE "C" NOT NULL,
        id BIGINT NOT NULL,
        run_id BIGINT NOT NULL,
        repo TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT COLLATE "C" NOT NULL,
        state_rank BIGINT NOT NULL,
        runner_name TEXT COLLATE "C",
        conclusion TEXT,
        first_seen_ms BIGINT NOT NULL,
        queued_ms BIGINT,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (owner, id)
    );
    CREATE INDEX jobs_by_state ON jobs (state_rank, queued_ms);
    CREATE INDEX jobs_by_id ON jobs (id);
    CREATE INDEX jobs_by_update ON jobs (state_rank, updated_ms);
    CREATE INDEX jobs_by_run ON jobs (run_id);
    CREATE TABLE run_fetches (
        owner TEXT COLLATE "C" NOT NULL,
        repo TEXT COLLATE "C" NOT NULL,
        run_id BIGINT NOT NULL,
        requested_ms BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY (owner, repo, run_id)
    );
    CREATE TABLE runners (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        owner TEXT COLLATE "C" NOT NULL,
        repo TEXT COLLATE "C",
        agent TEXT COLLATE "C" NOT NULL,
        arch TEXT NOT NULL,
        labels TEXT NOT NULL,
        lifecycle TEXT COLLATE "C" NOT NULL,
        for_job BIGINT,
        job_id BIGINT,
        github_id BIGINT,
        exit_code INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE INDEX runners_by_lifecycle ON runners (lifecycle);"#,
    // 2: each job's bounded timeline (see `timeline`).
    super::timeline::PG_MIGRATION,
    // 3: the agent directory: tokens' policies, enrolled agents, drains (see `agents`).
    super::agents::postgres::PG_MIGRATION,
    // 4: the active runners' own index, finished runners by age (see SQLite's migration 6).
    super::sqlite::RUNNERS_MIGRATION,
];

/// Tells the listening replicas that a committed delivery brought work (see `leader::wake`).
const NOTIFY_WORK: &str = "NOTIFY gha_scaler_work";

/// The PostgreSQL store. Clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    // Permits for writes in flight; a write that finds none is refused (`Busy`).
    writes: Arc<Semaphore>,
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::{PoolError, TimeoutType};
        match e {
            PoolError::Timeout(TimeoutType::Wait) => StoreError::Busy,
            PoolError::Backend(e) => StoreError::Postgres(e),
            PoolError::Closed => StoreError::Closed,
            other => StoreError::Unreachable(other.to_string()),
        }
    }
}

impl PgStore {
    /// Connects to `url`, migrates the schema and keeps a pool. Fails if the server cannot be
    /// reached now: a controller that cannot commit deliveries must not answer webhooks.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let mut config = url.pg_config()?;
        let tls = url.connector()?;
        // The durability promise does not depend on the server's default.
        let options = match config.get_options() {
            Some(o) => format!("{o} -c synchronous_commit=on"),
            None => "-c synchronous_commit=on".into(),
        };
        config.options(options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("gha-controller");
        }
        // A dead peer (a cut network) is noticed by the kernel, not only at the next query.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT * 2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        let store = Self {
            pool,
            writes: Arc::new(Semaphore::new(WRITE_QUEUE)),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS gha_schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_ms BIGINT NOT NULL
            )",
        )
        .await?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM gha_schema_migrations",
                &[],
            )
            .await?
            .get(0);
        let current = usize::try_from(current).unwrap_or(0);
        if current > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: "DATABASE_URL".into(),
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            tx.batch_execute(sql).await?;
            let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO gha_schema_migrations (version, applied_ms) VALUES ($1, $2)",
                &[&version, &shared::runner::now_ms()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A connection for a write, or `Busy` when too many writes are in flight.
    pub(super) async fn writer(
        &self,
    ) -> Result<(deadpool_postgres::Object, tokio::sync::OwnedSemaphorePermit), StoreError> {
        let permit = self
            .writes
            .clone()
            .try_acquire_owned()
            .map_err(|_| StoreError::Busy)?;
        Ok((self.pool.get().await?, permit))
    }

    /// The pool, for reads of the agent directory (`agents::postgres`).
    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

fn json(labels: &[String]) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "[]".into())
}

fn labels_of(text: String) -> Vec<String> {
    serde_json::from_str(&text).unwrap_or_default()
}

const JOB_COLUMNS: &str = "id, run_id, owner, repo, name, labels, state, runner_name, conclusion, \
     first_seen_ms, queued_ms, updated_ms";

fn job_from_row(r: &Row) -> JobRecord {
    let state: String = r.get(6);
    JobRecord {
        id: r.get::<_, i64>(0) as u64,
        run_id: r.get::<_, i64>(1) as u64,
        owner: Owner::from(r.get::<_, String>(2)),
        repo: r.get(3),
        name: r.get(4),
        labels: labels_of(r.get(5)),
        state: JobState::parse(&state).unwrap_or(JobState::Queued),
        runner_name: r.get(7),
        conclusion: r.get(8),
        first_seen_ms: r.get(9),
        queued_ms: r.get(10),
        updated_ms: r.get(11),
    }
}

const RUNNER_COLUMNS: &str = "id, name, owner, repo, agent, arch, labels, lifecycle, for_job, \
     job_id, github_id, exit_code, reason, created_ms, updated_ms";

fn runner_from_row(r: &Row) -> RunnerRecord {
    let arch: String = r.get(5);
    let lifecycle: String = r.get(7);
    RunnerRecord {
        id: r.get(0),
        name: r.get(1),
        owner: Owner::new(r.get(2)),
        repo: r.get(3),
        agent: r.get(4),
        arch: arch.parse().unwrap_or(shared::arch::Arch::Amd64),
        labels: labels_of(r.get(6)),
        lifecycle: RunnerLifecycle::parse(&lifecycle).unwrap_or(RunnerLifecycle::Finished),
        for_job: r.get::<_, Option<i64>>(8).map(|v| v as u64),
        job_id: r.get::<_, Option<i64>>(9).map(|v| v as u64),
        github_id: r.get::<_, Option<i64>>(10).map(|v| v as u64),
        exit_code: r.get(11),
        reason: r.get(12),
        created_ms: r.get(13),
        updated_ms: r.get(14),
    }
}

fn run_key(r: &Row) -> RunKey {
    RunKey {
        owner: Owner::new(r.get(0)),
        repo: r.get(1),
        run_id: r.get::<_, i64>(2) as u64,
    }
}

/// Inserts a job or moves it forward; never backwards. Keyed by owner and id, as in SQLite
/// (`sqlite::upsert_job`): one owner's deliveries never reach another owner's job or runner.
async fn upsert_job(
    tx: &deadpool_postgres::Transaction<'_>,
    job: &JobRecord,
) -> Result<(), tokio_postgres::Error> {
    if let Some(runner) = &job.runner_name
        && job.state >= JobState::InProgress
    {
        let mark = tx
            .prepare_cached(
                "UPDATE runners SET job_id = $2
                 WHERE name = $1 AND lower(owner) = $3 AND job_id IS NULL",
            )
            .await?;
        tx.execute(&mark, &[runner, &(job.id as i64), &job.owner.as_str()])
            .await?;
    }
    let upsert = tx
        .prepare_cached(
            "INSERT INTO jobs (id, run_id, owner, repo, name, labels, state, state_rank, runner_name,
                               conclusion, first_seen_ms, queued_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (owner, id) DO UPDATE SET
                state = excluded.state,
                state_rank = excluded.state_rank,
                runner_name = COALESCE(excluded.runner_name, jobs.runner_name),
                conclusion = COALESCE(excluded.conclusion, jobs.conclusion),
                queued_ms = COALESCE(jobs.queued_ms, excluded.queued_ms),
                updated_ms = excluded.updated_ms
             WHERE excluded.state_rank > jobs.state_rank",
        )
        .await?;
    tx.execute(
        &upsert,
        &[
            &(job.id as i64),
            &(job.run_id as i64),
            &job.owner.as_str(),
            &job.repo,
            &job.name,
            &json(&job.labels),
            &job.state.as_str(),
            &job.state.rank(),
            &job.runner_name,
            &job.conclusion,
            &job.first_seen_ms,
            &job.queued_ms,
            &job.updated_ms,
        ],
    )
    .await?;
    Ok(())
}

async fn request_fetch(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &RunKey,
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    let st = tx
        .prepare_cached(
            "INSERT INTO run_fetches (owner, repo, run_id, requested_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &key.owner.as_str(),
            &key.repo,
            &(key.run_id as i64),
            &now_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Whether `secret` spends a stored token now (the same rules as SQLite's).
pub(super) fn judge_token(
    stored_sha256: &[u8],
    used_at: Option<i64>,
    expires_at: i64,
    secret: &str,
    now: i64,
) -> Result<(), JoinRefusal> {
    let given = Sha256::digest(secret.as_bytes());
    if !bool::from(given.as_slice().ct_eq(stored_sha256)) {
        return Err(JoinRefusal::Unknown);
    }
    if used_at.is_some() {
        return Err(JoinRefusal::AlreadyUsed);
    }
    if now >= expires_at {
        return Err(JoinRefusal::Expired);
    }
    Ok(())
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    async fn record_webhook(
        &self,
        delivery: NewDelivery,
        effect: WebhookEffect,
    ) -> Result<Recorded, StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO deliveries (id, event, owner, received_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let inserted = tx
            .execute(
                &insert,
                &[
                    &delivery.id,
                    &delivery.event,
                    &delivery.owner.as_ref().map(Owner::as_str),
                    &delivery.received_ms,
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(Recorded::Duplicate);
        }
        match &effect {
            WebhookEffect::Job(job) => {
                upsert_job(&tx, job).await?;
                super::timeline::pg_append(&tx, &super::timeline::of_webhook(&delivery, job))
                    .await?;
            }
            WebhookEffect::FetchRun(key) => request_fetch(&tx, key, delivery.received_ms).await?,
            WebhookEffect::Ignore => {}
        }
        if !matches!(effect, WebhookEffect::Ignore) {
            // Delivered to every listening replica on commit (and only then): the leader's
            // scheduler wakes whichever replica took the webhook (`leader::wake`).
            tx.batch_execute(NOTIFY_WORK).await?;
        }
        tx.commit().await?;
        Ok(Recorded::New)
    }

    async fn append_timeline(
        &self,
        entries: Vec<super::timeline::TimelineEntry>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (mut client, _permit) = self.writer().await?;
        let tx = client.transaction().await?;
        for e in &entries {
            super::timeline::pg_append(&tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn job_timeline(
        &self,
        owner: &Owner,
        id: u64,
    ) -> Result<Vec<super::timeline::TimelineEntry>, StoreError> {
        let rows = self
            .query(
                &super::timeline::pg_select(),
                &[&owner.as_str(), &(id as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| super::timeline::pg_row(owner, id, r))
            .collect())
    }

    async fn upsert_jobs(&self, jobs: Vec<JobRecord>) -> Result<(), StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = client.transaction().await?;
        for job in &jobs {
            upsert_job(&tx, job).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued'
                     ORDER BY queued_ms NULLS FIRST, id"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(job_from_row).collect())
    }

    async fn oldest_queued_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state_rank = $1 AND state = 'queued'
                     ORDER BY queued_ms NULLS FIRST, id LIMIT $2"
                ),
                &[&JobState::Queued.rank(), &limit],
            )
            .await?;
        Ok(rows.iter().map(job_from_row).collect())
    }

    async fn job(&self, owner: &Owner, id: u64) -> Result<Option<JobRecord>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE owner = $1 AND id = $2"),
                &[&owner.as_str(), &(id as i64)],
            )
            .await?;
        Ok(rows.first().map(job_from_row))
    }

    async fn jobs_with_id(&self, id: u64) -> Result<Vec<JobRecord>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 ORDER BY owner"),
                &[&(id as i64)],
            )
            .await?;
        Ok(rows.iter().map(job_from_row).collect())
    }

    async fn job_deliveries_since(&self, owner: &Owner, since_ms: i64) -> Result<bool, StoreError> {
        let rows = self
            .query(
                "SELECT EXISTS (SELECT 1 FROM deliveries
                 WHERE owner = $1 AND event = 'workflow_job' AND received_ms >= $2)",
                &[&owner.as_str(), &since_ms],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = client.transaction().await?;
        let deliveries = tx
            .execute(
                "DELETE FROM deliveries WHERE received_ms < $1",
                &[&before_ms],
            )
            .await?;
        let jobs = tx
            .execute(
                "DELETE FROM jobs WHERE state_rank = $1 AND updated_ms < $2",
                &[&JobState::Completed.rank(), &before_ms],
            )
            .await?;
        let runners = tx
            .execute(&super::sqlite::prune_runners_sql("$1"), &[&before_ms])
            .await?;
        tx.execute(super::timeline::PRUNE, &[]).await?;
        tx.commit().await?;
        Ok(Pruned {
            deliveries,
            jobs,
            runners,
        })
    }

    async fn job_states(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let rows = self
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let state: String = r.get(0);
                (
                    JobState::parse(&state).unwrap_or(JobState::Queued),
                    r.get::<_, i64>(1) as u64,
                )
            })
            .collect())
    }

    async fn run_fetches(&self) -> Result<Vec<RunKey>, StoreError> {
        let rows = self
            .query(
                "SELECT owner, repo, run_id FROM run_fetches ORDER BY requested_ms",
                &[],
            )
            .await?;
        Ok(rows.iter().map(run_key).collect())
    }

    async fn run_fetch_attempts(&self) -> Result<Vec<(RunKey, u32)>, StoreError> {
        let rows = self
            .query(
                "SELECT owner, repo, run_id, attempts FROM run_fetches ORDER BY requested_ms",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (run_key(r), r.get::<_, i32>(3).max(0) as u32))
            .collect())
    }

    async fn run_job_states(&self, key: &RunKey) -> Result<Vec<JobState>, StoreError> {
        let rows = self
            .query(
                "SELECT state FROM jobs
                 WHERE run_id = $1 AND lower(owner) = lower($2) AND lower(repo) = lower($3)",
                &[&(key.run_id as i64), &key.owner.as_str(), &key.repo],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| JobState::parse(&r.get::<_, String>(0)).unwrap_or(JobState::Queued))
            .collect())
    }

    async fn request_run_fetch(&self, key: RunKey, now_ms: i64) -> Result<(), StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = client.transaction().await?;
        request_fetch(&tx, &key, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_run_fetch(&self, key: RunKey) -> Result<(), StoreError> {
        let (client, _permit) = self.writer().await?;
        client
            .execute(
                "DELETE FROM run_fetches WHERE owner = $1 AND repo = $2 AND run_id = $3",
                &[&key.owner.as_str(), &key.repo, &(key.run_id as i64)],
            )
            .await?;
        Ok(())
    }

    async fn fail_run_fetch(&self, key: RunKey, error: String) -> Result<(), StoreError> {
        let (client, _permit) = self.writer().await?;
        client
            .execute(
                "UPDATE run_fetches SET attempts = attempts + 1, last_error = $4
                 WHERE owner = $1 AND repo = $2 AND run_id = $3",
                &[&key.owner.as_str(), &key.repo, &(key.run_id as i64), &error],
            )
            .await?;
        Ok(())
    }

    async fn upsert_runner(&self, r: RunnerRecord) -> Result<(), StoreError> {
        let (client, _permit) = self.writer().await?;
        let st = client
            .prepare_cached(
                "INSERT INTO runners (id, name, owner, repo, agent, arch, labels, lifecycle, for_job,
                                      job_id, github_id, exit_code, reason, created_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (id) DO UPDATE SET
                    lifecycle = excluded.lifecycle, job_id = COALESCE(excluded.job_id, runners.job_id),
                    github_id = excluded.github_id, exit_code = excluded.exit_code,
                    reason = excluded.reason, updated_ms = excluded.updated_ms",
            )
            .await?;
        client
            .execute(
                &st,
                &[
                    &r.id,
                    &r.name,
                    &r.owner.as_str(),
                    &r.repo,
                    &r.agent,
                    &r.arch.as_str(),
                    &json(&r.labels),
                    &r.lifecycle.as_str(),
                    &r.for_job.map(|j| j as i64),
                    &r.job_id.map(|j| j as i64),
                    &r.github_id.map(|j| j as i64),
                    &r.exit_code,
                    &r.reason,
                    &r.created_ms,
                    &r.updated_ms,
                ],
            )
            .await?;
        Ok(())
    }

    async fn active_runners(&self) -> Result<Vec<RunnerRecord>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {RUNNER_COLUMNS} FROM runners WHERE lifecycle != 'finished'
                     ORDER BY created_ms"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(runner_from_row).collect())
    }

    async fn runner_by_name(&self, name: &str) -> Result<Option<RunnerRecord>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE name = $1"),
                &[&name],
            )
            .await?;
        Ok(rows.first().map(runner_from_row))
    }

    async fn runner_repos(
        &self,
        owner: &Owner,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT min(repo) FROM runners
                 WHERE lower(owner) = $1 AND repo IS NOT NULL AND updated_ms >= $2
                 GROUP BY lower(repo) ORDER BY max(updated_ms) DESC LIMIT $3",
                &[&owner.as_str(), &since_ms, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn insert_join_token(&self, token: NewJoinToken, now: i64) -> Result<(), StoreError> {
        let (client, _permit) = self.writer().await?;
        client
            .execute(
                "INSERT INTO join_tokens (id, secret_sha256, agent_name, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &token.id,
                    &Sha256::digest(token.secret.as_bytes()).to_vec(),
                    &token.agent_name,
                    &now,
                    &token.expires_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn take_join_token(
        &self,
        id: &str,
        secret: &str,
        now: i64,
        used_by: &str,
    ) -> Result<Result<Option<String>, JoinRefusal>, StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = client.transaction().await?;
        // FOR UPDATE: a second replica spending the same token waits, then sees it used.
        let row = tx
            .query_opt(
                "SELECT secret_sha256, agent_name, expires_at, used_at FROM join_tokens
                 WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(JoinRefusal::Unknown));
        };
        let stored: Vec<u8> = row.get(0);
        let agent_name: Option<String> = row.get(1);
        if let Err(refusal) = judge_token(&stored, row.get(3), row.get(2), secret, now) {
            return Ok(Err(refusal));
        }
        tx.execute(
            "UPDATE join_tokens SET used_at = $2, used_by = $3 WHERE id = $1",
            &[&id, &now, &used_by],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(agent_name))
    }
}
