//! The controller's durable state: an embedded SQLite database in `STATE_DIR`.
//!
//! The database is opened in WAL mode so that the CLI (`gha-controller agents join-token`) and a
//! running controller can use it at the same time. Schema changes are numbered migrations applied
//! in order at open (`PRAGMA user_version` records how far a file is). The connection sits behind
//! a short `std::sync::Mutex`; async callers go through `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The database file inside `STATE_DIR`.
pub const DB_FILE: &str = "gha-scaler.db";

/// Numbered schema migrations; index + 1 is the `user_version` after each.
const MIGRATIONS: &[&str] = &[
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
];

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
    #[error("a database task panicked or was cancelled")]
    Task,
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

/// A join token row as minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJoinToken {
    pub id: String,
    pub secret: String,
    /// The identity the certificate will carry; `None` lets the agent's request choose.
    pub agent_name: Option<String>,
    pub expires_at: i64,
}

/// A join token as stored: secret hash, fixed name, expiry, time of use.
type JoinTokenRow = (Vec<u8>, Option<String>, i64, Option<i64>);

/// The handle to the store; clones share one connection.
#[derive(Clone)]
pub struct Store {
    // The only connection of this process; held for single short statements or transactions.
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir` and migrates it.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn, &path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        // A poisoned lock only means another thread panicked mid-statement; SQLite rolled back.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut conn)?)
    }

    /// Runs a blocking store call off the async runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| StoreError::Task)?
    }

    pub fn insert_join_token(&self, token: &NewJoinToken, now: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO join_tokens (id, secret_sha256, agent_name, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    token.id,
                    Sha256::digest(token.secret.as_bytes()).to_vec(),
                    token.agent_name,
                    now,
                    token.expires_at
                ],
            )
            .map(drop)
        })
    }

    /// Spends a join token: checks its secret in constant time, that it is unused and not
    /// expired, and marks it used in the same transaction. Returns the name it fixes, if any.
    pub fn take_join_token(
        &self,
        id: &str,
        secret: &str,
        now: i64,
        used_by: &str,
    ) -> Result<Result<Option<String>, JoinRefusal>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let row: Option<JoinTokenRow> = tx
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
            let changed = tx.execute(
                "UPDATE join_tokens SET used_at = ?2, used_by = ?3 WHERE id = ?1 AND used_at IS NULL",
                params![id, now, used_by],
            )?;
            tx.commit()?;
            Ok(if changed == 1 {
                Ok(agent_name)
            } else {
                Err(JoinRefusal::AlreadyUsed)
            })
        })
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at: i64) -> NewJoinToken {
        NewJoinToken {
            id: "abcd".into(),
            secret: "s3cret".into(),
            agent_name: Some("a1".into()),
            expires_at,
        }
    }

    #[test]
    fn a_join_token_works_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert_join_token(&token(100), 0).unwrap();
        assert_eq!(
            store.take_join_token("abcd", "wrong", 1, "x").unwrap(),
            Err(JoinRefusal::Unknown)
        );
        assert_eq!(
            store.take_join_token("nope", "s3cret", 1, "x").unwrap(),
            Err(JoinRefusal::Unknown)
        );
        assert_eq!(
            store.take_join_token("abcd", "s3cret", 1, "x").unwrap(),
            Ok(Some("a1".into()))
        );
        assert_eq!(
            store.take_join_token("abcd", "s3cret", 2, "x").unwrap(),
            Err(JoinRefusal::AlreadyUsed)
        );
    }

    #[test]
    fn an_expired_join_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert_join_token(&token(100), 0).unwrap();
        assert_eq!(
            store.take_join_token("abcd", "s3cret", 100, "x").unwrap(),
            Err(JoinRefusal::Expired)
        );
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path())
            .unwrap()
            .insert_join_token(&token(100), 0)
            .unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(
            store
                .take_join_token("abcd", "s3cret", 1, "x")
                .unwrap()
                .is_ok()
        );
    }
}
