//! Who may call what, decided in one place for the whole HTTP surface.
//!
//! - `/health`, `/ready`, `/version` and `/webhook` (signed: [`super::webhook`]) are open;
//! - `/status` answers aggregates to anyone and details (repository, job, runner and agent
//!   names) only with `Bearer <API_TOKEN>` or the read-only `Bearer <STATUS_TOKEN>`;
//! - `/metrics` needs `Bearer <METRICS_TOKEN>` (or the API token) when `METRICS_TOKEN` is set;
//! - `/api/v1` needs `Bearer <API_TOKEN>` ([`require_token`]); without `API_TOKEN` it is closed;
//! - the dashboard takes either token at its login form or as a bearer ([`super::ui::auth`]
//!   keeps its sessions, hashed with the same [`TokenDigest`]).
//!
//! Tokens are kept and compared as SHA-256 digests in constant time, so neither their content
//! nor their length leaks through timing.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, HttpError};
use crate::config::Config;

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A bearer token as kept in memory: its SHA-256 digest only.
#[derive(Clone, Copy)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant time over fixed-length digests: no early exit, no length to measure.
    pub fn matches(&self, given: &TokenDigest) -> bool {
        bool::from(self.0.ct_eq(&given.0))
    }
}

/// The configured bearer tokens (`API_TOKEN`, `STATUS_TOKEN`, `METRICS_TOKEN`), as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    api: Option<TokenDigest>,
    status: Option<TokenDigest>,
    metrics: Option<TokenDigest>,
}

/// What a request's `Authorization` header proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer {
    /// No `Authorization` header.
    Absent,
    /// A bearer token that matches none of the accepted ones (or a malformed header).
    Wrong,
    /// One of the accepted tokens.
    Valid,
}

/// Which configured token a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `API_TOKEN`: everything.
    Api,
    /// `STATUS_TOKEN`: read-only.
    Status,
    /// Neither.
    None,
}

impl Tokens {
    pub fn from_config(config: &Config) -> Self {
        let digest =
            |t: &Option<crate::config::Secret>| t.as_ref().map(|t| TokenDigest::of(t.expose()));
        Self {
            api: digest(&config.api_token),
            status: digest(&config.status_token),
            metrics: digest(&config.metrics_token),
        }
    }

    /// Whether `API_TOKEN` is configured.
    pub fn api_enabled(&self) -> bool {
        self.api.is_some()
    }

    fn check(headers: &HeaderMap, accepted: &[Option<TokenDigest>]) -> Bearer {
        if !headers.contains_key(header::AUTHORIZATION) {
            return Bearer::Absent;
        }
        let Some(given) = bearer_token(headers).map(TokenDigest::of) else {
            return Bearer::Wrong;
        };
        // Every accepted token is compared, matched or not.
        let matched = accepted
            .iter()
            .flatten()
            .fold(false, |any, t| any | t.matches(&given));
        if matched {
            Bearer::Valid
        } else {
            Bearer::Wrong
        }
    }

    /// Which configured token `token` is (the dashboard's login form): every digest is compared.
    pub fn classify(&self, token: &str) -> TokenKind {
        let given = TokenDigest::of(token);
        let is = |t: &Option<TokenDigest>| t.as_ref().is_some_and(|t| t.matches(&given));
        let (api, status) = (is(&self.api), is(&self.status));
        if api {
            TokenKind::Api
        } else if status {
            TokenKind::Status
        } else {
            TokenKind::None
        }
    }

    /// Whether the dashboard can be opened at all (`API_TOKEN` or `STATUS_TOKEN` is set).
    pub fn dashboard_enabled(&self) -> bool {
        self.api.is_some() || self.status.is_some()
    }

    /// The API token.
    pub fn api(&self, headers: &HeaderMap) -> Bearer {
        Self::check(headers, &[self.api])
    }

    /// Details of `/status`: the API token or `STATUS_TOKEN`.
    pub fn status(&self, headers: &HeaderMap) -> Bearer {
        Self::check(headers, &[self.api, self.status])
    }

    /// `/metrics`: open unless `METRICS_TOKEN` is set; then it or the API token.
    pub fn metrics(&self, headers: &HeaderMap) -> Bearer {
        if self.metrics.is_none() {
            return Bearer::Valid;
        }
        Self::check(headers, &[self.metrics, self.api])
    }
}

/// `Authorization: Bearer <API_TOKEN>`, compared as digests in constant time. Without
/// `API_TOKEN` the API is closed (403 saying how to open it), never open to anyone.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if !state.tokens.api_enabled() {
        return Err(HttpError::ApiDisabled);
    }
    if state.tokens.api(request.headers()) != Bearer::Valid {
        return Err(HttpError::Unauthorized);
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn tokens_are_compared_as_digests_whatever_their_length() {
        let t = TokenDigest::of(TOKEN);
        assert!(t.matches(&TokenDigest::of(TOKEN)));
        for other in ["", "0", "0123456789abcdef-toke", "0123456789abcdef-tokenX"] {
            assert!(!t.matches(&TokenDigest::of(other)), "{other:?}");
        }
    }
}
