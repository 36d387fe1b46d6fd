//! How fast the dashboard's login form may be tried: a token bucket per client address and one
//! for everyone, so guessing the API token from one host, or from many, is slow.
//!
//! Every `POST /ui/login` takes a token from its client's bucket and from the global bucket
//! (good and bad tokens alike: a limited client cannot learn whether a guess was right). An
//! empty bucket answers 429 with `Retry-After` (see `super::login`). [`Buckets`] is a pure
//! state machine over an explicit clock, table-tested; [`LoginLimiter`] is the shared handle.
//!
//! Memory is bounded: at most [`MAX_CLIENTS`] addresses are remembered. A full bucket is the
//! same as a forgotten one, so full buckets are dropped first; past that the least recently
//! seen client is forgotten (the global bucket still holds the many-address case back).
//! Behind a reverse proxy every request comes from the proxy's address, and the per-client
//! limit acts as a second global one; forwarded headers are not trusted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Attempts a client may make at once, and how many it regains per minute.
pub const PER_CLIENT_PER_MINUTE: u32 = 10;
/// Attempts all clients together may make at once, and regain per minute.
pub const GLOBAL_PER_MINUTE: u32 = 60;
/// Client addresses remembered at once.
pub const MAX_CLIENTS: usize = 4096;

const MINUTE_MS: i64 = 60_000;

/// A token bucket holding up to `capacity` attempts, refilled at `capacity` per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn full(capacity: u32, now_ms: i64) -> Self {
        Self {
            tokens: f64::from(capacity),
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, capacity: u32, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64;
        let cap = f64::from(capacity);
        self.tokens = (self.tokens + elapsed * cap / MINUTE_MS as f64).min(cap);
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Milliseconds until one attempt is available (0: now).
    fn wait_ms(&self, capacity: u32) -> i64 {
        if self.tokens >= 1.0 {
            0
        } else {
            ((1.0 - self.tokens) * MINUTE_MS as f64 / f64::from(capacity.max(1))).ceil() as i64
        }
    }

    fn is_full(&self, capacity: u32) -> bool {
        self.tokens >= f64::from(capacity)
    }
}

/// Which limit refused an attempt, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// `true`: too many attempts from everyone; `false`: from this client.
    pub global: bool,
    /// Whole seconds to wait (at least 1), for `Retry-After`.
    pub retry_after_secs: u64,
}

/// The buckets and their limits, over an explicit clock.
#[derive(Debug, Clone)]
pub struct Buckets {
    per_client: u32,
    global_capacity: u32,
    max_clients: usize,
    global: Bucket,
    clients: HashMap<IpAddr, Bucket>,
}

impl Buckets {
    pub fn new(per_client: u32, global: u32, max_clients: usize, now_ms: i64) -> Self {
        Self {
            per_client: per_client.max(1),
            global_capacity: global.max(1),
            max_clients: max_clients.max(1),
            global: Bucket::full(global.max(1), now_ms),
            clients: HashMap::new(),
        }
    }

    /// Takes one attempt for `client` (`None`: address unknown, counted globally only), or
    /// says which limit refuses it. A refused attempt takes nothing.
    pub fn attempt(&mut self, client: Option<IpAddr>, now_ms: i64) -> Result<(), Limited> {
        self.global.refill(self.global_capacity, now_ms);
        let per_client = self.per_client;
        let mut bucket = match client {
            Some(ip) => {
                let mut b = self
                    .clients
                    .get(&ip)
                    .copied()
                    .unwrap_or(Bucket::full(per_client, now_ms));
                b.refill(per_client, now_ms);
                Some((ip, b))
            }
            None => None,
        };
        let limited = |global: bool, wait_ms: i64| Limited {
            global,
            retry_after_secs: (wait_ms.max(1) as u64).div_ceil(1000),
        };
        if let Some((_, b)) = &bucket
            && b.tokens < 1.0
        {
            return Err(limited(false, b.wait_ms(per_client)));
        }
        if self.global.tokens < 1.0 {
            return Err(limited(true, self.global.wait_ms(self.global_capacity)));
        }
        self.global.tokens -= 1.0;
        if let Some((ip, b)) = bucket.as_mut() {
            b.tokens -= 1.0;
            self.remember(*ip, *b, now_ms);
        }
        Ok(())
    }

    fn remember(&mut self, ip: IpAddr, bucket: Bucket, now_ms: i64) {
        if !self.clients.contains_key(&ip) && self.clients.len() >= self.max_clients {
            let per_client = self.per_client;
            self.clients.retain(|_, b| {
                let mut b = *b;
                b.refill(per_client, now_ms);
                !b.is_full(per_client)
            });
            if self.clients.len() >= self.max_clients
                && let Some(oldest) = self
                    .clients
                    .iter()
                    .min_by_key(|(_, b)| b.at_ms)
                    .map(|(k, _)| *k)
            {
                self.clients.remove(&oldest);
            }
        }
        self.clients.insert(ip, bucket);
    }

    /// Client addresses remembered now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

/// The login form's limiter. Clones share it.
#[derive(Clone)]
pub struct LoginLimiter {
    /// Held for one attempt, never across an `.await`; every login handler holds a clone.
    buckets: Arc<Mutex<Buckets>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(PER_CLIENT_PER_MINUTE, GLOBAL_PER_MINUTE)
    }
}

impl LoginLimiter {
    pub fn new(per_client: u32, global: u32) -> Self {
        Self {
            buckets: Arc::new(Mutex::new(Buckets::new(
                per_client,
                global,
                MAX_CLIENTS,
                shared::runner::now_ms(),
            ))),
        }
    }

    pub fn attempt(&self, client: Option<IpAddr>, now_ms: i64) -> Result<(), Limited> {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attempt(client, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let mut b = Buckets::new(3, 100, 10, 0);
        for _ in 0..3 {
            assert_eq!(b.attempt(ip(1), 0), Ok(()));
        }
        // One attempt comes back every 20 s at 3 a minute.
        assert_eq!(
            b.attempt(ip(1), 0),
            Err(Limited {
                global: false,
                retry_after_secs: 20
            })
        );
        assert_eq!(b.attempt(ip(2), 0), Ok(()), "another client is not held");
        assert!(b.attempt(ip(1), 19_999).is_err());
        assert_eq!(b.attempt(ip(1), 20_000), Ok(()));
        assert!(b.attempt(ip(1), 20_000).is_err());
    }

    #[test]
    fn the_global_limit_holds_many_addresses_back() {
        let mut b = Buckets::new(5, 4, 100, 0);
        for n in 0..4 {
            assert_eq!(b.attempt(ip(n), 0), Ok(()));
        }
        assert_eq!(
            b.attempt(ip(9), 0),
            Err(Limited {
                global: true,
                retry_after_secs: 15
            })
        );
        assert!(b.attempt(None, 0).unwrap_err().global);
        assert_eq!(b.attempt(None, 15_000), Ok(()));
    }

    #[test]
    fn a_refused_attempt_takes_nothing() {
        let mut b = Buckets::new(1, 100, 10, 0);
        assert_eq!(b.attempt(ip(1), 0), Ok(()));
        for t in [0, 10_000, 30_000] {
            assert!(b.attempt(ip(1), t).is_err());
        }
        assert_eq!(b.attempt(ip(1), 60_000), Ok(()));
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_addresses() {
        let mut b = Buckets::new(2, u32::MAX, 8, 0);
        for n in 0..=255u8 {
            let _ = b.attempt(ip(n), i64::from(n));
            assert!(b.clients() <= 8);
        }
        // The most recent clients are still held to their limit.
        assert!(b.attempt(ip(255), 255).is_ok());
        assert!(b.attempt(ip(255), 255).is_err());
    }
}
