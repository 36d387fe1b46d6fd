//! The agent directory in PostgreSQL (`DATABASE_URL`): one directory for every replica and
//! every CLI process, so a join token minted through one replica is spent through another, an
//! agent enrolled through one is let in by whichever leads, and a revocation or drain made
//! anywhere holds everywhere.
//!
//! - On the store's pool ([`PgStore`]): writes take one of its write permits, so a full queue
//!   is `Busy` here too. The tables are the store's migration 3 ([`PG_MIGRATION`]), so a
//!   database of a newer build is refused the same way.
//! - Every write is one transaction that first takes a transaction-scoped advisory lock
//!   ([`DIRECTORY_LOCK`]): directory writes are rare, and holding them one at a time is what
//!   SQLite's immediate transactions do, so "is the name taken?" and the write it decides
//!   cannot be overtaken by another replica (two tokens for one name spent at once: one wins,
//!   the other is refused). The join token itself is also locked (`FOR UPDATE`) like the
//!   store's `take_join_token`, which does not take the directory's lock.
//! - Reads (admission, the revocation list) take no lock: they see the last committed state.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use shared::ids::AgentName;

use super::{
    AgentRecord, EnrollRefusal, Enrolled, Issued, Renewed, TokenBinding, binding, enrolled,
    may_take, policy_json, policy_of, renewal,
};
use crate::agent_policy::AgentPolicy;
use crate::store::{JoinRefusal, NewJoinToken, PgStore, StoreError};

/// The store's migration 3: the directory's tables (the same as SQLite's, in PostgreSQL's
/// words). `join_tokens` is the store's own, from migration 1.
pub(in crate::store) const PG_MIGRATION: &str = r#"
    CREATE TABLE agent_token_policies (
        token_id TEXT COLLATE "C" PRIMARY KEY,
        agent_name TEXT COLLATE "C" NOT NULL,
        replace BOOLEAN NOT NULL,
        policy TEXT NOT NULL
    );
    CREATE TABLE enrolled_agents (
        name TEXT COLLATE "C" PRIMARY KEY,
        policy TEXT,
        cert_sha256 TEXT,
        previous_cert_sha256 TEXT,
        cert_expires_at BIGINT,
        enrolled_at BIGINT,
        revoked_at BIGINT
    );
    CREATE INDEX enrolled_agents_revoked ON enrolled_agents (name) WHERE revoked_at IS NOT NULL;
    CREATE TABLE drained_agents (
        name TEXT COLLATE "C" PRIMARY KEY,
        since_ms BIGINT NOT NULL
    );"#;

/// The advisory lock every directory write holds until its commit ("ghadir" in ASCII).
pub const DIRECTORY_LOCK: i64 = 0x6768_6164_6972;

/// The directory in PostgreSQL; clones share the store's pool.
#[derive(Clone)]
pub struct PgDirectory {
    store: PgStore,
}

async fn record<C: GenericClient + Sync>(
    client: &C,
    name: &AgentName,
) -> Result<Option<AgentRecord>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT policy, cert_sha256, previous_cert_sha256, revoked_at FROM enrolled_agents
             WHERE name = $1",
            &[&name.as_str()],
        )
        .await?;
    Ok(row.map(|r| AgentRecord {
        policy: policy_of(r.get(0)),
        cert_sha256: r.get(1),
        previous_cert_sha256: r.get(2),
        revoked_at: r.get(3),
    }))
}

/// Spends token `id` inside `tx` (locked until the commit); the rules are the store's.
async fn take_join_token(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    secret: &str,
    now: i64,
    used_by: &str,
) -> Result<Result<(), JoinRefusal>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT secret_sha256, expires_at, used_at FROM join_tokens WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(JoinRefusal::Unknown));
    };
    let stored: Vec<u8> = row.get(0);
    if let Err(refusal) =
        crate::store::postgres::judge_token(&stored, row.get(2), row.get(1), secret, now)
    {
        return Ok(Err(refusal));
    }
    tx.execute(
        "UPDATE join_tokens SET used_at = $2, used_by = $3 WHERE id = $1",
        &[&id, &now, &used_by],
    )
    .await?;
    Ok(Ok(()))
}

impl PgDirectory {
    pub fn new(store: PgStore) -> Self {
        Self { store }
    }

    /// A connection and write permit, for [`Self::locked`].
    async fn writer(
        &self,
    ) -> Result<(deadpool_postgres::Object, tokio::sync::OwnedSemaphorePermit), StoreError> {
        self.store.writer().await
    }

    /// Stores a join token bound to `name` with the policy the agent will get.
    pub async fn mint(
        &self,
        token: NewJoinToken,
        name: AgentName,
        replace: bool,
        policy: AgentPolicy,
        now: i64,
    ) -> Result<Result<(), EnrollRefusal>, StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = locked(&mut client).await?;
        if let Err(refusal) = may_take(&name, replace, record(&tx, &name).await?.as_ref()) {
            return Ok(Err(refusal));
        }
        tx.execute(
            "INSERT INTO join_tokens (id, secret_sha256, agent_name, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &token.id,
                &Sha256::digest(token.secret.as_bytes()).to_vec(),
                &name.as_str(),
                &now,
                &token.expires_at,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO agent_token_policies (token_id, agent_name, replace, policy)
             VALUES ($1, $2, $3, $4)",
            &[&token.id, &name.as_str(), &replace, &policy_json(&policy)],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Spends a join token and records the agent it enrolls, in one transaction. A refusal
    /// (or a failed signature) rolls back: nothing is spent.
    pub async fn enroll<E: Send + 'static>(
        &self,
        id: String,
        secret: String,
        now: i64,
        used_by: String,
        sign: impl FnOnce(&AgentName, &AgentPolicy) -> Result<Issued, E> + Send + 'static,
    ) -> Enrolled<E> {
        let (mut client, _permit) = self.writer().await?;
        let tx = locked(&mut client).await?;
        let bound = tx
            .query_opt(
                "SELECT agent_name, replace, policy FROM agent_token_policies WHERE token_id = $1",
                &[&id],
            )
            .await?
            .map(|r| TokenBinding {
                agent_name: r.get(0),
                replace: r.get(1),
                policy: r.get(2),
            });
        if let Err(refusal) = take_join_token(&tx, &id, &secret, now, &used_by).await? {
            return Ok(Ok(Err(refusal.into())));
        }
        let (name, replace, policy) = match binding(bound) {
            Ok(bound) => bound,
            Err(refusal) => return Ok(Ok(Err(refusal))),
        };
        if let Err(refusal) = may_take(&name, replace, record(&tx, &name).await?.as_ref()) {
            return Ok(Ok(Err(refusal)));
        }
        let issued = match sign(&name, &policy) {
            Ok(issued) => issued,
            Err(e) => return Ok(Err(e)),
        };
        tx.execute(
            "INSERT INTO enrolled_agents
                (name, policy, cert_sha256, previous_cert_sha256, cert_expires_at, enrolled_at,
                 revoked_at)
             VALUES ($1, $2, $3, NULL, $4, $5, NULL)
             ON CONFLICT (name) DO UPDATE SET policy = $2, cert_sha256 = $3,
                previous_cert_sha256 = NULL, cert_expires_at = $4, enrolled_at = $5,
                revoked_at = NULL",
            &[
                &name.as_str(),
                &policy_json(&policy),
                &issued.cert_sha256,
                &issued.expires_at,
                &now,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(Ok((name, issued))))
    }

    /// What is stored about `name`.
    pub async fn get(&self, name: &AgentName) -> Result<Option<AgentRecord>, StoreError> {
        let client = self.store.pool().get().await?;
        Ok(record(&client, name).await?)
    }

    /// Issues a new certificate to an admitted, enrolled agent, in the transaction that
    /// records it.
    pub async fn renew<E: Send + 'static>(
        &self,
        name: AgentName,
        cert_sha256: String,
        sign: impl FnOnce(&AgentPolicy) -> Result<Issued, E> + Send + 'static,
    ) -> Renewed<E> {
        let (mut client, _permit) = self.writer().await?;
        let tx = locked(&mut client).await?;
        let policy = match renewal(&name, record(&tx, &name).await?.as_ref(), &cert_sha256) {
            Ok(policy) => policy,
            Err(refusal) => return Ok(Ok(Err(refusal))),
        };
        let issued = match sign(&policy) {
            Ok(issued) => issued,
            Err(e) => return Ok(Err(e)),
        };
        tx.execute(
            "UPDATE enrolled_agents SET cert_sha256 = $2, previous_cert_sha256 = $3,
                cert_expires_at = $4 WHERE name = $1",
            &[
                &name.as_str(),
                &issued.cert_sha256,
                &cert_sha256,
                &issued.expires_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(Ok(issued)))
    }

    /// Revokes `name`; returns whether it was enrolled with a join token.
    pub async fn revoke(&self, name: &AgentName, now: i64) -> Result<bool, StoreError> {
        let (mut client, _permit) = self.writer().await?;
        let tx = locked(&mut client).await?;
        let was = enrolled(record(&tx, name).await?.as_ref());
        tx.execute(
            "INSERT INTO enrolled_agents (name, revoked_at) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET revoked_at = $2",
            &[&name.as_str(), &now],
        )
        .await?;
        tx.commit().await?;
        Ok(was)
    }

    /// Every revoked name.
    pub async fn revoked_names(&self) -> Result<HashSet<String>, StoreError> {
        let client = self.store.pool().get().await?;
        let rows = client
            .query(
                "SELECT name FROM enrolled_agents WHERE revoked_at IS NOT NULL",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records or lifts the operator's drain of `name`.
    pub async fn set_drained(
        &self,
        name: &AgentName,
        drained: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (client, _permit) = self.writer().await?;
        if drained {
            client
                .execute(
                    "INSERT INTO drained_agents (name, since_ms) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name.as_str(), &now_ms],
                )
                .await?;
        } else {
            client
                .execute(
                    "DELETE FROM drained_agents WHERE name = $1",
                    &[&name.as_str()],
                )
                .await?;
        }
        Ok(())
    }

    /// Whether the operator drained `name` and has not lifted it.
    pub async fn is_drained(&self, name: &AgentName) -> Result<bool, StoreError> {
        let client = self.store.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM drained_agents WHERE name = $1",
                &[&name.as_str()],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Sets (or, with `None`, clears) the policy of `name`, enrolled or not.
    pub async fn set_policy(
        &self,
        name: &AgentName,
        policy: Option<AgentPolicy>,
    ) -> Result<(), StoreError> {
        let (client, _permit) = self.writer().await?;
        client
            .execute(
                "INSERT INTO enrolled_agents (name, policy) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET policy = $2",
                &[&name.as_str(), &policy.as_ref().map(policy_json)],
            )
            .await?;
        Ok(())
    }
}

/// A transaction holding the directory's write lock until it commits or rolls back.
async fn locked(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DIRECTORY_LOCK])
        .await?;
    Ok(tx)
}
