//! What the bench reads: a process's CPU and RSS from `/proc`, the controller's histograms
//! from `/metrics`, percentiles of samples.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime, seconds.
    pub cpu_s: f64,
    pub rss_mb: f64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcSample {
        at: Instant::now(),
        // USER_HZ is 100 on Linux (the kernel's ABI for /proc, whatever HZ is).
        cpu_s: ticks / 100.0,
        rss_mb: rss_kb / 1024.0,
    })
}

/// CPU (cores busy, 1.0 = one core) and RSS over a period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_cores: f64,
    pub rss_mean_mb: f64,
    pub rss_max_mb: f64,
}

/// Samples `pid` every second while `work` runs; `None` if it could not be read.
pub(super) async fn sampled<T>(
    pid: u32,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<Usage>) {
    let stop = CancellationToken::new();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if let Some(s) = proc_sample(pid) {
                    samples.push(s);
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            if let Some(s) = proc_sample(pid) {
                samples.push(s);
            }
            samples
        })
    };
    let out = work.await;
    stop.cancel();
    let samples = sampler.await.unwrap_or_default();
    let usage = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) if samples.len() >= 2 => {
            let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
            Some(Usage {
                cpu_cores: (b.cpu_s - a.cpu_s) / wall,
                rss_mean_mb: samples.iter().map(|s| s.rss_mb).sum::<f64>() / samples.len() as f64,
                rss_max_mb: samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
            })
        }
        _ => None,
    };
    (out, usage)
}

/// A Prometheus histogram's cumulative buckets: (upper bound, count).
pub type Buckets = Vec<(f64, u64)>;

/// The buckets of histogram `name` in a `/metrics` text.
pub fn histogram(text: &str, name: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The buckets of histogram `name`'s series labelled `label` (`step="plan"`), and its sum.
pub fn labelled_histogram(text: &str, name: &str, label: &str) -> (Buckets, f64) {
    // prometheus-client writes `le` first: `name_bucket{le="0.5",step="plan"} 3`.
    let prefix = format!("{name}_bucket{{le=\"");
    let suffix = format!("\",{label}}}");
    let buckets = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once(&suffix)?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse::<f64>().ok()? as u64))
        })
        .collect();
    let sum_prefix = format!("{name}_sum{{{label}}} ");
    let sum = text
        .lines()
        .find_map(|l| l.strip_prefix(&sum_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (buckets, sum)
}

/// `after - before`, bucket by bucket (the observations in between).
pub fn bucket_delta(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
            (*le, n.saturating_sub(was))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` (0–1); `None` without observations.
pub fn bucket_quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    buckets.iter().find(|(_, n)| *n >= rank).map(|(le, _)| *le)
}

/// Percentile `p` (0–100) of `samples` (nearest rank).
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Latency samples of one kind of job.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub samples: Vec<Duration>,
}

impl Latency {
    pub fn p(&self, p: f64) -> Duration {
        percentile(&self.samples, p)
    }
}

/// One step of the passes of a phase (`gha_scaler_scheduler_step_seconds`).
#[derive(Debug, Clone, Default)]
pub struct StepTimes {
    pub step: String,
    pub passes: Passes,
    /// Mean seconds per pass.
    pub mean_s: f64,
}

/// Each step's times between two `/metrics` texts.
pub fn step_times(before: &str, after: &str, name: &str) -> Vec<StepTimes> {
    let mut steps: Vec<String> = after
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_count{{step=\"")))
        .filter_map(|rest| rest.split_once('"').map(|(s, _)| s.to_string()))
        .collect();
    // In the order the pass runs them.
    let order = |s: &String| {
        controller::scheduler::steps::Step::ALL
            .iter()
            .position(|k| k.as_str() == s)
            .unwrap_or(usize::MAX)
    };
    steps.sort_by_key(order);
    steps.dedup();
    steps
        .into_iter()
        .map(|step| {
            let label = format!("step=\"{step}\"");
            let (b, bsum) = labelled_histogram(before, name, &label);
            let (a, asum) = labelled_histogram(after, name, &label);
            let passes = Passes::of(&bucket_delta(&b, &a));
            let mean_s = if passes.count == 0 {
                0.0
            } else {
                (asum - bsum) / passes.count as f64
            };
            StepTimes {
                step,
                passes,
                mean_s,
            }
        })
        .collect()
}

/// Scheduling passes of a phase (from the controller's histogram).
#[derive(Debug, Clone, Default)]
pub struct Passes {
    pub count: u64,
    /// Upper bounds of the buckets holding p50 and p99, seconds.
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
}

impl Passes {
    pub(super) fn of(buckets: &Buckets) -> Self {
        Self {
            count: buckets.last().map_or(0, |b| b.1),
            p50_s: bucket_quantile(buckets, 0.5),
            p99_s: bucket_quantile(buckets, 0.99),
        }
    }
}

#[cfg(test)]
mod step_tests {
    use super::*;

    #[test]
    fn step_times_read_the_controllers_own_step_histograms() {
        let metrics = controller::metrics::Metrics::new();
        let before = metrics.encode();
        let mut watch = controller::scheduler::steps::Stopwatch::new();
        watch.lap(controller::scheduler::steps::Step::Plan);
        watch.lap(controller::scheduler::steps::Step::Starts);
        watch.record(&metrics.scheduler_step_seconds);
        watch.record(&metrics.scheduler_step_seconds);
        let after = metrics.encode();
        let steps = step_times(&before, &after, "gha_scaler_scheduler_step_seconds");
        let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, ["plan", "starts"], "{after}");
        assert!(steps.iter().all(|s| s.passes.count == 2), "{steps:?}");
        assert!(steps.iter().all(|s| s.passes.p99_s.is_some()), "{steps:?}");
    }
}
