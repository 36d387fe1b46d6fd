//! Warm pools: `MIN_IDLE_RUNNERS` (per owner `OWNER_<NAME>_MIN_IDLE_RUNNERS`),
//! `MIN_IDLE_SCHEDULE` (per owner too) and `WARM_RUNNER_MAX_AGE`.
//!
//! `MIN_IDLE_RUNNERS` is a count (`2`: idle runners with the owner's usual labels), or a list
//! of pools each naming the labels its runners must offer: `2,arm64=1,gpu+x64=1` (labels
//! joined with `+`, then `=` and the count). Every pool counts within the owner's
//! `MAX_RUNNERS`, so their sum may not exceed it.

use super::schedule::Schedule;

/// One pool: `min_idle` idle runners offering every label of `labels` (empty: any runner of
/// the owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPoolConfig {
    pub labels: Vec<String>,
    pub min_idle: u32,
}

/// An owner's warm pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerWarm {
    /// Empty: no warm runners (the default).
    pub pools: Vec<WarmPoolConfig>,
    /// When set, the pools are kept only during the minutes it matches (UTC).
    pub schedule: Option<Schedule>,
}

impl OwnerWarm {
    /// Idle runners the pools keep in all.
    pub fn total(&self) -> u32 {
        self.pools.iter().map(|p| p.min_idle).sum()
    }
}

/// Parses a `MIN_IDLE_RUNNERS` value; pools of 0 are dropped.
pub fn parse_pools(text: &str) -> Result<Vec<WarmPoolConfig>, String> {
    let mut pools: Vec<WarmPoolConfig> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (labels, count) = match entry.rsplit_once('=') {
            Some((labels, count)) => (labels.trim(), count.trim()),
            None => ("", entry),
        };
        let min_idle = count.parse::<u32>().map_err(|_| {
            format!(
                "{entry:?} is not a count (`2`) or labels with a count (`gpu+x64=1`); pools are \
                 separated by commas"
            )
        })?;
        let labels: Vec<String> = if labels.is_empty() {
            Vec::new()
        } else {
            labels.split('+').map(|l| l.trim().to_owned()).collect()
        };
        if labels.iter().any(String::is_empty) {
            return Err(format!("{entry:?} has an empty label"));
        }
        let key = |l: &[String]| -> Vec<String> {
            let mut k: Vec<String> = l.iter().map(|x| x.to_ascii_lowercase()).collect();
            k.sort();
            k
        };
        if pools.iter().any(|p| key(&p.labels) == key(&labels)) {
            return Err(format!(
                "{entry:?} names a label set given before; give each set once"
            ));
        }
        if min_idle > 0 {
            pools.push(WarmPoolConfig { labels, min_idle });
        }
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(labels: &[&str], n: u32) -> WarmPoolConfig {
        WarmPoolConfig {
            labels: labels.iter().map(|s| s.to_string()).collect(),
            min_idle: n,
        }
    }

    #[test]
    fn a_count_or_pools_by_label_set() {
        assert_eq!(parse_pools("2").unwrap(), vec![pool(&[], 2)]);
        assert_eq!(parse_pools("0").unwrap(), vec![]);
        assert_eq!(
            parse_pools("2, arm64=1,gpu+x64 = 3").unwrap(),
            vec![pool(&[], 2), pool(&["arm64"], 1), pool(&["gpu", "x64"], 3)]
        );
    }

    #[test]
    fn bad_pools_are_refused_with_the_entry() {
        for (bad, says) in [
            ("two", "\"two\" is not a count"),
            ("-1", "\"-1\" is not a count"),
            ("gpu=", "\"gpu=\" is not a count"),
            ("gpu++x64=1", "empty label"),
            ("gpu+x64=1,X64+GPU=2", "given before"),
            ("1,2", "given before"),
        ] {
            let err = parse_pools(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
