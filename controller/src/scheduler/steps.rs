//! Where a scheduling pass spends its time: each step's duration goes to the histogram
//! `gha_scaler_scheduler_step_seconds{step}` (and a `debug` event under
//! `gha_scaler::scheduler_steps` for the whole pass), so a slow pass says which step was slow
//! without a profiler. The step names are a fixed set ([`Step`]), so no input adds a label.

use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::StepLabels;

/// A pass's steps, in the order the executor runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    FetchRuns,
    SyncRunners,
    Settling,
    StopStrays,
    Sweep,
    QueueHeads,
    Stale,
    Prepare,
    Plan,
    Starts,
    Warm,
    Stops,
    Publish,
}

impl Step {
    pub const ALL: [Step; 13] = [
        Step::FetchRuns,
        Step::SyncRunners,
        Step::Settling,
        Step::StopStrays,
        Step::Sweep,
        Step::QueueHeads,
        Step::Stale,
        Step::Prepare,
        Step::Plan,
        Step::Starts,
        Step::Warm,
        Step::Stops,
        Step::Publish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::FetchRuns => "fetch_runs",
            Step::SyncRunners => "sync_runners",
            Step::Settling => "settling",
            Step::StopStrays => "stop_strays",
            Step::Sweep => "sweep",
            Step::QueueHeads => "queue_heads",
            Step::Stale => "stale",
            Step::Prepare => "prepare",
            Step::Plan => "plan",
            Step::Starts => "starts",
            Step::Warm => "warm",
            Step::Stops => "stops",
            Step::Publish => "publish",
        }
    }
}

/// The same fine buckets as the pass's own histogram (×1.5 from 0.5 ms).
pub fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 1.5, 24))
}

pub type StepHistograms = Family<StepLabels, Histogram, fn() -> Histogram>;

/// Times one pass: [`Self::lap`] after each step closes it.
pub struct Stopwatch {
    last: Instant,
    laps: Vec<(Step, Duration)>,
}

impl Default for Stopwatch {
    fn default() -> Self {
        Self::new()
    }
}

impl Stopwatch {
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            laps: Vec::with_capacity(Step::ALL.len()),
        }
    }

    /// Closes `step`: the time since the last lap (or the start) was its own.
    pub fn lap(&mut self, step: Step) {
        let now = Instant::now();
        self.laps.push((step, now - self.last));
        self.last = now;
    }

    pub fn laps(&self) -> &[(Step, Duration)] {
        &self.laps
    }

    /// Records the laps: a histogram sample per step, and one `debug` line for the pass.
    pub fn record(&self, histograms: &StepHistograms) {
        for (step, took) in &self.laps {
            histograms
                .get_or_create(&StepLabels {
                    step: step.as_str().into(),
                })
                .observe(took.as_secs_f64());
        }
        if tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
            let text: Vec<String> = self
                .laps
                .iter()
                .map(|(s, d)| format!("{}={:.2}ms", s.as_str(), d.as_secs_f64() * 1000.0))
                .collect();
            tracing::debug!(target: TARGET, steps = %text.join(" "), "scheduling pass");
        }
    }
}

/// The `tracing` target of the pass's step line.
pub const TARGET: &str = "gha_scaler::scheduler_steps";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lap_is_recorded_under_its_step_and_the_laps_add_up_to_the_pass() {
        let histograms: StepHistograms = Family::new_with_constructor(step_histogram);
        let started = Instant::now();
        let mut watch = Stopwatch::new();
        std::thread::sleep(Duration::from_millis(3));
        watch.lap(Step::SyncRunners);
        watch.lap(Step::Plan);
        let total: Duration = watch.laps().iter().map(|(_, d)| *d).sum();
        assert!(total <= started.elapsed());
        assert!(watch.laps()[0].1 >= Duration::from_millis(3));
        watch.record(&histograms);
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("steps", "steps", histograms.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("steps_count{step=\"sync_runners\"} 1"),
            "{text}"
        );
        assert!(text.contains("steps_count{step=\"plan\"} 1"), "{text}");
        assert!(!text.contains("step=\"starts\""), "{text}");
    }

    #[test]
    fn step_names_are_distinct() {
        let mut names: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Step::ALL.len());
    }
}
