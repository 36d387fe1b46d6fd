//! How long jobs wait and runners take (issue 14 §3): queued → runner started and queued → job
//! in progress, per owner and label set; runner started → online (its first claim of a job).
//!
//! The `labels` label is the job's `runs-on` labels, lower-cased, sorted, de-duplicated and
//! joined with `,` (`none` for a job without labels). Its values are bounded by [`LabelSets`]:
//! the first [`MAX_LABEL_SETS`] distinct sets seen (over the process's life) get a value of
//! their own, every later one is `other`, and a set longer than [`MAX_LABEL_SET_LEN`] is `other`
//! too, so no sequence of jobs can grow the series past owners × (`MAX_LABEL_SETS` + 1).

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::OwnerLabels;

/// Label sets with a value of their own; later ones are `other`.
pub const MAX_LABEL_SETS: usize = 32;
/// The longest label-set value kept (in bytes); longer is `other`.
pub const MAX_LABEL_SET_LEN: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub owner: String,
    /// See the module's description.
    pub labels: String,
}

/// The label sets given a value of their own so far.
#[derive(Debug, Default)]
pub struct LabelSets {
    /// Held for one lookup or insert; every observer of a queue time goes through it.
    known: Mutex<BTreeSet<String>>,
}

/// The canonical form of a label set: lower-cased, sorted, de-duplicated, `,`-joined.
pub fn canonical(labels: &[String]) -> String {
    let set: BTreeSet<String> = labels.iter().map(|l| l.to_ascii_lowercase()).collect();
    if set.is_empty() {
        return "none".into();
    }
    set.into_iter().collect::<Vec<_>>().join(",")
}

impl LabelSets {
    /// The `labels` label value for `labels` (see the module's description).
    pub fn value(&self, labels: &[String]) -> String {
        let set = canonical(labels);
        if set.len() > MAX_LABEL_SET_LEN {
            return "other".into();
        }
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(&set) {
            return set;
        }
        if known.len() >= MAX_LABEL_SETS {
            return "other".into();
        }
        known.insert(set.clone());
        set
    }
}

fn seconds_histogram() -> Histogram {
    // 0.1 s to about 55 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The queue-time histograms.
pub struct QueueTimes {
    pub label_sets: LabelSets,
    pub queued_to_started: Histograms<QueueLabels>,
    pub queued_to_in_progress: Histograms<QueueLabels>,
    pub runner_online: Histograms<OwnerLabels>,
}

impl QueueTimes {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            label_sets: LabelSets::default(),
            queued_to_started: Family::new_with_constructor(seconds_histogram),
            queued_to_in_progress: Family::new_with_constructor(seconds_histogram),
            runner_online: Family::new_with_constructor(seconds_histogram),
        };
        registry.register(
            "job_queued_to_runner_started_seconds",
            "From a job first seen queued to the runner started for it being reported running, by owner and label set",
            m.queued_to_started.clone(),
        );
        registry.register(
            "job_queued_to_in_progress_seconds",
            "From a job first seen queued to GitHub reporting it in progress, by owner and label set",
            m.queued_to_in_progress.clone(),
        );
        registry.register(
            "runner_started_to_online_seconds",
            "From a runner's start being sent to its first claim of a job (GitHub reporting the job in progress on it), by owner",
            m.runner_online.clone(),
        );
        m
    }

    fn labels(&self, owner: &str, labels: &[String]) -> QueueLabels {
        QueueLabels {
            owner: owner.to_ascii_lowercase(),
            labels: self.label_sets.value(labels),
        }
    }

    /// A runner started for a job of `owner` with `labels`, `seconds` after it was queued.
    pub fn started(&self, owner: &str, labels: &[String], seconds: f64) {
        self.queued_to_started
            .get_or_create(&self.labels(owner, labels))
            .observe(seconds);
    }

    /// A job of `owner` with `labels` went in progress `seconds` after it was queued.
    pub fn in_progress(&self, owner: &str, labels: &[String], seconds: f64) {
        self.queued_to_in_progress
            .get_or_create(&self.labels(owner, labels))
            .observe(seconds);
    }

    /// A runner of `owner` claimed its first job `seconds` after its start was sent.
    pub fn online(&self, owner: &str, seconds: f64) {
        self.runner_online
            .get_or_create(&OwnerLabels {
                owner: owner.to_ascii_lowercase(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_sets_are_canonical_and_capped() {
        let sets = LabelSets::default();
        assert_eq!(
            sets.value(&labels(&["Self-Hosted", "linux", "self-hosted"])),
            "linux,self-hosted"
        );
        assert_eq!(sets.value(&[]), "none");
        assert_eq!(sets.value(&labels(&[&"x".repeat(300)])), "other");
        for i in 0..100 {
            let v = sets.value(&labels(&["self-hosted", &format!("l{i}")]));
            assert!(v == "other" || v.starts_with('l'), "{v}");
        }
        // Known sets keep their value once the cap is reached; new ones are `other`.
        assert_eq!(
            sets.value(&labels(&["linux", "self-hosted"])),
            "linux,self-hosted"
        );
        assert_eq!(sets.value(&labels(&["brand-new"])), "other");
        assert_eq!(sets.known.lock().unwrap().len(), MAX_LABEL_SETS, "bounded");
    }
}
