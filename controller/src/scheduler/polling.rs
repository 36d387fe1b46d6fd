//! Which repositories the reconciler polls in a pass, and which runs it asks to fetch: the pure
//! rules behind [`super::reconcile`].
//!
//! Polling every repository every pass costs two calls per repository; at 1 000 repositories
//! that alone is more than a token's hourly quota. Instead:
//!
//! - **hot** repositories go first, most recently pushed first: pushed since (or shortly before)
//!   we last polled them, never polled and pushed within GitHub's 24 h queue limit, or with
//!   active runs when last polled (a run in progress may queue more jobs). A run starts from a
//!   push, so a job whose webhooks were lost is in a hot repository at the next pass;
//! - the **rest** are covered in a cycle, least recently polled first, as far as the pass's
//!   budget goes. Their lists are read with `If-None-Match`, so an unchanged one is a `304`
//!   that GitHub does not count;
//! - a run is asked to be fetched only when it is new or changed (`updated_at`, status) since
//!   it was last asked, so a long run is not fetched again every pass.

use std::collections::HashMap;

/// A push this long before our last poll of a repository may not have been visible to it yet
/// (GitHub's timestamps have a second's resolution, and clocks differ).
pub const RECENT_SLACK_MS: i64 = 30_000;
/// GitHub cancels a job queued this long: a repository not pushed within it has nothing queued
/// that a first poll could find sooner than the cycle.
pub const QUEUE_HORIZON_MS: i64 = 24 * 60 * 60 * 1000;
/// The most repositories polled in one pass (two requests each, mostly `304`s).
pub const MAX_REPOS_PER_PASS: usize = 100;

/// A repository as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSeen {
    pub name: String,
    /// `pushed_at` in epoch ms; `None` for a repository never pushed.
    pub pushed_ms: Option<i64>,
}

/// What the reconciler remembers of a repository between passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoMemory {
    pub last_polled_ms: Option<i64>,
    /// It had queued or in-progress runs when last polled.
    pub active: bool,
}

/// Whether `repo` must be polled this pass.
pub fn is_hot(repo: &RepoSeen, memory: Option<&RepoMemory>, now_ms: i64) -> bool {
    match memory.and_then(|m| m.last_polled_ms.map(|at| (at, m.active))) {
        Some((_, true)) => true,
        Some((at, false)) => repo.pushed_ms.is_some_and(|p| p + RECENT_SLACK_MS >= at),
        None => repo
            .pushed_ms
            .is_some_and(|p| now_ms - p <= QUEUE_HORIZON_MS),
    }
}

/// The repositories to poll, in order, each with whether it is hot. Hot ones come first (most
/// recently pushed first) and are all listed; the others follow, least recently polled first
/// (never polled first), up to `max_repos` in all. The caller stops the cold tail early when the
/// pass's budget is spent.
pub fn order(
    repos: &[RepoSeen],
    memory: &HashMap<String, RepoMemory>,
    now_ms: i64,
    max_repos: usize,
) -> Vec<(String, bool)> {
    let (mut hot, mut cold): (Vec<&RepoSeen>, Vec<&RepoSeen>) = repos
        .iter()
        .partition(|r| is_hot(r, memory.get(&r.name), now_ms));
    hot.sort_by(|a, b| b.pushed_ms.cmp(&a.pushed_ms).then(a.name.cmp(&b.name)));
    let polled = |r: &RepoSeen| memory.get(&r.name).and_then(|m| m.last_polled_ms);
    cold.sort_by(|a, b| polled(a).cmp(&polled(b)).then(a.name.cmp(&b.name)));
    let room = max_repos.saturating_sub(hot.len());
    hot.into_iter()
        .map(|r| (r.name.clone(), true))
        .chain(cold.into_iter().take(room).map(|r| (r.name.clone(), false)))
        .collect()
}

/// Counted background calls one pass may spend polling cold repositories: the hour's share
/// spread over the passes of an hour (at least a few, so the cycle always moves).
pub fn pass_allowance(allowed_per_window: u64, interval_ms: i64) -> u64 {
    let passes_per_hour = (3_600_000 / interval_ms.max(1)).max(1) as u64;
    (allowed_per_window / passes_per_hour).max(4)
}

/// A run's version: a fetch is asked again only when it changes.
pub type RunVersion = (Option<String>, Option<String>);

/// Whether a run seen now must be fetched, given the version last asked for.
pub fn fetch_needed(last: Option<&RunVersion>, now: &RunVersion) -> bool {
    last != Some(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, pushed_ms: Option<i64>) -> RepoSeen {
        RepoSeen {
            name: name.into(),
            pushed_ms,
        }
    }

    fn polled(at: i64, active: bool) -> RepoMemory {
        RepoMemory {
            last_polled_ms: Some(at),
            active,
        }
    }

    #[test]
    fn hotness_table() {
        let now = 10 * QUEUE_HORIZON_MS;
        // (pushed, memory, hot)
        let table: &[(Option<i64>, Option<RepoMemory>, bool)] = &[
            (Some(now - 1000), None, true), // never polled, pushed within 24 h
            (Some(now - QUEUE_HORIZON_MS - 1), None, false), // pushed too long ago
            (None, None, false),            // never pushed
            (Some(now - 100), Some(polled(now - 60_000, false)), true), // pushed since the poll
            (
                Some(now - 100_000),
                Some(polled(now - 60_000, false)),
                false,
            ),
            (Some(now - 100_000), Some(polled(now - 60_000, true)), true), // active runs
            (
                Some(now - 60_000 - RECENT_SLACK_MS),
                Some(polled(now - 60_000, false)),
                true,
            ), // just before the poll: maybe not visible yet
        ];
        for (i, (pushed, memory, hot)) in table.iter().enumerate() {
            assert_eq!(
                is_hot(&seen("r", *pushed), memory.as_ref(), now),
                *hot,
                "row {i}"
            );
        }
    }

    #[test]
    fn hot_repositories_come_first_newest_push_first_then_the_least_recently_polled() {
        let now = 1_000_000;
        let repos = vec![
            seen("a", Some(10)),
            seen("b", Some(now - 10)),
            seen("c", Some(now - 5)),
            seen("d", Some(20)),
            seen("e", None),
        ];
        let memory = HashMap::from([
            ("a".to_owned(), polled(now - 100_000, false)),
            ("b".to_owned(), polled(now - 100_000, false)),
            ("d".to_owned(), polled(now - 200_000, false)),
        ]);
        assert_eq!(
            order(&repos, &memory, now, 10),
            vec![
                ("c".to_owned(), true),
                ("b".to_owned(), true),
                ("e".to_owned(), false), // never polled
                ("d".to_owned(), false), // polled longest ago
                ("a".to_owned(), false),
            ]
        );
        assert_eq!(
            order(&repos, &memory, now, 3).len(),
            3,
            "the cold tail is capped"
        );
        assert_eq!(
            order(&repos, &memory, now, 1).len(),
            2,
            "hot ones are never dropped"
        );
    }

    #[test]
    fn the_cycle_covers_every_cold_repository_in_turn() {
        let now = 1_000_000;
        let repos: Vec<RepoSeen> = (0..10).map(|i| seen(&format!("r{i}"), None)).collect();
        let mut memory = HashMap::new();
        let mut covered = std::collections::BTreeSet::new();
        for pass in 0..4 {
            for (name, hot) in order(&repos, &memory, now + pass, 3) {
                assert!(!hot);
                memory.insert(name.clone(), polled(now + pass, false));
                covered.insert(name);
            }
        }
        assert_eq!(covered.len(), 10, "4 passes of 3 cover 10 repositories");
    }

    #[test]
    fn allowance_spreads_the_share_over_the_hour() {
        assert_eq!(pass_allowance(1500, 60_000), 25);
        assert_eq!(pass_allowance(1500, 300_000), 125);
        assert_eq!(pass_allowance(18, 1_000), 4, "at least a few");
    }

    #[test]
    fn a_run_is_fetched_again_only_when_it_changed() {
        let v1: RunVersion = (Some("queued".into()), Some("t1".into()));
        let v2: RunVersion = (Some("in_progress".into()), Some("t2".into()));
        assert!(fetch_needed(None, &v1));
        assert!(!fetch_needed(Some(&v1), &v1));
        assert!(fetch_needed(Some(&v1), &v2));
    }
}
