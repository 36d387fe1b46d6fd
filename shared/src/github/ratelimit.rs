//! Reading GitHub's rate-limit headers and deciding whether a refusal is a rate limit.
//!
//! The rules follow GitHub's "Rate limits for the REST API" (GITHUB-API.md §9): a 403 or 429 with
//! `retry-after` is a secondary limit (wait that long); with `x-ratelimit-remaining: 0` it is the
//! primary limit (wait until `x-ratelimit-reset`); a 429, or a 403 whose message says "secondary rate
//! limit", is a secondary limit without a hint (wait a minute, then back off exponentially). Every
//! other 403 is a permission problem and is **not** retried.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::error::RateLimitKind;

/// The `x-ratelimit-*` headers of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub resource: String,
    pub limit: u64,
    pub remaining: u64,
    pub used: u64,
    /// UTC epoch seconds.
    pub reset: u64,
}

impl Quota {
    /// The quota a response reports, if it carries the headers.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Some(Self {
            resource: header_str(headers, "x-ratelimit-resource")
                .unwrap_or("core")
                .to_owned(),
            limit: header_u64(headers, "x-ratelimit-limit")?,
            remaining: header_u64(headers, "x-ratelimit-remaining")?,
            used: header_u64(headers, "x-ratelimit-used").unwrap_or(0),
            reset: header_u64(headers, "x-ratelimit-reset").unwrap_or(0),
        })
    }
}

/// A refusal that is a rate limit, and how long to wait before trying again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHit {
    pub kind: RateLimitKind,
    /// When GitHub says the limit lifts, if it says so.
    pub until: Option<SystemTime>,
    /// Whether the wait came from GitHub (`retry-after` / reset) rather than our own default.
    pub hinted: bool,
}

/// Classifies a 403/429 response. `None` means it is not a rate limit.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
    now: SystemTime,
) -> Option<RateLimitHit> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    if let Some(secs) = header_u64(headers, "retry-after") {
        return Some(RateLimitHit {
            kind: RateLimitKind::Secondary,
            until: Some(now + Duration::from_secs(secs)),
            hinted: true,
        });
    }
    if header_u64(headers, "x-ratelimit-remaining") == Some(0) {
        let until =
            header_u64(headers, "x-ratelimit-reset").map(|s| UNIX_EPOCH + Duration::from_secs(s));
        return Some(RateLimitHit {
            kind: RateLimitKind::Primary,
            until,
            hinted: until.is_some(),
        });
    }
    let says_secondary = message
        .to_ascii_lowercase()
        .contains("secondary rate limit");
    if status == StatusCode::TOO_MANY_REQUESTS || says_secondary {
        return Some(RateLimitHit {
            kind: RateLimitKind::Secondary,
            until: None,
            hinted: false,
        });
    }
    None
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_is_a_secondary_limit_with_a_hint() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let hit = classify(
            StatusCode::FORBIDDEN,
            &headers(&[("retry-after", "30")]),
            "",
            now,
        )
        .unwrap();
        assert_eq!(hit.kind, RateLimitKind::Secondary);
        assert_eq!(hit.until, Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn zero_remaining_is_the_primary_limit_until_reset() {
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "5000"),
        ]);
        let hit = classify(StatusCode::TOO_MANY_REQUESTS, &h, "", UNIX_EPOCH).unwrap();
        assert_eq!(hit.kind, RateLimitKind::Primary);
        assert_eq!(hit.until, Some(UNIX_EPOCH + Duration::from_secs(5000)));
    }

    #[test]
    fn a_plain_403_is_not_a_rate_limit() {
        let h = headers(&[
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "5000"),
        ]);
        let msg = "Resource not accessible by personal access token";
        assert_eq!(classify(StatusCode::FORBIDDEN, &h, msg, UNIX_EPOCH), None);
    }

    #[test]
    fn a_403_saying_secondary_rate_limit_is_one() {
        let msg = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
        let hit = classify(StatusCode::FORBIDDEN, &HeaderMap::new(), msg, UNIX_EPOCH).unwrap();
        assert_eq!(hit.kind, RateLimitKind::Secondary);
        assert!(!hit.hinted);
    }

    #[test]
    fn quota_reads_the_headers() {
        let h = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4990"),
            ("x-ratelimit-used", "10"),
            ("x-ratelimit-reset", "1691591363"),
            ("x-ratelimit-resource", "core"),
        ]);
        let q = Quota::from_headers(&h).unwrap();
        assert_eq!(
            (q.limit, q.remaining, q.used, q.reset),
            (5000, 4990, 10, 1691591363)
        );
    }
}
