//! Conditional requests: the last `ETag` and body per (owner, URL), so a repeated `GET` is sent
//! with `If-None-Match` and a `304 Not Modified` is answered from here.
//!
//! GitHub documents that "making a conditional request does not count against your primary rate
//! limit if a 304 response is returned and the request was made while correctly authorized"
//! (GitHub docs, "Best practices for using the REST API"). Entries are keyed by owner too: the
//! same URL read with another owner's credentials may show something else, and one owner's
//! cached answer must never be served to another.
//!
//! The cache is bounded (entries and bytes); when full, the least recently used entry goes.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::header::HeaderValue;

/// Most entries kept (a few per repository of a 1 000-repository organization).
pub const MAX_ENTRIES: usize = 4096;
/// Most body bytes kept in all.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
/// A body larger than this is not cached.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// A cached answer.
#[derive(Debug, Clone)]
pub struct Cached {
    pub etag: HeaderValue,
    pub body: Vec<u8>,
    /// The `link` header of the cached answer: a 304 need not repeat it, pagination needs it.
    pub link: Option<HeaderValue>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<(String, String), (Cached, u64)>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
pub struct EtagCache {
    max_entries: usize,
    max_bytes: usize,
    /// Read and written by every GET of the client; held for one map operation.
    entries: Mutex<Entries>,
}

impl Default for EtagCache {
    fn default() -> Self {
        Self::new(MAX_ENTRIES, MAX_BYTES)
    }
}

impl EtagCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached answer for `owner`'s `url`, marking it recently used.
    pub fn get(&self, owner: &str, url: &str) -> Option<Cached> {
        let mut e = self.lock();
        e.clock += 1;
        let clock = e.clock;
        let (cached, used) = e
            .map
            .get_mut(&(owner.to_ascii_lowercase(), url.to_owned()))?;
        *used = clock;
        Some(cached.clone())
    }

    /// Keeps `cached` as `owner`'s answer for `url`, evicting the least recently used as needed.
    pub fn put(&self, owner: &str, url: &str, cached: Cached) {
        if cached.body.len() > MAX_BODY.min(self.max_bytes) || self.max_entries == 0 {
            return;
        }
        let mut e = self.lock();
        e.clock += 1;
        let clock = e.clock;
        let key = (owner.to_ascii_lowercase(), url.to_owned());
        if let Some((old, _)) = e.map.remove(&key) {
            e.bytes -= old.body.len();
        }
        while !e.map.is_empty()
            && (e.map.len() >= self.max_entries || e.bytes + cached.body.len() > self.max_bytes)
        {
            let Some(oldest) = e
                .map
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((old, _)) = e.map.remove(&oldest) {
                e.bytes -= old.body.len();
            }
        }
        e.bytes += cached.body.len();
        e.map.insert(key, (cached, clock));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(tag: &'static str, size: usize) -> Cached {
        Cached {
            etag: HeaderValue::from_static(tag),
            body: vec![b'x'; size],
            link: None,
        }
    }

    #[test]
    fn entries_are_per_owner_and_bounded_least_recently_used_first() {
        let cache = EtagCache::new(2, 1024);
        cache.put("acme", "/a", cached("\"1\"", 10));
        assert!(cache.get("other", "/a").is_none(), "never across owners");
        cache.put("acme", "/b", cached("\"2\"", 10));
        assert!(cache.get("ACME", "/a").is_some()); // /a is now the most recent
        cache.put("acme", "/c", cached("\"3\"", 10));
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get("acme", "/b").is_none(),
            "the least recently used went"
        );
        assert!(cache.get("acme", "/a").is_some());
        assert!(cache.get("acme", "/c").is_some());
    }

    #[test]
    fn the_byte_bound_holds() {
        let cache = EtagCache::new(100, 100);
        for i in 0..10 {
            cache.put("acme", &format!("/{i}"), cached("\"x\"", 40));
        }
        assert_eq!(cache.len(), 2, "two 40-byte bodies fit in 100 bytes");
        cache.put("acme", "/big", cached("\"y\"", 101));
        assert!(cache.get("acme", "/big").is_none(), "too big to keep");
    }
}
