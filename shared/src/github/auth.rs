//! Credentials per owner: a personal access token, or a GitHub App that mints installation tokens.
//!
//! A GitHub App authenticates as itself with a short RS256 JWT (`iat` 60 s in the past for clock drift,
//! `exp` 9 minutes ahead: GitHub refuses more than 10), and acts on an owner with an installation
//! token that lasts one hour. Tokens are cached per owner and replaced `refresh_before` their expiry,
//! so no request ever carries a token about to lapse. Signing uses `ring` only (see TOOLCHAIN.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::error::GithubError;
use super::types::Secret;

/// How one owner authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A classic (`ghp_`) or fine-grained (`github_pat_`) personal access token.
    Token(Secret),
    /// A GitHub App installed on the owner.
    App(AppCredentials),
}

/// A GitHub App: its id (numeric App ID or client ID), its private key, and optionally the
/// installation to use (else it is looked up for the owner).
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub app_id: String,
    pub key: Arc<AppKey>,
    pub installation_id: Option<u64>,
}

/// An App's RSA private key, parsed once at start-up.
pub struct AppKey {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(***)")
    }
}

/// Why a private key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the private key is not PEM (expected BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)")]
    NotPem,
    #[error("the private key is not an RSA key ring accepts: {0}")]
    Rejected(String),
    #[error("cannot read the private key file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl AppKey {
    /// Parses a PKCS#1 (what GitHub hands out) or PKCS#8 PEM key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPem)?;
        let pair = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(KeyError::Rejected("not an RSA key".into())),
        }
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(Self { pair })
    }

    /// Reads and parses a key file (done once, at start-up).
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&bytes)
    }

    /// The PKCS#1 DER of the public half (what GitHub keeps to verify JWTs).
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.pair.public_key().as_ref().to_vec()
    }

    /// An App JWT valid from 60 s ago for 9 minutes: `iss` is the App ID (a number when it is one,
    /// else the client ID string).
    pub fn jwt(&self, app_id: &str, now: SystemTime) -> Result<Secret, GithubError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let iss = match app_id.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(app_id),
        };
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims =
            serde_json::json!({"iat": now.saturating_sub(60), "exp": now + 9 * 60, "iss": iss});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| GithubError::Signing)?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// An installation token and when it lapses.
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub token: Secret,
    pub expires_at: SystemTime,
}

/// One owner's App state: the installation (once known) and its current token.
#[derive(Debug, Default)]
pub(crate) struct InstallationSlot {
    pub installation_id: Option<u64>,
    pub token: Option<CachedToken>,
}

/// Installation tokens per owner (lower-cased).
///
/// The outer std mutex is held only to fetch or create an owner's slot; the slot's tokio mutex is
/// held across the minting request, so concurrent callers for one owner mint a single token.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<InstallationSlot>>>>,
}

impl TokenCache {
    pub fn slot(&self, owner: &str) -> Arc<tokio::sync::Mutex<InstallationSlot>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(owner.to_ascii_lowercase()).or_default().clone()
    }
}

impl CachedToken {
    /// Whether the token is still good for at least `margin`.
    pub fn fresh(&self, now: SystemTime, margin: Duration) -> bool {
        self.expires_at
            .duration_since(now)
            .map(|left| left > margin)
            .unwrap_or(false)
    }
}

/// Parses GitHub's `expires_at` (RFC 3339).
pub(crate) fn parse_timestamp(value: &str) -> Option<SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(parsed.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_offsets() {
        let t = parse_timestamp("2020-01-22T12:13:35.123-08:00").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_579_724_015
        );
        assert!(parse_timestamp("tomorrow").is_none());
    }

    #[test]
    fn freshness_keeps_a_margin() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let token = CachedToken {
            token: Secret::new("x"),
            expires_at: now + Duration::from_secs(300),
        };
        assert!(token.fresh(now, Duration::from_secs(60)));
        assert!(!token.fresh(now, Duration::from_secs(300)));
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("ghp_abc")), "Secret(***)");
    }
}
