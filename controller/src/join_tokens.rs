//! Minting one-time join tokens (`gha-controller agents join-token`) and the other operator
//! commands on enrolled agents (`agents revoke`, `agents policy`).
//!
//! Tokens are written to the agent directory that the running controllers read (SQLite in
//! `STATE_DIR`, or the PostgreSQL of `DATABASE_URL` that every replica shares), so minting
//! works from another process. Every token is bound to one agent name (the
//! operator's, or a generated one that is printed) and carries the policy the agent will get.

use std::time::Duration;

use shared::ids::AgentName;
use shared::join_token::JoinToken;

use crate::agent_policy::{self, AgentPolicy, PolicyError, PolicyRequest};
use crate::config::Config;
use crate::store::agents::{AgentDirectory, EnrollRefusal};
use crate::store::{NewJoinToken, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the CA certificate to pin its fingerprint")]
    Ca(#[from] shared::tls::PemError),
    #[error("the time to live must be between 1 second and 30 days")]
    BadTtl,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Refused(#[from] EnrollRefusal),
}

/// What the operator asks a token for.
#[derive(Debug, Clone)]
pub struct MintOptions {
    pub ttl: Duration,
    /// The agent's name; `None` generates one.
    pub name: Option<AgentName>,
    /// Give the name to a new agent even if one is enrolled under it.
    pub replace: bool,
    pub policy: PolicyRequest,
}

impl MintOptions {
    /// A token valid for `ttl` for `name`, with the default policy.
    pub fn new(ttl: Duration, name: Option<AgentName>) -> Self {
        Self {
            ttl,
            name,
            replace: false,
            policy: PolicyRequest::default(),
        }
    }
}

/// A minted token and what it allows.
#[derive(Debug)]
pub struct Minted {
    pub token: String,
    pub expires_at: i64,
    pub agent_name: AgentName,
    pub policy: AgentPolicy,
}

fn generated_name() -> AgentName {
    let name = format!("agent-{:08x}", rand::random::<u32>());
    // Lower-case letters, digits and '-': always a valid agent name.
    AgentName::parse(&name).unwrap_or_else(|_| unreachable!("{name} is a valid agent name"))
}

fn configured_owners(config: &Config) -> Vec<String> {
    config.owners.iter().map(|o| o.name.clone()).collect()
}

/// Mints a token pinned to the CA of `config` (the first certificate of `TLS_CA_FILE`).
pub async fn mint(config: &Config, options: MintOptions) -> Result<Minted, MintError> {
    if options.ttl.is_zero() || options.ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err(MintError::BadTtl);
    }
    let policy = agent_policy::resolve(&options.policy, &configured_owners(config))?;
    let ca = shared::tls::read_certs(&config.tls.ca_file)?;
    let token = JoinToken::generate(Some(shared::tls::fingerprint(&ca[0])));
    let directory = AgentDirectory::open(config).await?;
    let now = shared::runner::now_ms() / 1000;
    let expires_at = now + options.ttl.as_secs() as i64;
    let name = options.name.unwrap_or_else(generated_name);
    directory
        .mint(
            NewJoinToken {
                id: token.id.clone(),
                secret: token.secret.clone(),
                agent_name: Some(name.to_string()),
                expires_at,
            },
            name.clone(),
            options.replace,
            policy.clone(),
            now,
        )
        .await??;
    Ok(Minted {
        token: token.to_text(),
        expires_at,
        agent_name: name,
        policy,
    })
}

/// Revokes `name` for good (until it is enrolled again with `--replace`). Returns whether it
/// had been enrolled with a join token.
pub async fn revoke(config: &Config, name: &AgentName) -> Result<bool, MintError> {
    let directory = AgentDirectory::open(config).await?;
    Ok(directory
        .revoke(name, shared::runner::now_ms() / 1000)
        .await?)
}

/// Sets what `name` may serve (also for an agent with a certificate from the operator's CA).
pub async fn set_policy(
    config: &Config,
    name: &AgentName,
    request: &PolicyRequest,
) -> Result<AgentPolicy, MintError> {
    let policy = agent_policy::resolve(request, &configured_owners(config))?;
    let directory = AgentDirectory::open(config).await?;
    directory.set_policy(name, Some(policy.clone())).await?;
    Ok(policy)
}
