//! The one error type of the HTTP surface, [`HttpError`], and how each refusal becomes a
//! response: the REST API, the management endpoints, `/status` and `/metrics`, the webhook
//! intake and the dashboard's JSON answers all refuse through it, so a cause has one status
//! and one code wherever it happens.
//!
//! Every answer is `{"error": "<code>", "message": "..."}`, plus `grant` when GitHub refused for a
//! missing permission or scope, `until` when GitHub's rate limit stops us, and `details` for
//! GitHub's validation errors. Headers: `WWW-Authenticate: Bearer` on a 401 for a missing or
//! wrong token, `Retry-After` on every 503 and on a GitHub rate limit. A GitHub failure is never
//! a 500: it is mapped on purpose here, and a refusal of the *owner's* GitHub credentials is a
//! 502 so it cannot be mistaken for a refusal of the caller's `API_TOKEN` (401). A state store
//! that cannot answer is a 503 when it may recover (a full write queue, an unreachable
//! database), a 500 otherwise. Tokens, secrets and request bodies never appear: GitHub errors
//! name requests as `METHOD /path`, and no variant carries a credential.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use shared::github::GithubError;

use super::webhook::signature::SignatureError;
use crate::store::StoreError;

/// Why an HTTP request was refused.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    // Who is asking.
    /// A missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The API is closed because no `API_TOKEN` is configured.
    #[error(
        "the API is disabled because API_TOKEN is not set: set API_TOKEN to a long random value \
         (at least 16 characters) and send it as `Authorization: Bearer <API_TOKEN>`"
    )]
    ApiDisabled,

    // What is asked.
    /// The request itself is malformed (bad JSON, bad id, unknown field, bad name).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that name or id.
    #[error("{0}")]
    NotFound(String),
    /// The path names an owner this controller does not serve.
    #[error("owner {owner} is not configured on this controller (configured: {configured})")]
    UnknownOwner { owner: String, configured: String },
    /// The request matches several things (say, a job id under two owners).
    #[error("{0}")]
    Ambiguous(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Creating or ensuring our hook needs `WEBHOOK_URL`.
    #[error(
        "WEBHOOK_URL is not set: set it to the public URL of this controller's /webhook \
         (or pass \"url\" when creating a hook)"
    )]
    NoWebhookUrl,

    // A webhook delivery.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("unsupported content type {0:?}: use application/json (or form)")]
    ContentType(String),
    #[error("the body is larger than this controller accepts ({0} bytes, WEBHOOK_MAX_BODY)")]
    TooLarge(usize),
    #[error("the body did not arrive within {0:?} (HTTP_BODY_TIMEOUT)")]
    BodyTimeout(Duration),
    #[error("cannot read the body")]
    Body,
    #[error("the payload is not valid JSON for this event: {0}")]
    Malformed(String),
    #[error(
        "the delivery names owner {0}, but it is signed with another owner's webhook secret; \
         each owner's hooks must use that owner's secret"
    )]
    OwnerMismatch(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("too many deliveries are being handled at once; GitHub can redeliver this one")]
    Overloaded,
    /// A delivery could not be committed: it was not accepted.
    #[error("the delivery could not be recorded; it was not accepted (GitHub can redeliver it)")]
    NotRecorded(#[source] StoreError),

    // What we depend on.
    /// Something this request needs cannot be reached now (an agent, say).
    #[error("{0}")]
    Unavailable(String),
    /// The state store could not answer.
    #[error("the state store is unavailable")]
    Store(#[from] StoreError),
    /// GitHub answered with an error; `context` says what we were doing.
    #[error("{context}: {source}")]
    Github {
        context: String,
        #[source]
        source: GithubError,
    },
}

impl HttpError {
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
pub use shared::error::chain;

impl HttpError {
    /// The status, code and extra body fields of this refusal.
    fn parts(&self) -> (StatusCode, &'static str, Value) {
        let plain = |status, code| (status, code, json!({}));
        match self {
            HttpError::Unauthorized => plain(StatusCode::UNAUTHORIZED, "unauthorized"),
            HttpError::ApiDisabled => plain(StatusCode::FORBIDDEN, "api_disabled"),
            HttpError::BadRequest(_) => plain(StatusCode::BAD_REQUEST, "bad_request"),
            HttpError::NotFound(_) => plain(StatusCode::NOT_FOUND, "not_found"),
            HttpError::UnknownOwner { .. } => plain(StatusCode::NOT_FOUND, "unknown_owner"),
            HttpError::Ambiguous(_) => plain(StatusCode::CONFLICT, "ambiguous"),
            HttpError::Conflict(_) => plain(StatusCode::CONFLICT, "conflict"),
            HttpError::NoWebhookUrl => plain(StatusCode::CONFLICT, "webhook_url_not_configured"),
            HttpError::MissingHeader(_) => plain(StatusCode::BAD_REQUEST, "missing_header"),
            HttpError::ContentType(_) => plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
            ),
            HttpError::TooLarge(_) => plain(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            HttpError::BodyTimeout(_) => plain(StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            HttpError::Body => plain(StatusCode::BAD_REQUEST, "unreadable_body"),
            HttpError::Malformed(_) => plain(StatusCode::BAD_REQUEST, "malformed_payload"),
            HttpError::OwnerMismatch(_) => plain(StatusCode::FORBIDDEN, "owner_mismatch"),
            HttpError::Signature(_) => plain(StatusCode::UNAUTHORIZED, "invalid_signature"),
            HttpError::Overloaded => plain(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            HttpError::NotRecorded(e) => plain(store_status(e), "not_recorded"),
            HttpError::Unavailable(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            HttpError::Store(e) => plain(store_status(e), "store_unavailable"),
            HttpError::Github { source, .. } => github_error_parts(source),
        }
    }

    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The machine-readable code of this refusal (the body's `error`, a metrics label).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// Seconds a client should wait: GitHub's rate limit, or 1 s for any 503.
    fn retry_after(&self, status: StatusCode) -> Option<u64> {
        match self {
            HttpError::Github {
                source: GithubError::RateLimited { until: Some(t), .. },
                ..
            } => Some(
                t.duration_since(SystemTime::now())
                    .map(|d| d.as_secs().max(1))
                    .unwrap_or(1),
            ),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        }
    }
}

/// A state store that may recover (a full write queue, an unreachable database) is a 503 that
/// asks to try again; anything else is our fault, a 500.
fn store_status(e: &StoreError) -> StatusCode {
    if e.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, code, mut extra) = self.parts();
        if let Some(map) = extra.as_object_mut() {
            map.retain(|_, v| !v.is_null());
            map.insert("error".into(), code.into());
            map.insert("message".into(), chain(&self).into());
        }
        let mut response = (status, Json(extra)).into_response();
        if let Some(secs) = self.retry_after(status)
            && let Ok(value) = secs.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, HttpError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::github::RateLimitKind;
    use std::time::Duration;

    async fn body(err: HttpError) -> (StatusCode, Value) {
        let resp = err.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn github_refusals_become_typed_json_never_500() {
        let (s, b) = body(HttpError::github(
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
        let resp = HttpError::github(
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

        let (s, b) = body(HttpError::github(
            "x",
            GithubError::Server {
                request: "GET /x".into(),
                status: 503,
            },
        ))
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(b["error"], "github_unavailable");
        let (s, _) = body(HttpError::github(
            "x",
            GithubError::Unauthorized {
                request: "GET /x".into(),
                message: "Bad credentials".into(),
            },
        ))
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "not our API's 401");
    }

    /// One cause, one answer, wherever it happens: every 503 asks to retry (`Retry-After`), a
    /// store that may recover is a 503 and one that cannot a 500, from the API as from the
    /// webhook intake, and a token refusal names the scheme. (Before the one error type, the
    /// API's 503s had no `Retry-After` and a corrupt store was a 503 there, a 500 at `/webhook`.)
    #[tokio::test]
    async fn every_refusal_has_one_status_and_code_and_its_headers() {
        let cases: Vec<(HttpError, StatusCode, &str)> = vec![
            (
                HttpError::Unauthorized,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                HttpError::ApiDisabled,
                StatusCode::FORBIDDEN,
                "api_disabled",
            ),
            (
                HttpError::BadRequest("x".into()),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                HttpError::NotFound("x".into()),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                HttpError::Overloaded,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
            ),
            (
                HttpError::Unavailable("agent".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                HttpError::Store(StoreError::Busy),
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
            ),
            (
                HttpError::Store(StoreError::Unexpected),
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_unavailable",
            ),
            (
                HttpError::NotRecorded(StoreError::Busy),
                StatusCode::SERVICE_UNAVAILABLE,
                "not_recorded",
            ),
            (
                HttpError::NotRecorded(StoreError::Unexpected),
                StatusCode::INTERNAL_SERVER_ERROR,
                "not_recorded",
            ),
            (
                HttpError::Signature(SignatureError::Missing),
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
            ),
        ];
        for (error, status, code) in cases {
            let name = format!("{error:?}");
            assert_eq!((error.status(), error.code()), (status, code), "{name}");
            let unauthorized = matches!(error, HttpError::Unauthorized);
            let resp = error.into_response();
            assert_eq!(resp.status(), status, "{name}");
            assert_eq!(
                resp.headers().contains_key(header::RETRY_AFTER),
                status == StatusCode::SERVICE_UNAVAILABLE,
                "{name}: Retry-After exactly on 503"
            );
            assert_eq!(
                resp.headers().get(header::WWW_AUTHENTICATE).is_some(),
                unauthorized,
                "{name}"
            );
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["error"], code, "{name}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}"
            );
        }
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(86_400)),
            "1970-01-02T00:00:00Z"
        );
    }
}
