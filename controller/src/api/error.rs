//! The management API's errors and how each becomes a JSON response.
//!
//! Every answer is `{"error": "<code>", "message": "..."}`, plus `grant` when GitHub refused for a
//! missing permission or scope, `until` when GitHub's rate limit stops us, and `details` for
//! GitHub's validation errors. A GitHub failure is never a 500: it is mapped on purpose here, and
//! a refusal of the *owner's* GitHub credentials is a 502 so it cannot be mistaken for a refusal
//! of the caller's `API_TOKEN` (401). Tokens and secrets never appear: GitHub errors name requests
//! as `METHOD /path`, and no variant carries a credential.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use shared::github::GithubError;

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The path names an owner this controller does not serve.
    #[error("owner {owner} is not configured on this controller (configured: {configured})")]
    UnknownOwner { owner: String, configured: String },

    /// The request itself is malformed (bad JSON, bad id, unknown field).
    #[error("{0}")]
    BadRequest(String),

    /// Creating or ensuring our hook needs `WEBHOOK_URL`.
    #[error(
        "WEBHOOK_URL is not set: set it to the public URL of this controller's /webhook \
         (or pass \"url\" when creating a hook)"
    )]
    NoWebhookUrl,

    /// GitHub answered with an error; `context` says what we were doing.
    #[error("{context}: {source}")]
    Github {
        context: String,
        #[source]
        source: GithubError,
    },
}

impl ManagementError {
    /// Wraps a GitHub error with what we were doing.
    pub fn github(context: impl Into<String>, source: GithubError) -> Self {
        Self::Github {
            context: context.into(),
            source,
        }
    }
}

/// What to grant, from GitHub's `X-Accepted-GitHub-Permissions` / `X-Accepted-OAuth-Scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// For fine-grained tokens and GitHub Apps (alternatives separated by `;`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// For classic tokens (any one of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
}

impl Grant {
    /// The grant a GitHub 403 names, if it names one.
    pub fn from_error(err: &GithubError) -> Option<Grant> {
        match err {
            GithubError::Forbidden {
                accepted_permissions,
                accepted_scopes,
                ..
            } => {
                let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
                let grant = Grant {
                    permissions: nonempty(accepted_permissions),
                    scopes: nonempty(accepted_scopes),
                };
                (grant.permissions.is_some() || grant.scopes.is_some()).then_some(grant)
            }
            GithubError::AppAuth { source, .. } => Grant::from_error(source),
            _ => None,
        }
    }
}

/// RFC 3339 (`2026-01-02T03:04:05Z`) for a point in time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// The status, code and extra fields of a GitHub error as we pass it on.
pub fn github_error_parts(err: &GithubError) -> (StatusCode, &'static str, Value) {
    match err {
        GithubError::NotFound { .. } => (StatusCode::NOT_FOUND, "github_not_found", json!({})),
        GithubError::Forbidden { .. } => (
            StatusCode::FORBIDDEN,
            "github_forbidden",
            json!({ "grant": Grant::from_error(err) }),
        ),
        GithubError::RateLimited { kind, until, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "github_rate_limited",
            json!({ "limit": kind.to_string(), "until": until.map(rfc3339) }),
        ),
        GithubError::Deferred { until, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "github_quota_reserved",
            json!({ "until": until.map(rfc3339) }),
        ),
        GithubError::Validation { details, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "github_validation_failed",
            json!({ "details": details }),
        ),
        GithubError::Conflict { .. } => (StatusCode::CONFLICT, "github_conflict", json!({})),
        GithubError::Unauthorized { .. } => {
            (StatusCode::BAD_GATEWAY, "github_bad_credentials", json!({}))
        }
        GithubError::NoCredentials { .. } | GithubError::AppAuth { .. } | GithubError::Signing => (
            StatusCode::BAD_GATEWAY,
            "github_credentials_unusable",
            json!({ "grant": Grant::from_error(err) }),
        ),
        GithubError::Server { .. }
        | GithubError::UnexpectedStatus { .. }
        | GithubError::Transport { .. }
        | GithubError::Decode { .. }
        | GithubError::ForeignLink { .. } => {
            (StatusCode::BAD_GATEWAY, "github_unavailable", json!({}))
        }
    }
}

/// The full message of an error and its sources (`a: b: c`), for bodies and logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl IntoResponse for ManagementError {
    fn into_response(self) -> Response {
        let (status, code, mut extra) = match &self {
            ManagementError::UnknownOwner { .. } => {
                (StatusCode::NOT_FOUND, "unknown_owner", json!({}))
            }
            ManagementError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", json!({})),
            ManagementError::NoWebhookUrl => (
                StatusCode::CONFLICT,
                "webhook_url_not_configured",
                json!({}),
            ),
            ManagementError::Github { source, .. } => github_error_parts(source),
        };
        let retry_after = match &self {
            ManagementError::Github {
                source: GithubError::RateLimited { until: Some(t), .. },
                ..
            } => Some(
                t.duration_since(SystemTime::now())
                    .map(|d| d.as_secs().max(1))
                    .unwrap_or(1),
            ),
            _ => None,
        };
        if let Some(map) = extra.as_object_mut() {
            map.retain(|_, v| !v.is_null());
            map.insert("error".into(), code.into());
            map.insert("message".into(), chain(&self).into());
        }
        let mut response = (status, Json(extra)).into_response();
        if let Some(secs) = retry_after
            && let Ok(value) = secs.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::github::RateLimitKind;
    use std::time::Duration;

    async fn body(err: ManagementError) -> (StatusCode, Value) {
        let resp = err.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn github_refusals_become_typed_json_never_500() {
        let (s, b) = body(ManagementError::github(
            "listing hooks",
            GithubError::Forbidden {
                request: "GET /repos/a/b/hooks".into(),
                message: "Resource not accessible by personal access token".into(),
                accepted_permissions: Some("repository_hooks=read".into()),
                accepted_scopes: Some(String::new()),
            },
        ))
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(b["error"], "github_forbidden");
        assert_eq!(b["grant"], json!({"permissions": "repository_hooks=read"}));
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .starts_with("listing hooks: ")
        );

        let until = SystemTime::now() + Duration::from_secs(90);
        let resp = ManagementError::github(
            "x",
            GithubError::RateLimited {
                request: "GET /x".into(),
                kind: RateLimitKind::Primary,
                until: Some(until),
            },
        )
        .into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = resp.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=90).contains(&retry));

        let (s, b) = body(ManagementError::github(
            "x",
            GithubError::Server {
                request: "GET /x".into(),
                status: 503,
            },
        ))
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(b["error"], "github_unavailable");
        let (s, _) = body(ManagementError::github(
            "x",
            GithubError::Unauthorized {
                request: "GET /x".into(),
                message: "Bad credentials".into(),
            },
        ))
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "not our API's 401");
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(86_400)),
            "1970-01-02T00:00:00Z"
        );
    }
}
