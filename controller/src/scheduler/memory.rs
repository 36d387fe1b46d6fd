//! The scheduler's in-memory bookkeeping between activations: stops it sent (for the stop
//! deadline and to send each at most every 30 s), registrations it deleted (so a DELETE is not
//! re-sent every pass), strays it told to stop, and the back-offs of failing starts.
//!
//! None of it needs to survive a restart: losing it costs at most one repeated stop or DELETE.
//! Every map is bounded: entries are forgotten when their runner ends, and anything older than
//! `FORGET_MS` is dropped on each write.

use std::collections::HashMap;

use shared::owner::Owner;
use std::sync::Mutex;

use super::backoff::{Backoffs, Policy};
use super::planner::JobKey;
use crate::store::RunnerRecord;

/// Entries older than this are dropped (a runner cannot live this long without ending).
const FORGET_MS: i64 = 24 * 60 * 60 * 1000;
/// Strays, and runners told to stop, are told at most this often.
const STRAY_REPEAT_MS: i64 = 30_000;
const STOP_REPEAT_MS: i64 = 30_000;
/// A stray entry is forgotten after this.
const STRAY_FORGET_MS: i64 = 600_000;

#[derive(Debug, Default)]
struct Books {
    /// Runner id → when it was first and last told to stop.
    stops: HashMap<String, (i64, i64)>,
    /// Runner id → until when GitHub's `busy` vetoes stopping it as idle.
    busy: HashMap<String, i64>,
    /// (owner, GitHub runner id) → when its registration was deleted.
    deleted: HashMap<(Owner, u64), i64>,
    /// Stray runner id → when it was last told to stop.
    strays: HashMap<String, i64>,
    /// Runner id seen on an agent without a live record of ours → since when this controller
    /// has seen it so (the stray grace counts from here, not from the agent's report time,
    /// which every re-report renews). Only the ids seen in the latest pass are kept.
    unknown: HashMap<String, i64>,
    /// (owner, job id) → when it was last re-checked as stale (`stale.rs`).
    stale: HashMap<JobKey, i64>,
    /// Owner → when its registrations were last swept (`sweep.rs`).
    sweeps: HashMap<Owner, i64>,
    /// (owner, GitHub runner id) → since when it has been seen as a leftover.
    leftovers: HashMap<(Owner, u64), i64>,
    /// Failing start causes (`backoff.rs`).
    backoffs: Backoffs,
    /// Runners that ended cleanly without a known job, until when they settle (see the
    /// planner's rules). Bounded: entries last `SETTLE_MS` and at most `SETTLING_MAX` are kept.
    settling: HashMap<String, (RunnerRecord, i64)>,
}

/// How long a runner that ended cleanly without a known job absorbs one queued job: GitHub
/// sends `in_progress` when the job starts, so a longer gap means the webhook was lost and a
/// new runner is due.
pub const SETTLE_MS: i64 = 15_000;
const SETTLING_MAX: usize = 10_000;

/// Only the scheduler's own task uses it; the mutex is never held across `.await`.
#[derive(Debug, Default)]
pub struct SchedulerMemory(Mutex<Books>);

impl SchedulerMemory {
    pub fn new(policy: Policy) -> Self {
        Self(Mutex::new(Books {
            backoffs: Backoffs::new(policy),
            ..Books::default()
        }))
    }

    pub fn backoffs<T>(&self, f: impl FnOnce(&mut Backoffs) -> T) -> T {
        self.with(|b| f(&mut b.backoffs))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Books) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// When runner `id` was first told to stop.
    pub fn stop_sent(&self, id: &str) -> Option<i64> {
        self.with(|b| b.stops.get(id).map(|(first, _)| *first))
    }

    /// Whether to (re)send a stop to runner `id` now: the first time, then every 30 s. Records it.
    pub fn stop_due(&self, id: &str, now: i64) -> bool {
        self.with(|b| {
            b.stops.retain(|_, (first, _)| now - *first < FORGET_MS);
            match b.stops.get_mut(id) {
                Some((_, last)) if now - *last < STOP_REPEAT_MS => false,
                Some((_, last)) => {
                    *last = now;
                    true
                }
                None => {
                    b.stops.insert(id.to_owned(), (now, now));
                    true
                }
            }
        })
    }

    pub fn forget_stop(&self, id: &str) {
        self.with(|b| {
            b.stops.remove(id);
            b.busy.remove(id);
        });
    }

    /// Whether GitHub said recently that runner `id` is busy (so it is not asked again yet).
    pub fn busy_vetoed(&self, id: &str, now: i64) -> bool {
        self.with(|b| b.busy.get(id).is_some_and(|until| now < *until))
    }

    pub fn veto_busy(&self, id: &str, until: i64) {
        self.with(|b| {
            b.busy.retain(|_, u| until - *u < FORGET_MS);
            b.busy.insert(id.to_owned(), until);
        });
    }

    /// The last stale checks of `queued` jobs; others are forgotten.
    pub fn stale_checks(&self, queued: impl Iterator<Item = JobKey>) -> HashMap<JobKey, i64> {
        let keep: std::collections::HashSet<JobKey> = queued.collect();
        self.with(|b| {
            b.stale.retain(|id, _| keep.contains(id));
            b.stale.clone()
        })
    }

    pub fn mark_stale_checked(&self, key: JobKey, now: i64) {
        self.with(|b| b.stale.insert(key, now));
    }

    /// Whether `owner`'s registrations are due for a sweep (every `period_ms`, the first one
    /// period after start-up, so a start is never slowed by it). Records it.
    pub fn sweep_due(&self, owner: &Owner, now: i64, period_ms: i64) -> bool {
        self.with(|b| match b.sweeps.get(owner) {
            None => {
                b.sweeps.insert(owner.clone(), now);
                false
            }
            Some(at) if now - at < period_ms => false,
            Some(_) => {
                b.sweeps.insert(owner.clone(), now);
                true
            }
        })
    }

    /// Since when registration `id` of `owner` has been a leftover (now, if just found).
    pub fn leftover_since(&self, owner: &Owner, id: u64, now: i64) -> i64 {
        self.with(|b| *b.leftovers.entry((owner.clone(), id)).or_insert(now))
    }

    /// Keeps only the leftovers of `owner` seen in its latest sweep.
    pub fn keep_leftovers(&self, owner: &Owner, seen: &HashMap<u64, i64>) {
        self.with(|b| {
            b.leftovers
                .retain(|(o, id), _| o != owner || seen.contains_key(id));
        });
    }

    /// Claims the deletion of a registration: `true` the first time, `false` once it was done.
    pub fn claim_delete(&self, owner: &Owner, github_id: u64, now: i64) -> bool {
        self.with(|b| {
            b.deleted.retain(|_, at| now - *at < FORGET_MS);
            b.deleted.insert((owner.clone(), github_id), now).is_none()
        })
    }

    /// A deletion that failed may be tried again.
    pub fn release_delete(&self, owner: &Owner, github_id: u64) {
        self.with(|b| b.deleted.remove(&(owner.clone(), github_id)));
    }

    /// Runner `r` ended with exit code 0 before GitHub told which job it took.
    pub fn settle(&self, r: RunnerRecord, now: i64) {
        self.with(|b| {
            b.settling.retain(|_, (_, until)| now < *until);
            if b.settling.len() < SETTLING_MAX {
                b.settling.insert(r.id.clone(), (r, now + SETTLE_MS));
            }
        });
    }

    /// The runners still settling at `now`.
    pub fn settling(&self, now: i64) -> Vec<RunnerRecord> {
        self.with(|b| {
            b.settling.retain(|_, (_, until)| now < *until);
            b.settling.values().map(|(r, _)| r.clone()).collect()
        })
    }

    /// GitHub reported the job of settling runner `id`: it absorbs nothing any more.
    pub fn settled(&self, id: &str) {
        self.with(|b| b.settling.remove(id));
    }

    /// Since when runner `id` has been seen on an agent without a live record of ours.
    pub fn unknown_since(&self, id: &str, now: i64) -> i64 {
        self.with(|b| *b.unknown.entry(id.to_owned()).or_insert(now))
    }

    /// Forgets the unknown runners not seen in this pass (stopped, or known again).
    pub fn keep_unknown(&self, seen: &std::collections::HashSet<String>) {
        self.with(|b| b.unknown.retain(|id, _| seen.contains(id)));
    }

    /// Whether to tell stray `id` to stop now (at most every 30 s).
    pub fn stray_due(&self, id: &str, now: i64) -> bool {
        self.with(|b| {
            b.strays.retain(|_, at| now - *at < STRAY_FORGET_MS);
            if b.strays
                .get(id)
                .is_some_and(|at| now - at < STRAY_REPEAT_MS)
            {
                return false;
            }
            b.strays.insert(id.to_owned(), now);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_deleted_once_per_owner_unless_the_delete_failed() {
        let m = SchedulerMemory::default();
        assert!(m.claim_delete(&Owner::new("Acme"), 7, 0));
        assert!(!m.claim_delete(&Owner::new("acme"), 7, 1), "not re-sent");
        assert!(m.claim_delete(&Owner::new("other"), 7, 1), "keyed by owner");
        m.release_delete(&Owner::new("acme"), 7);
        assert!(
            m.claim_delete(&Owner::new("acme"), 7, 2),
            "a failed delete is retried"
        );
    }

    #[test]
    fn a_stop_is_resent_every_30_seconds_and_the_first_is_kept() {
        let m = SchedulerMemory::default();
        assert!(m.stop_due("r", 10));
        assert!(!m.stop_due("r", 20));
        assert!(m.stop_due("r", 30_010));
        assert_eq!(m.stop_sent("r"), Some(10));
        m.forget_stop("r");
        assert_eq!(m.stop_sent("r"), None);
    }

    #[test]
    fn the_first_sweep_comes_one_period_after_start() {
        let m = SchedulerMemory::default();
        assert!(!m.sweep_due(&Owner::new("acme"), 0, 100));
        assert!(!m.sweep_due(&Owner::new("acme"), 99, 100));
        assert!(m.sweep_due(&Owner::new("acme"), 100, 100));
        assert!(!m.sweep_due(&Owner::new("acme"), 150, 100));
    }

    #[test]
    fn a_busy_veto_lasts_until_its_time() {
        let m = SchedulerMemory::default();
        m.veto_busy("r", 100);
        assert!(m.busy_vetoed("r", 99));
        assert!(!m.busy_vetoed("r", 100));
    }

    #[test]
    fn an_unknown_runner_is_unknown_since_it_was_first_seen_until_it_is_not_seen() {
        let m = SchedulerMemory::default();
        assert_eq!(m.unknown_since("s", 1_000), 1_000);
        assert_eq!(
            m.unknown_since("s", 9_000),
            1_000,
            "a later sighting keeps the first"
        );
        m.keep_unknown(&["s".to_owned()].into());
        assert_eq!(m.unknown_since("s", 10_000), 1_000);
        m.keep_unknown(&Default::default());
        assert_eq!(
            m.unknown_since("s", 20_000),
            20_000,
            "forgotten once not seen"
        );
    }

    #[test]
    fn strays_are_told_at_most_every_30_seconds() {
        let m = SchedulerMemory::default();
        assert!(m.stray_due("s", 0));
        assert!(!m.stray_due("s", 29_999));
        assert!(m.stray_due("s", 30_000));
    }
}
