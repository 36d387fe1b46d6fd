//! Containment of failing starts: exponential back-off with jitter per cause, and circuits for
//! errors that retrying cannot fix. A pure type: the clock (`now_ms`) and the jitter sample are
//! passed in, so the rules are unit-tested without waiting.
//!
//! - A failed start backs off its *cause*: per owner for GitHub errors ([`Key::Owner`]), per agent
//!   for agent or engine errors ([`Key::Agent`]), per (owner, image) for runners that end without a
//!   job within the boot window ([`Key::Image`]).
//! - The wait after the n-th failure in a row is `initial × 2ⁿ⁻¹`, capped at `max`, less a random
//!   part of up to `jitter` of it (so many owners failing together do not retry in step).
//! - A failure that retrying cannot fix ([`Failure::permanent`]: a 401, 403, 404 or 422 from
//!   GitHub) opens a *circuit*: nothing is tried until `probe` has passed; then one start is the
//!   probe. One success resets the key (closes the circuit).
//! - While a key is blocked, exactly one attempt is let through when its time comes: the caller
//!   records its outcome before the next attempt, so a burst of queued jobs costs one call per
//!   window, not one per job.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// What a back-off is kept for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "key", rename_all = "snake_case")]
pub enum Key {
    /// GitHub refused the owner's registration.
    Owner { owner: String },
    /// The agent (or its engine) refused the runner.
    Agent { agent: String },
    /// Runners of this owner and image end without taking a job.
    Image { owner: String, image: String },
}

impl Key {
    pub fn cause(&self) -> &'static str {
        match self {
            Key::Owner { .. } => "github",
            Key::Agent { .. } => "agent",
            Key::Image { .. } => "crash",
        }
    }
}

/// One failed start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// For people: what failed and what to do, e.g. "owner acme: JIT registration refused 403
    /// 'Resource not accessible by integration' — grant Administration: write".
    pub reason: String,
    /// Retrying cannot fix it: open the circuit.
    pub permanent: bool,
}

/// The back-off settings (`BACKOFF_INITIAL`, `BACKOFF_MAX`, `CIRCUIT_PROBE_INTERVAL`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    pub probe: Duration,
    /// The share of a wait that may be taken off at random (0 = none, 0.5 = up to half).
    pub jitter: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            probe: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    failures: u32,
    next_try_ms: i64,
    circuit_open: bool,
    reason: String,
}

/// Why a key is blocked, for `/status` and the jobs API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    #[serde(flatten)]
    pub key: Key,
    /// `github`, `agent` or `crash` ([`Key::cause`]).
    pub cause: &'static str,
    pub reason: String,
    pub failures: u32,
    pub circuit_open: bool,
    /// When the next attempt may be made.
    pub next_try_ms: i64,
}

/// Every key's back-off. Bounded: a key exists only while it fails, and keys are owners, agents
/// and (owner, image) pairs of the configuration and the registry.
#[derive(Debug, Clone, Default)]
pub struct Backoffs {
    policy: Policy,
    entries: BTreeMap<Key, Entry>,
}

impl Backoffs {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: BTreeMap::new(),
        }
    }

    /// Records a failure at `now_ms`; `sample` is uniform in `[0, 1)` (the jitter).
    pub fn failure(&mut self, key: Key, failure: Failure, now_ms: i64, sample: f64) {
        let policy = self.policy;
        let entry = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            next_try_ms: now_ms,
            circuit_open: false,
            reason: String::new(),
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.circuit_open = failure.permanent;
        entry.reason = failure.reason;
        let wait = if failure.permanent {
            policy.probe
        } else {
            let doubled = policy
                .initial
                .saturating_mul(2u32.saturating_pow(entry.failures.saturating_sub(1).min(30)));
            let capped = doubled.min(policy.max);
            capped.mul_f64(1.0 - policy.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0))
        };
        entry.next_try_ms = now_ms.saturating_add(wait.as_millis() as i64);
    }

    /// One success resets the key.
    pub fn success(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Whether an attempt for `key` must wait at `now_ms`, and why.
    pub fn blocked(&self, key: &Key, now_ms: i64) -> Option<Blocked> {
        let entry = self.entries.get(key)?;
        (now_ms < entry.next_try_ms).then(|| Blocked {
            cause: key.cause(),
            key: key.clone(),
            reason: entry.reason.clone(),
            failures: entry.failures,
            circuit_open: entry.circuit_open,
            next_try_ms: entry.next_try_ms,
        })
    }

    /// Every failing key (blocked now or due for its next try).
    pub fn all(&self) -> Vec<Blocked> {
        self.entries
            .iter()
            .map(|(key, e)| Blocked {
                cause: key.cause(),
                key: key.clone(),
                reason: e.reason.clone(),
                failures: e.failures,
                circuit_open: e.circuit_open,
                next_try_ms: e.next_try_ms,
            })
            .collect()
    }

    /// Forgets keys that no longer exist (an agent that left, an owner no longer configured).
    pub fn retain(&mut self, mut keep: impl FnMut(&Key) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

/// `2m10s`, `45s`, `800ms`: how long until `until_ms`.
pub fn human_wait(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = (ms + 999) / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            probe: Duration::from_secs(120),
            jitter: 0.5,
        }
    }

    fn owner() -> Key {
        Key::Owner {
            owner: "acme".into(),
        }
    }

    fn transient() -> Failure {
        Failure {
            reason: "GitHub server error 502".into(),
            permanent: false,
        }
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let mut b = Backoffs::new(policy());
        let mut waits = Vec::new();
        let mut now = 0;
        for _ in 0..8 {
            b.failure(owner(), transient(), now, 0.0);
            let next = b.blocked(&owner(), now).unwrap().next_try_ms;
            waits.push((next - now) / 1000);
            now = next;
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn jitter_only_shortens_a_wait_within_its_share() {
        let mut b = Backoffs::new(policy());
        b.failure(owner(), transient(), 0, 0.999);
        let next = b.blocked(&owner(), 0).unwrap().next_try_ms;
        assert!((5_000..10_000).contains(&next), "{next}");
    }

    #[test]
    fn a_key_is_free_again_when_its_time_comes_and_one_success_resets_it() {
        let mut b = Backoffs::new(policy());
        b.failure(owner(), transient(), 0, 0.0);
        assert!(b.blocked(&owner(), 9_999).is_some());
        assert!(b.blocked(&owner(), 10_000).is_none(), "the next try is due");
        b.failure(owner(), transient(), 10_000, 0.0);
        assert_eq!(b.blocked(&owner(), 10_000).unwrap().next_try_ms, 30_000);
        b.success(&owner());
        assert!(b.blocked(&owner(), 10_000).is_none());
        b.failure(owner(), transient(), 10_000, 0.0);
        assert_eq!(
            b.blocked(&owner(), 10_000).unwrap().next_try_ms,
            20_000,
            "back to the first wait after a success"
        );
    }

    #[test]
    fn a_permanent_failure_opens_the_circuit_until_the_probe() {
        let mut b = Backoffs::new(policy());
        let refused = Failure {
            reason: "owner acme: JIT registration refused 403".into(),
            permanent: true,
        };
        b.failure(owner(), refused.clone(), 0, 0.0);
        let blocked = b.blocked(&owner(), 119_999).unwrap();
        assert!(blocked.circuit_open);
        assert_eq!(blocked.reason, refused.reason);
        assert!(b.blocked(&owner(), 120_000).is_none(), "the probe is due");
        // The probe fails: closed again for a probe interval, not longer or shorter.
        b.failure(owner(), refused, 120_000, 0.9);
        assert_eq!(b.blocked(&owner(), 120_000).unwrap().next_try_ms, 240_000);
    }

    #[test]
    fn causes_are_kept_apart() {
        let mut b = Backoffs::new(policy());
        b.failure(owner(), transient(), 0, 0.0);
        let other = Key::Owner {
            owner: "other".into(),
        };
        let agent = Key::Agent {
            agent: "acme".into(),
        };
        assert!(b.blocked(&other, 1).is_none());
        assert!(b.blocked(&agent, 1).is_none());
        b.retain(|k| *k != owner());
        assert!(b.blocked(&owner(), 1).is_none());
    }

    #[test]
    fn waits_read_like_people_write_them() {
        assert_eq!(human_wait(130_000), "2m10s");
        assert_eq!(human_wait(45_000), "45s");
        assert_eq!(human_wait(120_000), "2m");
        assert_eq!(human_wait(800), "800ms");
        assert_eq!(human_wait(-5), "0ms");
        assert_eq!(human_wait(3_700_000), "1h1m");
    }
}
