//! Run fetches (`workflow_run` → its jobs) that fail: each run backs off on its own and is given
//! up after [`MAX_ATTEMPTS`], so a few runs whose jobs can never be read (a deleted repository, a
//! permission missing on one repository) never hold back newer ones. The rules are the pure
//! [`plan`]; the executor does the calls and keeps the time of each run's last failure.

use std::collections::HashMap;

use crate::store::RunKey;

/// Failed attempts after which a run's fetch is dropped (the reconciler asks again if the run
/// changes at GitHub).
pub const MAX_ATTEMPTS: u32 = 8;
/// The wait after the first failure, doubled per failure.
pub const FIRST_BACKOFF_MS: i64 = 2_000;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;

/// The wait after `failures` failures in a row (`failures` ≥ 1).
pub fn backoff_ms(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(20);
    (FIRST_BACKOFF_MS << doublings).min(MAX_BACKOFF_MS)
}

/// What to do with the pending fetches now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// To fetch now, oldest request first, at most the activation's share.
    pub fetch: Vec<RunKey>,
    /// Failed too often: dropped.
    pub give_up: Vec<RunKey>,
}

/// `pending`: each run with its failed attempts so far (oldest request first); `failed_at`: when
/// each last failed (unknown after a restart: due at once).
pub fn plan(
    pending: &[(RunKey, u32)],
    failed_at: &HashMap<RunKey, i64>,
    now_ms: i64,
    per_activation: usize,
) -> Plan {
    let mut out = Plan::default();
    for (key, attempts) in pending {
        if *attempts >= MAX_ATTEMPTS {
            out.give_up.push(key.clone());
            continue;
        }
        let due = *attempts == 0
            || failed_at
                .get(key)
                .is_none_or(|at| now_ms - at >= backoff_ms(*attempts));
        if due && out.fetch.len() < per_activation {
            out.fetch.push(key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(run_id: u64) -> RunKey {
        RunKey {
            owner: "acme".into(),
            repo: "app".into(),
            run_id,
        }
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(2), 4_000);
        assert_eq!(backoff_ms(5), 32_000);
        assert_eq!(backoff_ms(30), MAX_BACKOFF_MS);
    }

    #[test]
    fn failing_runs_wait_their_turn_and_never_crowd_out_newer_ones() {
        // Runs 1 and 2 keep failing; 3 and 4 are new. Two fetches per activation.
        let pending = vec![(key(1), 3), (key(2), 1), (key(3), 0), (key(4), 0)];
        let failed = HashMap::from([(key(1), 1_000), (key(2), 1_000)]);
        let p = plan(&pending, &failed, 2_000, 2);
        assert_eq!(p.fetch, vec![key(3), key(4)], "1 and 2 back off");
        assert!(p.give_up.is_empty());
        // 2 s after its failure, run 2 (one failure) is due; run 1 (three) waits 8 s.
        let p = plan(&pending, &failed, 3_000, 4);
        assert_eq!(p.fetch, vec![key(2), key(3), key(4)]);
        let p = plan(&pending, &failed, 9_000, 4);
        assert_eq!(p.fetch, vec![key(1), key(2), key(3), key(4)]);
    }

    #[test]
    fn a_run_failing_too_often_is_given_up() {
        let pending = vec![(key(1), MAX_ATTEMPTS), (key(2), MAX_ATTEMPTS - 1)];
        let p = plan(&pending, &HashMap::new(), 0, 10);
        assert_eq!(p.give_up, vec![key(1)]);
        assert_eq!(p.fetch, vec![key(2)], "unknown failure time (restart): due");
    }
}
