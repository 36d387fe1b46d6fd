//! The enrolled agents: each name's operator policy, the certificate last issued to it,
//! revocation and the operator's drains. Durable in the controller's database, so a restart (or
//! a CLI command such as `agents revoke` run as another process) changes nothing about who is
//! let in.
//!
//! Two backends behind one type, [`AgentDirectory`], chosen like the store:
//! - [`sqlite`]: `STATE_DIR`'s database (the default), on a connection of its own beside the
//!   store's writer thread.
//! - [`postgres`]: the database of `DATABASE_URL`, on the store's pool, so every replica and
//!   every CLI process sees the same directory (issue 15 §2).
//!
//! Kept apart from the webhook/job store on purpose: these writes are rare (mint, enroll,
//! renew, revoke), are made by the CLI as well as the server, and must be one transaction with
//! the join token they spend. The rules are decided here, by pure functions on what is stored
//! ([`admit`], [`may_take`], [`renewal`], [`binding`]); the backends only read and write:
//! - A join token is bound to one name. Minting or spending a token for a name that already
//!   holds a certificate from us is refused unless the token was minted with `--replace`.
//! - A name accepts only the certificate issued to it last (and the one before, while a renewal
//!   is being written on the agent), so a replaced or re-enrolled agent's old certificate is
//!   refused although it is still signed by the CA and unexpired.
//! - A revoked name is refused until it is enrolled again with a token minted with `--replace`.

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;

use shared::ids::AgentName;

use self::postgres::PgDirectory;
use self::sqlite::SqliteDirectory;
use super::{JoinRefusal, NewJoinToken, PgStore, StoreError};
use crate::agent_policy::AgentPolicy;

/// What is stored about one agent name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// `None`: the operator set none (an agent with a certificate from its own CA).
    pub policy: Option<AgentPolicy>,
    /// Fingerprint of the certificate issued last; `None` if we never issued one.
    pub cert_sha256: Option<String>,
    pub previous_cert_sha256: Option<String>,
    pub revoked_at: Option<i64>,
}

/// Why an agent is not let in (the text is shown to the agent and logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("agent {0} was revoked by the operator (`gha-controller agents revoke`)")]
    Revoked(AgentName),
    #[error(
        "this certificate of agent {0} was superseded by a newer enrollment or renewal; \
         enroll again with a new join token"
    )]
    Superseded(AgentName),
    #[error("agent {0} was not enrolled with a join token, so the controller cannot renew it")]
    NotEnrolled(AgentName),
}

/// Why a token cannot be minted or spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error(transparent)]
    Token(#[from] JoinRefusal),
    #[error(
        "agent {0} is already enrolled (or was revoked); mint the token with --replace to give \
         the name to a new agent (its current certificate is then refused)"
    )]
    NameTaken(AgentName),
    #[error(
        "this join token was minted by an older controller and names no policy; mint a new one"
    )]
    NoPolicy,
}

/// A certificate just issued, as the directory records it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate_pem: String,
    pub cert_sha256: String,
    pub expires_at: i64,
}

/// What a minted token was bound to, as stored beside it.
#[derive(Debug, Clone)]
pub struct TokenBinding {
    pub agent_name: String,
    pub replace: bool,
    /// The policy as JSON.
    pub policy: String,
}

/// Decides whether a certificate with fingerprint `cert` may act as the agent of `record`, and
/// returns the policy it gets.
pub fn admit(
    name: &AgentName,
    record: Option<&AgentRecord>,
    cert: &str,
) -> Result<Option<AgentPolicy>, Refusal> {
    let Some(record) = record else {
        return Ok(None);
    };
    if record.revoked_at.is_some() {
        return Err(Refusal::Revoked(name.clone()));
    }
    if let Some(current) = &record.cert_sha256
        && current != cert
        && record.previous_cert_sha256.as_deref() != Some(cert)
    {
        return Err(Refusal::Superseded(name.clone()));
    }
    Ok(record.policy.clone())
}

/// Whether we issued the agent of `record` a certificate.
pub fn enrolled(record: Option<&AgentRecord>) -> bool {
    record.is_some_and(|r| r.cert_sha256.is_some())
}

/// Whether a token for `name` may be minted or spent: a name that holds a certificate from us,
/// or was revoked (also an agent with a certificate from the operator's CA), needs `replace`.
pub fn may_take(
    name: &AgentName,
    replace: bool,
    record: Option<&AgentRecord>,
) -> Result<(), EnrollRefusal> {
    let taken = record.is_some_and(|r| r.cert_sha256.is_some() || r.revoked_at.is_some());
    if taken && !replace {
        return Err(EnrollRefusal::NameTaken(name.clone()));
    }
    Ok(())
}

/// The name, `--replace` and policy a spent token enrolls, or why it enrolls nothing.
pub fn binding(
    bound: Option<TokenBinding>,
) -> Result<(AgentName, bool, AgentPolicy), EnrollRefusal> {
    let bound = bound.ok_or(EnrollRefusal::NoPolicy)?;
    match (
        AgentName::parse(&bound.agent_name),
        policy_of(Some(bound.policy)),
    ) {
        (Ok(name), Some(policy)) => Ok((name, bound.replace, policy)),
        _ => Err(EnrollRefusal::NoPolicy),
    }
}

/// The policy a renewal of `name`'s certificate `cert` signs with: the agent must be admitted
/// and enrolled by us, with a policy.
pub fn renewal(
    name: &AgentName,
    record: Option<&AgentRecord>,
    cert: &str,
) -> Result<AgentPolicy, Refusal> {
    match admit(name, record, cert)? {
        Some(policy) if enrolled(record) => Ok(policy),
        _ => Err(Refusal::NotEnrolled(name.clone())),
    }
}

pub(crate) fn policy_json(policy: &AgentPolicy) -> String {
    serde_json::to_string(policy).unwrap_or_else(|_| "null".into())
}

pub(crate) fn policy_of(text: Option<String>) -> Option<AgentPolicy> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The outcome of an enrollment: a store error, else the signer's error, else a refusal or the
/// enrolled name and its certificate.
pub type Enrolled<E> = Result<Result<Result<(AgentName, Issued), EnrollRefusal>, E>, StoreError>;
/// The outcome of a renewal, nested like [`Enrolled`].
pub type Renewed<E> = Result<Result<Result<Issued, Refusal>, E>, StoreError>;

/// The directory of enrolled agents, in SQLite or PostgreSQL; clones share the connection or
/// pool. Callers do not care which: every method has the same rules and transactions on both.
#[derive(Clone)]
pub enum AgentDirectory {
    Sqlite(SqliteDirectory),
    Postgres(PgDirectory),
}

impl AgentDirectory {
    /// The directory the configuration names: PostgreSQL when `DATABASE_URL` is set (its own
    /// connection pool, for the CLI), else SQLite in `STATE_DIR`.
    pub async fn open(config: &crate::config::Config) -> Result<Self, StoreError> {
        match &config.database_url {
            Some(url) => Ok(Self::postgres(PgStore::connect(url).await?)),
            None => Self::sqlite(&config.state_dir),
        }
    }

    /// The directory in `state_dir`'s SQLite database (created if needed).
    pub fn sqlite(state_dir: &Path) -> Result<Self, StoreError> {
        SqliteDirectory::open(state_dir).map(Self::Sqlite)
    }

    /// The directory in the PostgreSQL database of `store`, on its pool.
    pub fn postgres(store: PgStore) -> Self {
        Self::Postgres(PgDirectory::new(store))
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
        match self {
            Self::Sqlite(d) => d.mint(token, name, replace, policy, now).await,
            Self::Postgres(d) => d.mint(token, name, replace, policy, now).await,
        }
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
        match self {
            Self::Sqlite(d) => d.enroll(id, secret, now, used_by, sign).await,
            Self::Postgres(d) => d.enroll(id, secret, now, used_by, sign).await,
        }
    }

    /// What is stored about `name`.
    pub async fn get(&self, name: &AgentName) -> Result<Option<AgentRecord>, StoreError> {
        match self {
            Self::Sqlite(d) => d.get(name).await,
            Self::Postgres(d) => d.get(name).await,
        }
    }

    /// Whether a certificate may act as `name` now, and with which policy.
    pub async fn admit(
        &self,
        name: &AgentName,
        cert_sha256: &str,
    ) -> Result<Result<Option<AgentPolicy>, Refusal>, StoreError> {
        let record = self.get(name).await?;
        Ok(admit(name, record.as_ref(), cert_sha256))
    }

    /// Issues a new certificate to an admitted, enrolled agent (`sign` gets its policy); the
    /// certificate it renews stays accepted until its own expiry or the next renewal.
    pub async fn renew<E: Send + 'static>(
        &self,
        name: AgentName,
        cert_sha256: String,
        sign: impl FnOnce(&AgentPolicy) -> Result<Issued, E> + Send + 'static,
    ) -> Renewed<E> {
        match self {
            Self::Sqlite(d) => d.renew(name, cert_sha256, sign).await,
            Self::Postgres(d) => d.renew(name, cert_sha256, sign).await,
        }
    }

    /// Revokes `name` (enrolled or not: a certificate from the operator's CA is refused too).
    /// Returns whether the name was enrolled here.
    pub async fn revoke(&self, name: &AgentName, now: i64) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(d) => d.revoke(name, now).await,
            Self::Postgres(d) => d.revoke(name, now).await,
        }
    }

    /// Every revoked name, for the TLS handshake's check ([`crate::grpc::revocation`]).
    pub async fn revoked_names(&self) -> Result<HashSet<String>, StoreError> {
        match self {
            Self::Sqlite(d) => d.revoked_names().await,
            Self::Postgres(d) => d.revoked_names().await,
        }
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
        match self {
            Self::Sqlite(d) => d.set_drained(name, drained, now_ms).await,
            Self::Postgres(d) => d.set_drained(name, drained, now_ms).await,
        }
    }

    /// Whether the operator drained `name` through the API and has not lifted it.
    pub async fn is_drained(&self, name: &AgentName) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(d) => d.is_drained(name).await,
            Self::Postgres(d) => d.is_drained(name).await,
        }
    }

    /// Sets (or, with `None`, clears) the policy of `name`, enrolled or not.
    pub async fn set_policy(
        &self,
        name: &AgentName,
        policy: Option<AgentPolicy>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(d) => d.set_policy(name, policy).await,
            Self::Postgres(d) => d.set_policy(name, policy).await,
        }
    }
}
