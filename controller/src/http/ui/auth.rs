//! Who may see the dashboard and who may change things from it.
//!
//! The login form takes the API token (full access: pages and the drain button) or the
//! read-only `STATUS_TOKEN` (pages only). A good token buys a random session id in an
//! `HttpOnly; SameSite=Strict` cookie scoped to `/ui`; the token itself never goes into a
//! cookie. Scripts may instead send `Authorization: Bearer <token>` on every request.
//!
//! State-changing requests (drain, logout) are form `POST`s that must carry the session's
//! CSRF token, and are refused when an `Origin` header names another host. Sessions live in a
//! bounded map owned by [`Sessions`]: at most [`MAX_SESSIONS`], each for [`SESSION_TTL_MS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, header};
use rand::RngCore;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Read the pages.
    Read,
    /// Read, and drain agents.
    Write,
}

/// The cookie carrying the session id.
pub const COOKIE: &str = "gha_scaler_session";
/// Sessions kept at once; past it the one closest to expiry is dropped.
pub const MAX_SESSIONS: usize = 1024;
/// A session's life.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

#[derive(Debug, Clone)]
pub struct Session {
    pub access: Access,
    pub csrf: String,
    pub expires_ms: i64,
}

/// The logged-in sessions, keyed by the SHA-256 of their id (the id itself is not kept).
#[derive(Clone, Default)]
pub struct Sessions {
    /// Held for one lookup or insert, never across an `.await`; every dashboard handler
    /// holds a clone.
    map: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(id: &str) -> [u8; 32] {
    crate::http::auth::TokenDigest::of(id).0
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session; returns its id (for the cookie).
    pub fn create(&self, access: Access, now_ms: i64) -> String {
        let id = random_hex();
        let mut map = self.map();
        map.retain(|_, s| s.expires_ms > now_ms);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&id),
            Session {
                access,
                csrf: random_hex(),
                expires_ms: now_ms + SESSION_TTL_MS,
            },
        );
        id
    }

    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        self.map()
            .get(&digest(id))
            .filter(|s| s.expires_ms > now_ms)
            .cloned()
    }

    pub fn remove(&self, id: &str) {
        self.map().remove(&digest(id));
    }
}

/// The session id in a `Cookie` header, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` value for a session id (an empty id with `Max-Age=0` logs out).
pub fn set_cookie(id: &str) -> String {
    let max_age = if id.is_empty() {
        0
    } else {
        SESSION_TTL_MS / 1000
    };
    format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// Whether a state-changing request comes from our own pages: an `Origin` header, when the
/// browser sends one, must name the host the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Compares CSRF tokens in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    use crate::http::auth::TokenDigest;
    TokenDigest::of(expected).matches(&TokenDigest::of(given))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn sessions_are_found_by_id_until_they_expire_and_are_bounded() {
        let s = Sessions::default();
        let id = s.create(Access::Read, 0);
        assert_eq!(s.get(&id, 1).unwrap().access, Access::Read);
        assert!(s.get(&id, SESSION_TTL_MS).is_none());
        assert!(s.get("not-an-id", 1).is_none());
        for _ in 0..MAX_SESSIONS + 10 {
            s.create(Access::Write, 1);
        }
        assert_eq!(s.map().len(), MAX_SESSIONS);
        let id = s.create(Access::Write, 2);
        s.remove(&id);
        assert!(s.get(&id, 3).is_none());
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; gha_scaler_session=abc; c=d"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert!(set_cookie("abc").contains("HttpOnly; SameSite=Strict"));
        assert!(set_cookie("").ends_with("Max-Age=0"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin header");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        assert!(csrf_matches("x1", "x1") && !csrf_matches("x1", "x2"));
    }
}
