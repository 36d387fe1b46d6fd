//! Minting one-time join tokens (`gha-controller agents join-token`).
//!
//! The token is written to the store that the running controller reads, so minting works
//! from another process on the same `STATE_DIR`.

use std::time::Duration;

use shared::ids::AgentName;
use shared::join_token::JoinToken;

use crate::config::Config;
use crate::store::{NewJoinToken, SqliteStore, StateStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the CA certificate to pin its fingerprint")]
    Ca(#[from] shared::tls::PemError),
    #[error("the time to live must be between 1 second and 30 days")]
    BadTtl,
}

/// A minted token and what it allows.
#[derive(Debug)]
pub struct Minted {
    pub token: String,
    pub expires_at: i64,
    pub agent_name: Option<AgentName>,
}

/// Mints a token valid for `ttl`, optionally fixing the agent's name, pinned to the CA of
/// `config` (the first certificate of `TLS_CA_FILE`).
pub async fn mint(
    config: &Config,
    ttl: Duration,
    agent_name: Option<AgentName>,
) -> Result<Minted, MintError> {
    if ttl.is_zero() || ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err(MintError::BadTtl);
    }
    let ca = shared::tls::read_certs(&config.tls.ca_file)?;
    let token = JoinToken::generate(Some(shared::tls::fingerprint(&ca[0])));
    let store = SqliteStore::open(&config.state_dir)?;
    let now = shared::runner::now_ms() / 1000;
    let expires_at = now + ttl.as_secs() as i64;
    store
        .insert_join_token(
            NewJoinToken {
                id: token.id.clone(),
                secret: token.secret.clone(),
                agent_name: agent_name.as_ref().map(|n| n.to_string()),
                expires_at,
            },
            now,
        )
        .await?;
    Ok(Minted {
        token: token.to_text(),
        expires_at,
        agent_name,
    })
}
