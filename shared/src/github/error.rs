//! What can go wrong talking to GitHub, typed so a caller can decide what to do.
//!
//! Each variant names the request as `METHOD /path` (paths carry owner and repository names, never a
//! token). GitHub's own `message` is kept where it helps an operator ("Resource not accessible by
//! integration", a 422's validation text). Tokens, JWTs and JIT configs never appear here.

use std::time::SystemTime;

/// A GitHub request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// 404: the resource does not exist, or the credentials may not see it (GitHub answers 404, not
    /// 403, for private resources the caller cannot see).
    #[error("{request}: not found (or not visible to these credentials)")]
    NotFound { request: String },

    /// 401: the credentials were refused (revoked, expired, malformed).
    #[error("{request}: bad credentials: {message}")]
    Unauthorized { request: String, message: String },

    /// 403 that is not a rate limit: the credentials lack a permission or scope.
    #[error("{request}: forbidden: {message}{}", describe_missing(.accepted_permissions, .accepted_scopes))]
    Forbidden {
        request: String,
        message: String,
        /// `X-Accepted-GitHub-Permissions`: what a fine-grained token or App needs (alternatives split by `;`).
        accepted_permissions: Option<String>,
        /// `X-Accepted-OAuth-Scopes`: what a classic token needs.
        accepted_scopes: Option<String>,
    },

    /// The primary or secondary rate limit is exhausted and waiting was not allowed or did not help.
    #[error("{request}: {kind} rate limit exceeded{}", describe_until(.until))]
    RateLimited {
        request: String,
        kind: RateLimitKind,
        /// When GitHub said the limit lifts, if it did.
        until: Option<SystemTime>,
    },

    /// 422 (and 400): GitHub refused the request's content.
    #[error("{request}: validation failed: {message}")]
    Validation {
        request: String,
        message: String,
        /// Each `errors[]` entry, rendered as `resource.field: code (message)`.
        details: Vec<String>,
    },

    /// 409: the request conflicts with the current state (e.g. a runner name already in use).
    #[error("{request}: conflict: {message}")]
    Conflict { request: String, message: String },

    /// 5xx, after the bounded retries.
    #[error("{request}: GitHub server error {status}")]
    Server { request: String, status: u16 },

    /// Any other status.
    #[error("{request}: unexpected status {status}: {message}")]
    UnexpectedStatus {
        request: String,
        status: u16,
        message: String,
    },

    /// The request never got a response (connect, TLS, time-out), after the bounded retries.
    #[error("{request}: transport error")]
    Transport {
        request: String,
        #[source]
        source: reqwest::Error,
    },

    /// The response did not have the shape GitHub documents.
    #[error("{request}: unexpected response body")]
    Decode {
        request: String,
        #[source]
        source: serde_json::Error,
    },

    /// No credentials are configured for this owner (and no default token).
    #[error("no GitHub credentials are configured for owner {owner}")]
    NoCredentials { owner: String },

    /// A GitHub App's JWT could not be made, or its installation could not be found.
    #[error("GitHub App authentication for owner {owner} failed")]
    AppAuth {
        owner: String,
        #[source]
        source: Box<GithubError>,
    },

    /// The App's private key could not sign.
    #[error("cannot sign the GitHub App JWT")]
    Signing,

    /// A pagination `Link` pointed somewhere the credentials must not be sent.
    #[error("{request}: refusing to follow a pagination link to another host")]
    ForeignLink { request: String },

    /// Not sent: the API budget keeps what is left of the quota for more important calls.
    #[error("{request}: not sent ({kind} call): {reason}")]
    Deferred {
        request: String,
        kind: super::budget::CallKind,
        reason: super::budget::Deferral,
        /// When the quota window resets.
        until: Option<SystemTime>,
    },
}

/// Which of GitHub's rate limits was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKind {
    /// The hourly quota (`x-ratelimit-remaining: 0`), lifting at `x-ratelimit-reset`.
    Primary,
    /// An abuse limit (`retry-after`, or a 403/429 saying "secondary rate limit").
    Secondary,
}

impl std::fmt::Display for RateLimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateLimitKind::Primary => "primary",
            RateLimitKind::Secondary => "secondary",
        })
    }
}

impl GithubError {
    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, GithubError::NotFound { .. })
    }

    /// Whether repeating the request cannot help until something changes on the caller's side
    /// (credentials, permissions, configuration): 401, 403 (not a rate limit), 404, 422.
    pub fn is_permanent(&self) -> bool {
        match self {
            GithubError::Unauthorized { .. }
            | GithubError::Forbidden { .. }
            | GithubError::NotFound { .. }
            | GithubError::Validation { .. }
            | GithubError::NoCredentials { .. }
            | GithubError::Signing
            | GithubError::ForeignLink { .. } => true,
            GithubError::AppAuth { source, .. } => source.is_permanent(),
            _ => false,
        }
    }

    /// The HTTP status GitHub answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            GithubError::NotFound { .. } => 404,
            GithubError::Unauthorized { .. } => 401,
            GithubError::Forbidden { .. } => 403,
            GithubError::Validation { .. } => 422,
            GithubError::Conflict { .. } => 409,
            GithubError::Server { status, .. } | GithubError::UnexpectedStatus { status, .. } => {
                *status
            }
            GithubError::AppAuth { source, .. } => return source.status(),
            _ => return None,
        })
    }
}

fn describe_missing(permissions: &Option<String>, scopes: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(p) = permissions.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!(" (needs permission {p})"));
    }
    if let Some(s) = scopes.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!(" (needs scope {s})"));
    }
    out
}

fn describe_until(until: &Option<SystemTime>) -> String {
    match until.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
        Some(d) => format!(" until {} (epoch seconds)", d.as_secs()),
        None => String::new(),
    }
}
