//! The API budget: GitHub's hourly quota as a resource the controller spends on purpose.
//!
//! Every response's `x-ratelimit-*` headers land here, per owner (each owner has its own
//! credential) and per bucket (`x-ratelimit-resource`: `core`, and any other GitHub reports).
//! Every request is classified by the caller as a [`CallKind`] (a task-local set with
//! [`CallKind::scope`] at the call site) and asks [`admit`] before it is sent:
//!
//! - **registration** (JIT configs, registration tokens for queued jobs) is always admitted: it is
//!   what the reserve is kept for (the transport still honours GitHub's own limit);
//! - **job-serving** calls (a run's jobs for a `workflow_run` webhook, API requests) stop when
//!   only the registration reserve is left;
//! - **background** work (reconciler, stale-job checks, sweeps, webhook setup) spends at most
//!   `API_BACKGROUND_SHARE` of the window's limit, and stops first: at twice the reserve.
//!
//! A `304 Not Modified` is counted apart and never against the share: GitHub does not count it
//! against the primary limit when the request is authorized (GitHub docs, "Best practices for
//! using the REST API", "Use conditional requests if appropriate").
//!
//! The decision is the pure [`admit`]; [`Budget`] is the one owner of the state (a short
//! `std::sync::Mutex` section per request, never held across an `.await`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use super::ratelimit::Quota;

/// Why a request is made; set by the caller with [`CallKind::scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// Registering a runner for a queued job (JIT config, registration or remove token).
    Registration,
    /// Serving jobs we were told about (a run's jobs), and operator requests.
    JobServing,
    /// Finding what webhooks did not say and cleaning up: reconciler, stale checks, sweeps, setup.
    Background,
}

tokio::task_local! {
    static KIND: CallKind;
}

impl CallKind {
    pub const ALL: [CallKind; 3] = [
        CallKind::Registration,
        CallKind::JobServing,
        CallKind::Background,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Registration => "registration",
            CallKind::JobServing => "job_serving",
            CallKind::Background => "background",
        }
    }

    /// Runs `f` with every GitHub request it makes classified as `self`.
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        KIND.scope(self, f).await
    }

    /// The kind of the request being made now; unclassified requests (operator API calls) are
    /// job-serving: they stop at the registration reserve like any foreground call.
    pub fn current() -> CallKind {
        KIND.try_with(|k| *k).unwrap_or(CallKind::JobServing)
    }
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the quota is shared; from `API_BACKGROUND_SHARE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Percent (0–100) of a window's limit that background work may spend.
    pub background_share_pct: u8,
    /// Percent of the limit kept for registrations: job-serving calls stop there, background
    /// calls at twice as much.
    pub reserve_pct: u8,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            background_share_pct: 30,
            reserve_pct: 10,
        }
    }
}

impl BudgetPolicy {
    /// Calls that count which background work may make in a window of `limit`.
    pub fn background_allowance(&self, limit: u64) -> u64 {
        limit * u64::from(self.background_share_pct.min(100)) / 100
    }

    /// Remaining quota at or below which job-serving calls stop.
    pub fn reserve(&self, limit: u64) -> u64 {
        (limit * u64::from(self.reserve_pct.min(100))).div_ceil(100)
    }
}

/// One bucket's current window, as the budget knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// UTC epoch seconds at which GitHub resets the window.
    pub reset: u64,
    /// Background calls that counted (not 304s) made in this window.
    pub background_used: u64,
}

/// Why a request was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferral {
    /// Background work spent its share of this window.
    BackgroundShareSpent { used: u64, allowed: u64 },
    /// The quota is low: what is left is kept for more important calls.
    QuotaLow { remaining: u64, floor: u64 },
}

impl std::fmt::Display for Deferral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deferral::BackgroundShareSpent { used, allowed } => write!(
                f,
                "background work spent its share of the quota window ({used} of {allowed} calls)"
            ),
            Deferral::QuotaLow { remaining, floor } => write!(
                f,
                "the quota is low ({remaining} left, kept above {floor} for registrations)"
            ),
        }
    }
}

/// Whether a request of `kind` may be sent now, given the bucket's window (`None`: no quota
/// seen yet, or rate limiting is off) at `now` (epoch seconds).
pub fn admit(
    kind: CallKind,
    window: Option<&Window>,
    policy: &BudgetPolicy,
    now: u64,
) -> Result<(), Deferral> {
    let Some(w) = window else { return Ok(()) };
    // A window past its reset has been refilled by GitHub; the next answer says by how much.
    if w.limit == 0 || (w.reset != 0 && now >= w.reset) {
        return Ok(());
    }
    let reserve = policy.reserve(w.limit);
    match kind {
        CallKind::Registration => Ok(()),
        // With no reserve, GitHub's own limit (the transport's) is the only one.
        CallKind::JobServing if reserve > 0 && w.remaining <= reserve => Err(Deferral::QuotaLow {
            remaining: w.remaining,
            floor: reserve,
        }),
        CallKind::JobServing => Ok(()),
        CallKind::Background => {
            let allowed = policy.background_allowance(w.limit);
            let floor = reserve * 2;
            if w.background_used >= allowed {
                Err(Deferral::BackgroundShareSpent {
                    used: w.background_used,
                    allowed,
                })
            } else if floor > 0 && w.remaining <= floor {
                Err(Deferral::QuotaLow {
                    remaining: w.remaining,
                    floor,
                })
            } else {
                Ok(())
            }
        }
    }
}

/// What became of a request, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Answered, and counted against the limit.
    Sent,
    /// `304 Not Modified`: answered from our cache, not counted by GitHub.
    NotModified,
    /// Not sent: the budget said no.
    Deferred,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::NotModified => "not_modified",
            Outcome::Deferred => "deferred",
        }
    }
}

/// One bucket of one owner, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BucketView {
    pub owner: String,
    pub resource: String,
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
    pub background_used: u64,
    pub background_allowed: u64,
    /// `ok`, `background_paused` or `low` (job-serving calls paused too).
    pub state: &'static str,
    /// Why background work is paused, if it is.
    pub reason: Option<String>,
}

#[derive(Debug, Default)]
struct Book {
    /// (owner, resource) → the latest window.
    windows: BTreeMap<(String, String), Window>,
    /// (owner, kind, outcome) → requests since start.
    counts: BTreeMap<(String, CallKind, Outcome), u64>,
}

/// The one owner of quota state, shared by every clone of the client.
#[derive(Debug, Default)]
pub struct Budget {
    policy: BudgetPolicy,
    /// Written by every request of the client, read by `/status` and `/metrics`; held for a few
    /// map operations, never across an `.await`.
    book: Mutex<Book>,
}

/// The bucket admission looks at: the calls the controller makes in the background and to serve
/// jobs are all in GitHub's `core` bucket.
const CORE: &str = "core";

impl Budget {
    pub fn new(policy: BudgetPolicy) -> Self {
        Self {
            policy,
            book: Mutex::default(),
        }
    }

    pub fn policy(&self) -> BudgetPolicy {
        self.policy
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks [`admit`] for a request of `kind` for `owner`; a deferral is counted.
    pub fn admit(&self, owner: &str, kind: CallKind, now: u64) -> Result<(), Deferral> {
        let owner = owner.to_ascii_lowercase();
        let mut book = self.book();
        let key = (owner.clone(), CORE.to_owned());
        let verdict = admit(kind, book.windows.get(&key), &self.policy, now);
        if verdict.is_err() {
            *book
                .counts
                .entry((owner, kind, Outcome::Deferred))
                .or_default() += 1;
        }
        verdict
    }

    /// Records an answer: its quota headers (if any) and what it cost.
    pub fn record(&self, owner: &str, kind: CallKind, quota: Option<Quota>, not_modified: bool) {
        let owner = owner.to_ascii_lowercase();
        let mut book = self.book();
        let outcome = if not_modified {
            Outcome::NotModified
        } else {
            Outcome::Sent
        };
        *book
            .counts
            .entry((owner.clone(), kind, outcome))
            .or_default() += 1;
        if let Some(q) = quota {
            let w = book.windows.entry((owner, q.resource.clone())).or_default();
            if w.reset != q.reset {
                // A new window: GitHub refilled the bucket, the share starts again.
                w.background_used = 0;
            }
            w.limit = q.limit;
            w.remaining = q.remaining;
            w.reset = q.reset;
            if kind == CallKind::Background && !not_modified {
                w.background_used += 1;
            }
        }
    }

    /// Requests since start per (owner, kind, outcome).
    pub fn counts(&self) -> Vec<(String, CallKind, Outcome, u64)> {
        self.book()
            .counts
            .iter()
            .map(|((o, k, out), n)| (o.clone(), *k, *out, *n))
            .collect()
    }

    /// Counted (non-304) background calls made for `owner` since start.
    pub fn background_spent(&self, owner: &str) -> u64 {
        let owner = owner.to_ascii_lowercase();
        self.book()
            .counts
            .get(&(owner, CallKind::Background, Outcome::Sent))
            .copied()
            .unwrap_or(0)
    }

    /// Background calls that count which `owner` may still make in this window (`None`: unknown).
    pub fn background_left(&self, owner: &str) -> Option<u64> {
        let owner = owner.to_ascii_lowercase();
        let book = self.book();
        let w = book.windows.get(&(owner, CORE.to_owned()))?;
        Some(
            self.policy
                .background_allowance(w.limit)
                .saturating_sub(w.background_used),
        )
    }

    /// The limit of `owner`'s core bucket, once a response said it.
    pub fn limit(&self, owner: &str) -> Option<u64> {
        let owner = owner.to_ascii_lowercase();
        self.book()
            .windows
            .get(&(owner, CORE.to_owned()))
            .map(|w| w.limit)
    }

    /// The latest quota per owner and resource, for metrics.
    pub fn quotas(&self) -> Vec<(String, Quota)> {
        self.book()
            .windows
            .iter()
            .map(|((owner, resource), w)| {
                (
                    owner.clone(),
                    Quota {
                        resource: resource.clone(),
                        limit: w.limit,
                        remaining: w.remaining,
                        used: w.limit.saturating_sub(w.remaining),
                        reset: w.reset,
                    },
                )
            })
            .collect()
    }

    /// Every bucket with what the budget currently allows, for `/status`.
    pub fn buckets(&self, now: u64) -> Vec<BucketView> {
        self.book()
            .windows
            .iter()
            .map(|((owner, resource), w)| {
                let background = admit(CallKind::Background, Some(w), &self.policy, now);
                let serving = admit(CallKind::JobServing, Some(w), &self.policy, now);
                let state = match (&background, &serving) {
                    (_, Err(_)) => "low",
                    (Err(_), Ok(())) => "background_paused",
                    _ => "ok",
                };
                BucketView {
                    owner: owner.clone(),
                    resource: resource.clone(),
                    limit: w.limit,
                    remaining: w.remaining,
                    reset: w.reset,
                    background_used: w.background_used,
                    background_allowed: self.policy.background_allowance(w.limit),
                    state,
                    reason: background.err().map(|d| d.to_string()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u64, remaining: u64, background_used: u64) -> Window {
        Window {
            limit,
            remaining,
            reset: 10_000,
            background_used,
        }
    }

    #[test]
    fn admission_table() {
        use CallKind::*;
        let p = BudgetPolicy::default(); // 30 % background, 10 % reserve
        let now = 5_000;
        // (kind, limit, remaining, background used, admitted)
        let table: &[(CallKind, u64, u64, u64, bool)] = &[
            (Background, 5000, 5000, 0, true),
            (Background, 5000, 4000, 1499, true),
            (Background, 5000, 4000, 1500, false), // share spent
            (Background, 5000, 1001, 0, true),
            (Background, 5000, 1000, 0, false), // low: 2 x 500 reserve
            (JobServing, 5000, 1000, 1500, true),
            (JobServing, 5000, 501, 0, true),
            (JobServing, 5000, 500, 0, false), // only the reserve is left
            (Registration, 5000, 500, 1500, true),
            (Registration, 5000, 1, 1500, true),
            (Registration, 5000, 0, 0, true), // GitHub's own limit is the transport's
            (Background, 60, 60, 17, true),
            (Background, 60, 60, 18, false),
        ];
        for &(kind, limit, remaining, used, ok) in table {
            let w = window(limit, remaining, used);
            assert_eq!(
                admit(kind, Some(&w), &p, now).is_ok(),
                ok,
                "{kind} with limit {limit}, {remaining} left, {used} background used"
            );
        }
    }

    #[test]
    fn no_quota_seen_or_a_window_past_its_reset_admits_everything() {
        let p = BudgetPolicy::default();
        assert!(admit(CallKind::Background, None, &p, 0).is_ok());
        let spent = window(5000, 0, 5000);
        assert!(admit(CallKind::Background, Some(&spent), &p, 9_999).is_err());
        assert!(admit(CallKind::Background, Some(&spent), &p, 10_000).is_ok());
        let disabled = window(0, 0, 0);
        assert!(admit(CallKind::JobServing, Some(&disabled), &p, 0).is_ok());
    }

    #[test]
    fn a_zero_share_stops_background_work_and_a_full_share_keeps_the_floor() {
        let none = BudgetPolicy {
            background_share_pct: 0,
            ..BudgetPolicy::default()
        };
        assert!(admit(CallKind::Background, Some(&window(5000, 5000, 0)), &none, 0).is_err());
        let all = BudgetPolicy {
            background_share_pct: 100,
            ..BudgetPolicy::default()
        };
        assert!(
            admit(
                CallKind::Background,
                Some(&window(5000, 1500, 3500)),
                &all,
                0
            )
            .is_ok()
        );
        assert!(
            admit(
                CallKind::Background,
                Some(&window(5000, 1000, 3500)),
                &all,
                0
            )
            .is_err()
        );
    }

    fn quota(remaining: u64, reset: u64) -> Quota {
        Quota {
            resource: "core".into(),
            limit: 100,
            remaining,
            used: 100 - remaining,
            reset,
        }
    }

    #[test]
    fn background_spending_is_counted_per_window_and_304s_are_free() {
        let budget = Budget::new(BudgetPolicy::default());
        for _ in 0..30 {
            budget.record("Acme", CallKind::Background, Some(quota(90, 7_000)), false);
        }
        budget.record("acme", CallKind::Background, Some(quota(90, 7_000)), true);
        assert_eq!(budget.background_left("acme"), Some(0));
        assert!(budget.admit("acme", CallKind::Background, 1).is_err());
        assert!(budget.admit("acme", CallKind::Registration, 1).is_ok());
        assert!(
            budget.admit("other", CallKind::Background, 1).is_ok(),
            "another owner's budget is its own"
        );
        // The next window starts the share again.
        budget.record("acme", CallKind::JobServing, Some(quota(99, 10_600)), false);
        assert_eq!(budget.background_left("acme"), Some(30));
        let counts = budget.counts();
        let n = |kind, outcome| {
            counts
                .iter()
                .find(|(o, k, out, _)| o == "acme" && *k == kind && *out == outcome)
                .map_or(0, |c| c.3)
        };
        assert_eq!(n(CallKind::Background, Outcome::Sent), 30);
        assert_eq!(n(CallKind::Background, Outcome::NotModified), 1);
        assert_eq!(n(CallKind::Background, Outcome::Deferred), 1);
        assert_eq!(budget.background_spent("ACME"), 30);
    }

    #[tokio::test]
    async fn the_kind_is_set_by_the_caller_for_everything_it_awaits() {
        assert_eq!(CallKind::current(), CallKind::JobServing);
        let inner = CallKind::Background
            .scope(async {
                tokio::task::yield_now().await;
                CallKind::current()
            })
            .await;
        assert_eq!(inner, CallKind::Background);
    }
}
