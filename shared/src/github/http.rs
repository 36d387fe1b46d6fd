//! One GitHub request, sent with bounded retries: rate-limit waits, 5xx and connection back-off.
//!
//! A request is kept as method + URL + JSON body, so a retry resends exactly the same body. A 5xx
//! answer to a POST is returned, not retried: GitHub may have acted before failing. Waits use
//! `tokio::time`, so tests drive them with paused time.
//!
//! Before a request is sent the [`Budget`] is asked whether its [`CallKind`] may spend quota now
//! (a refusal is [`GithubError::Deferred`]); every answer's `x-ratelimit-*` headers and cost land
//! there. A `GET` whose URL was answered with an `ETag` before is sent with `If-None-Match`, and a
//! `304` is answered from the [`EtagCache`] as the cached `200` (GitHub does not count it).

use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, ETAG, HeaderMap, IF_NONE_MATCH, LINK, USER_AGENT};
use reqwest::{Method, StatusCode};
use url::Url;

use super::budget::{Budget, CallKind};
use super::error::{GithubError, RateLimitKind};
use super::etag::{Cached, EtagCache};
use super::ratelimit::{Quota, classify, header_str};
use super::types::Secret;

/// How hard the client tries before returning an error.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// The longest rate-limit wait the client sits out; beyond it, [`GithubError::RateLimited`].
    pub max_rate_limit_wait: Duration,
    /// Wait after a secondary limit that came without `retry-after` (doubled each time).
    pub secondary_wait: Duration,
    /// First back-off after a 5xx or a failed connection (doubled each time).
    pub backoff: Duration,
    /// Time-out of one HTTP exchange.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            max_rate_limit_wait: Duration::from_secs(15 * 60),
            secondary_wait: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A request, kept whole so retries resend it unchanged.
#[derive(Debug, Clone)]
pub(crate) struct ApiRequest {
    pub method: Method,
    pub url: Url,
    pub body: Option<serde_json::Value>,
}

impl ApiRequest {
    /// `METHOD /path`: how errors and logs name the request (no query, no credentials).
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
}

/// A response whose status the transport did not handle itself.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The HTTP side of the client.
#[derive(Debug)]
pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub policy: RetryPolicy,
    /// Shared with every clone of the client and read by `/status` and `/metrics`.
    pub budget: std::sync::Arc<Budget>,
    /// `None` when conditional requests are off.
    pub etags: Option<EtagCache>,
}

impl Transport {
    /// Sends `req` with `bearer`, retrying rate limits, 5xx and connection failures within the policy.
    /// Returns any other response (2xx or an error status) for the caller to interpret.
    pub async fn execute(
        &self,
        owner: &str,
        req: &ApiRequest,
        bearer: &Secret,
    ) -> Result<ApiResponse, GithubError> {
        let label = req.label();
        let kind = CallKind::current();
        let epoch = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Err(reason) = self.budget.admit(owner, kind, epoch) {
            let until = self
                .budget
                .quotas()
                .into_iter()
                .find(|(o, q)| o.eq_ignore_ascii_case(owner) && q.resource == "core")
                .map(|(_, q)| std::time::UNIX_EPOCH + Duration::from_secs(q.reset));
            tracing::debug!(request = %label, %kind, %reason, "GitHub request deferred by the API budget");
            return Err(GithubError::Deferred {
                request: label,
                kind,
                reason,
                until,
            });
        }
        let url_key = req.url.as_str();
        let cached = match (&self.etags, req.method == Method::GET) {
            (Some(cache), true) => cache.get(owner, url_key),
            _ => None,
        };
        let mut secondary_hits = 0u32;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            let mut builder = self
                .http
                .request(req.method.clone(), req.url.clone())
                .header(AUTHORIZATION, format!("Bearer {}", bearer.expose()))
                .header(ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .header(USER_AGENT, "gha-scaler")
                .timeout(self.policy.request_timeout);
            if let Some(body) = &req.body {
                builder = builder.json(body);
            }
            if let Some(c) = &cached {
                builder = builder.header(IF_NONE_MATCH, c.etag.clone());
            }
            let response = match builder.send().await {
                Ok(response) => response,
                Err(source) => {
                    // A failed connect never reached GitHub; other failures are retried only when
                    // repeating the request cannot do anything twice.
                    let retry =
                        source.is_connect() || (source.is_timeout() && req.method != Method::POST);
                    if retry && !last {
                        let wait = self.policy.backoff * 2u32.saturating_pow(attempt - 1);
                        tracing::warn!(request = %label, attempt, wait_ms = wait.as_millis() as u64, "GitHub unreachable, retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(GithubError::Transport {
                        request: label,
                        source,
                    });
                }
            };
            let status = response.status();
            let mut headers = response.headers().clone();
            let not_modified = status == StatusCode::NOT_MODIFIED && cached.is_some();
            self.budget
                .record(owner, kind, Quota::from_headers(&headers), not_modified);
            if let (true, Some(c)) = (not_modified, &cached) {
                if let Some(link) = &c.link {
                    headers.insert(LINK, link.clone());
                }
                return Ok(ApiResponse {
                    status: StatusCode::OK,
                    headers,
                    body: c.body.clone(),
                });
            }
            let body = match response.bytes().await {
                Ok(bytes) => bytes.to_vec(),
                Err(source) => {
                    return Err(GithubError::Transport {
                        request: label,
                        source,
                    });
                }
            };

            if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
                let message = error_message(&body);
                let now = SystemTime::now();
                if let Some(hit) = classify(status, &headers, &message, now) {
                    let wait = if hit.hinted {
                        hit.until
                            .and_then(|t| t.duration_since(now).ok())
                            .unwrap_or(Duration::ZERO)
                            .max(Duration::from_secs(1))
                    } else {
                        secondary_hits += 1;
                        self.policy.secondary_wait * 2u32.saturating_pow(secondary_hits - 1)
                    };
                    if last || wait > self.policy.max_rate_limit_wait {
                        return Err(GithubError::RateLimited {
                            request: label,
                            kind: hit.kind,
                            until: hit.until.or(Some(now + wait)),
                        });
                    }
                    tracing::warn!(request = %label, kind = %hit.kind, wait_s = wait.as_secs(), "GitHub rate limit, waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            // A POST is not idempotent: after a 5xx GitHub may well have acted (created a runner,
            // a hook), so the caller decides what a retry means (see `generate-jitconfig`'s 409).
            if status.is_server_error() && !last && req.method != Method::POST {
                let wait = self.policy.backoff * 2u32.saturating_pow(attempt - 1);
                tracing::warn!(request = %label, status = status.as_u16(), attempt, "GitHub server error, retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            if let (Some(cache), Some(etag), true) = (
                &self.etags,
                headers.get(ETAG),
                req.method == Method::GET && status == StatusCode::OK,
            ) {
                cache.put(
                    owner,
                    url_key,
                    Cached {
                        etag: etag.clone(),
                        body: body.clone(),
                        link: headers.get(LINK).cloned(),
                    },
                );
            }
            return Ok(ApiResponse {
                status,
                headers,
                body,
            });
        }
    }
}

/// GitHub's `message`, or the start of a non-JSON body.
pub(crate) fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { message: Some(m) }) => m,
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// Turns an error status into the matching [`GithubError`].
pub(crate) fn into_error(label: String, response: &ApiResponse) -> GithubError {
    let message = error_message(&response.body);
    let status = response.status;
    match status.as_u16() {
        401 => GithubError::Unauthorized {
            request: label,
            message,
        },
        403 => GithubError::Forbidden {
            request: label,
            message,
            accepted_permissions: header_str(&response.headers, "x-accepted-github-permissions")
                .map(str::to_owned),
            accepted_scopes: header_str(&response.headers, "x-accepted-oauth-scopes")
                .map(str::to_owned),
        },
        404 => GithubError::NotFound { request: label },
        409 => GithubError::Conflict {
            request: label,
            message,
        },
        400 | 422 => GithubError::Validation {
            request: label,
            message,
            details: validation_details(&response.body),
        },
        429 => GithubError::RateLimited {
            request: label,
            kind: RateLimitKind::Secondary,
            until: None,
        },
        s if status.is_server_error() => GithubError::Server {
            request: label,
            status: s,
        },
        s => GithubError::UnexpectedStatus {
            request: label,
            status: s,
            message,
        },
    }
}

/// A 422's `errors[]`, each as `resource.field: code (message)`.
fn validation_details(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let Some(errors) = value.get("errors").and_then(|e| e.as_array()) else {
        return Vec::new();
    };
    errors
        .iter()
        .map(|e| match e {
            serde_json::Value::String(s) => s.clone(),
            e => {
                let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let mut s = format!(
                    "{}.{}: {}",
                    field("resource"),
                    field("field"),
                    field("code")
                );
                if !field("message").is_empty() {
                    s.push_str(&format!(" ({})", field("message")));
                }
                s
            }
        })
        .collect()
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = header_str(headers, "link")?;
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/issues?page=2>; rel=\"prev\", \
                 <https://api.github.com/repositories/1/issues?page=4>; rel=\"next\", \
                 <https://api.github.com/repositories/1/issues?page=515>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/issues?page=4")
        );
        h.insert(
            "link",
            HeaderValue::from_static("<https://x/?page=1>; rel=\"first\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn validation_errors_keep_githubs_words() {
        let body = br#"{"message":"Validation Failed","errors":[{"resource":"Hook","field":"config","code":"custom","message":"Hook already exists on this repository"}]}"#;
        let resp = ApiResponse {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            headers: HeaderMap::new(),
            body: body.to_vec(),
        };
        match into_error("POST /repos/o/r/hooks".into(), &resp) {
            GithubError::Validation {
                message, details, ..
            } => {
                assert_eq!(message, "Validation Failed");
                assert_eq!(
                    details,
                    vec!["Hook.config: custom (Hook already exists on this repository)"]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
