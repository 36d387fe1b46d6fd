//! The agent directory in SQLite (`STATE_DIR`'s database, the default backend of
//! [`AgentDirectory`](super::AgentDirectory)).
//!
//! It has its own connection (WAL lets it write beside the store's writer thread; SQLite
//! serialises the two), and every write is an immediate transaction, so a read that decides a
//! write (is the name taken?) is never overtaken. Its tables are created by [`migrate`],
//! idempotently and without touching the store's numbered migrations.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use shared::ids::AgentName;

use super::{
    AgentRecord, EnrollRefusal, Enrolled, Issued, Renewed, TokenBinding, binding, enrolled,
    may_take, policy_json, policy_of, renewal,
};
use crate::agent_policy::AgentPolicy;
use crate::store::StoreError;
use crate::store::connection_thread::ConnectionThread;
use crate::store::sqlite::{db_path, take_join_token};

/// Creates this module's tables if they are missing.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS agent_token_policies (
            token_id TEXT PRIMARY KEY,
            agent_name TEXT NOT NULL,
            replace INTEGER NOT NULL,
            policy TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS enrolled_agents (
            name TEXT PRIMARY KEY,
            policy TEXT,
            cert_sha256 TEXT,
            previous_cert_sha256 TEXT,
            cert_expires_at INTEGER,
            enrolled_at INTEGER,
            revoked_at INTEGER
        );
        CREATE TABLE IF NOT EXISTS drained_agents (
            name TEXT PRIMARY KEY,
            since_ms INTEGER NOT NULL
        );",
    )
}

/// The directory in SQLite; clones share one connection.
#[derive(Clone)]
pub struct SqliteDirectory {
    // Owned by its thread (see `connection_thread`); each call is one short transaction.
    conn: ConnectionThread,
}

/// Directory calls waiting for the connection at most (a full queue is `Busy`).
const DIRECTORY_QUEUE: usize = 4096;

fn record(conn: &Connection, name: &AgentName) -> rusqlite::Result<Option<AgentRecord>> {
    conn.query_row(
        "SELECT policy, cert_sha256, previous_cert_sha256, revoked_at FROM enrolled_agents WHERE name = ?1",
        params![name.as_str()],
        |r| {
            Ok(AgentRecord {
                policy: policy_of(r.get(0)?),
                cert_sha256: r.get(1)?,
                previous_cert_sha256: r.get(2)?,
                revoked_at: r.get(3)?,
            })
        },
    )
    .optional()
}

impl SqliteDirectory {
    /// Opens the directory in `state_dir`'s database (created if needed).
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        crate::store::sqlite::ensure_state_dir(state_dir)?;
        let path = db_path(state_dir);
        let mut conn = crate::store::sqlite::open_connection(&path)?;
        // The store's own tables first (join tokens live there), when the CLI is first.
        crate::store::sqlite::migrate(&mut conn, &path)?;
        migrate(&conn)?;
        let conn = ConnectionThread::start("agent-directory", conn, DIRECTORY_QUEUE)
            .map_err(|source| StoreError::CreateDir { path, source })?;
        Ok(Self { conn })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.conn.run(f).await
    }

    /// Stores a join token bound to `name` with the policy the agent will get.
    pub async fn mint(
        &self,
        token: crate::store::NewJoinToken,
        name: AgentName,
        replace: bool,
        policy: AgentPolicy,
        now: i64,
    ) -> Result<Result<(), EnrollRefusal>, StoreError> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Err(refusal) = may_take(&name, replace, record(&tx, &name)?.as_ref()) {
                return Ok(Err(refusal));
            }
            tx.execute(
                "INSERT INTO join_tokens (id, secret_sha256, agent_name, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    token.id,
                    Sha256::digest(token.secret.as_bytes()).to_vec(),
                    name.as_str(),
                    now,
                    token.expires_at
                ],
            )?;
            tx.execute(
                "INSERT INTO agent_token_policies (token_id, agent_name, replace, policy)
                 VALUES (?1, ?2, ?3, ?4)",
                params![token.id, name.as_str(), replace, policy_json(&policy)],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await
    }

    /// Spends a join token and records the agent it enrolls, in one transaction: `sign` makes
    /// the certificate for the token's name and policy. A refusal spends nothing.
    pub async fn enroll<E: Send + 'static>(
        &self,
        id: String,
        secret: String,
        now: i64,
        used_by: String,
        sign: impl FnOnce(&AgentName, &AgentPolicy) -> Result<Issued, E> + Send + 'static,
    ) -> Enrolled<E> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let bound = tx
                .query_row(
                    "SELECT agent_name, replace, policy FROM agent_token_policies WHERE token_id = ?1",
                    params![id],
                    |r| {
                        Ok(TokenBinding {
                            agent_name: r.get(0)?,
                            replace: r.get(1)?,
                            policy: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            // Dropping the transaction on a refusal rolls the token's spending back.
            if let Err(refusal) = take_join_token(&tx, &id, &secret, now, &used_by)? {
                return Ok(Ok(Err(refusal.into())));
            }
            let (name, replace, policy) = match binding(bound) {
                Ok(bound) => bound,
                Err(refusal) => return Ok(Ok(Err(refusal))),
            };
            if let Err(refusal) = may_take(&name, replace, record(&tx, &name)?.as_ref()) {
                return Ok(Ok(Err(refusal)));
            }
            let issued = match sign(&name, &policy) {
                Ok(issued) => issued,
                Err(e) => return Ok(Err(e)),
            };
            tx.execute(
                "INSERT INTO enrolled_agents
                    (name, policy, cert_sha256, previous_cert_sha256, cert_expires_at, enrolled_at, revoked_at)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, NULL)
                 ON CONFLICT (name) DO UPDATE SET policy = ?2, cert_sha256 = ?3,
                    previous_cert_sha256 = NULL, cert_expires_at = ?4, enrolled_at = ?5, revoked_at = NULL",
                params![
                    name.as_str(),
                    policy_json(&policy),
                    issued.cert_sha256,
                    issued.expires_at,
                    now
                ],
            )?;
            tx.commit()?;
            Ok(Ok(Ok((name, issued))))
        })
        .await
    }

    /// What is stored about `name`.
    pub async fn get(&self, name: &AgentName) -> Result<Option<AgentRecord>, StoreError> {
        let name = name.clone();
        self.run(move |conn| Ok(record(conn, &name)?)).await
    }

    /// Issues a new certificate to an admitted, enrolled agent (`sign` gets its policy); the
    /// certificate it renews stays accepted until its own expiry or the next renewal.
    pub async fn renew<E: Send + 'static>(
        &self,
        name: AgentName,
        cert_sha256: String,
        sign: impl FnOnce(&AgentPolicy) -> Result<Issued, E> + Send + 'static,
    ) -> Renewed<E> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let policy = match renewal(&name, record(&tx, &name)?.as_ref(), &cert_sha256) {
                Ok(policy) => policy,
                Err(refusal) => return Ok(Ok(Err(refusal))),
            };
            let issued = match sign(&policy) {
                Ok(issued) => issued,
                Err(e) => return Ok(Err(e)),
            };
            tx.execute(
                "UPDATE enrolled_agents SET cert_sha256 = ?2, previous_cert_sha256 = ?3,
                    cert_expires_at = ?4 WHERE name = ?1",
                params![
                    name.as_str(),
                    issued.cert_sha256,
                    cert_sha256,
                    issued.expires_at
                ],
            )?;
            tx.commit()?;
            Ok(Ok(Ok(issued)))
        })
        .await
    }

    /// Revokes `name` (enrolled or not: a certificate from the operator's CA is refused too).
    /// Returns whether the name was enrolled here.
    pub async fn revoke(&self, name: &AgentName, now: i64) -> Result<bool, StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let was = enrolled(record(&tx, &name)?.as_ref());
            tx.execute(
                "INSERT INTO enrolled_agents (name, revoked_at) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET revoked_at = ?2",
                params![name.as_str(), now],
            )?;
            tx.commit()?;
            Ok(was)
        })
        .await
    }

    /// Every revoked name, for the TLS handshake's check ([`crate::grpc::revocation`]).
    pub async fn revoked_names(&self) -> Result<HashSet<String>, StoreError> {
        self.run(|conn| {
            let mut stmt =
                conn.prepare("SELECT name FROM enrolled_agents WHERE revoked_at IS NOT NULL")?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            Ok(names)
        })
        .await
    }

    /// Records that the operator drained `name` through the API (`true`) or lifted it
    /// (`false`): a drained agent is told again at each session, so the drain outlives
    /// restarts of the agent and of the controller.
    pub async fn set_drained(
        &self,
        name: &AgentName,
        drained: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            if drained {
                conn.execute(
                    "INSERT INTO drained_agents (name, since_ms) VALUES (?1, ?2)
                     ON CONFLICT (name) DO NOTHING",
                    params![name.as_str(), now_ms],
                )?;
            } else {
                conn.execute(
                    "DELETE FROM drained_agents WHERE name = ?1",
                    params![name.as_str()],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Whether the operator drained `name` through the API and has not lifted it.
    pub async fn is_drained(&self, name: &AgentName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            let found: Option<i64> = conn
                .query_row(
                    "SELECT since_ms FROM drained_agents WHERE name = ?1",
                    params![name.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(found.is_some())
        })
        .await
    }

    /// Sets (or, with `None`, clears) the policy of `name`, enrolled or not.
    pub async fn set_policy(
        &self,
        name: &AgentName,
        policy: Option<AgentPolicy>,
    ) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO enrolled_agents (name, policy) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET policy = ?2",
                params![name.as_str(), policy.as_ref().map(policy_json)],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> AgentName {
        AgentName::parse(n).unwrap()
    }

    /// The directory's connection and the store's writer thread write the same database. A
    /// deferred transaction that reads first (`mint` checks the name) and then writes while
    /// the writer holds the lock gets SQLITE_BUSY at once, busy timeout or not: seen as
    /// "database is locked" minting a join token under load. Immediate transactions wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_directory_and_the_store_write_side_by_side_without_busy_errors() {
        use crate::store::{NewJoinToken, SqliteStore, StateStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let directory = SqliteDirectory::open(dir.path()).unwrap();
        let policy = AgentPolicy {
            owners: None,
            labels: Default::default(),
            max_runners: 5,
            cert_validity_secs: 86_400,
        };
        let minting = tokio::spawn(async move {
            for i in 0..150 {
                let token = NewJoinToken {
                    id: format!("d{i}"),
                    secret: "s".repeat(32),
                    agent_name: Some(format!("agent-{i}")),
                    expires_at: i64::MAX,
                };
                directory
                    .mint(token, name(&format!("agent-{i}")), false, policy.clone(), 1)
                    .await
                    .expect("the directory's write waits for the lock")
                    .expect("a fresh name");
            }
        });
        let writing = tokio::spawn(async move {
            for i in 0..150 {
                let token = NewJoinToken {
                    id: format!("s{i}"),
                    secret: "s".repeat(32),
                    agent_name: None,
                    expires_at: i64::MAX,
                };
                store
                    .insert_join_token(token, 1)
                    .await
                    .expect("the store's write waits for the lock");
            }
        });
        minting.await.unwrap();
        writing.await.unwrap();
    }
}
