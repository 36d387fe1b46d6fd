//! Records the stage marks of cold starts ([`shared::stage`]) with the time each was emitted,
//! for `bench latency`'s per-stage rows.
//!
//! The bench runs the controller and the agent in its own process, so one tracing subscriber
//! sees both and every mark is timed on the same monotonic clock as the bench's own `t0`:
//! [`install`] sets it (the usual `RUST_LOG` log output, plus the recorder, which keeps only
//! events of [`shared::stage::TARGET`] whatever `RUST_LOG` says). The recording is bounded
//! ([`CAPACITY`]): a mark past it is dropped and counted.

use std::sync::Mutex;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The most marks kept (a cold start leaves about ten).
pub const CAPACITY: usize = 100_000;

/// One mark: which stage, for which job or runner, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub at: Instant,
    pub stage: String,
    pub job: Option<u64>,
    pub runner: Option<String>,
    /// `handler_us` of `webhook_recorded`: how long the delivery's handler had run.
    pub handler_us: Option<u64>,
}

struct Recorded {
    marks: Vec<Mark>,
    dropped: u64,
}

static MARKS: Mutex<Recorded> = Mutex::new(Recorded {
    marks: Vec::new(),
    dropped: 0,
});

fn recorded() -> std::sync::MutexGuard<'static, Recorded> {
    MARKS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes every mark recorded so far (and how many were dropped for lack of room).
pub fn take() -> (Vec<Mark>, u64) {
    let mut r = recorded();
    let dropped = std::mem::take(&mut r.dropped);
    (std::mem::take(&mut r.marks), dropped)
}

#[derive(Default)]
struct Fields {
    stage: Option<String>,
    job: Option<u64>,
    runner: Option<String>,
    handler_us: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "stage" => self.stage = Some(value.to_owned()),
            "runner" => self.runner = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "job" => self.job = Some(value),
            "handler_us" => self.handler_us = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(v) = u64::try_from(value) {
            self.record_u64(field, v);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `runner = %name` arrives as a Display value through `record_debug`.
        if field.name() == "runner" {
            self.runner = Some(format!("{value:?}"));
        }
    }
}

/// The layer that keeps the marks.
pub struct Recorder;

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let at = Instant::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(stage) = fields.stage else {
            return;
        };
        let mark = Mark {
            at,
            stage,
            job: fields.job,
            runner: fields.runner,
            handler_us: fields.handler_us,
        };
        let mut r = recorded();
        if r.marks.len() < CAPACITY {
            r.marks.push(mark);
        } else {
            r.dropped += 1;
        }
    }
}

/// Installs the process's subscriber: log output as [`crate::harness::init`] makes it
/// (`RUST_LOG`, default `info`) and the [`Recorder`]. Call before anything logs; a second
/// call (or one after another subscriber was set) changes nothing.
pub fn install() {
    let log = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let marks =
        Recorder.with_filter(Targets::new().with_target(shared::stage::TARGET, LevelFilter::DEBUG));
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(marks)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_of_the_stage_target_are_recorded_with_their_fields_and_others_are_not() {
        let subscriber = tracing_subscriber::registry()
            .with(Recorder.with_filter(
                Targets::new().with_target(shared::stage::TARGET, LevelFilter::DEBUG),
            ));
        tracing::subscriber::with_default(subscriber, || {
            let before = Instant::now();
            tracing::debug!(target: shared::stage::TARGET, stage = "webhook_recorded", job = 42u64, handler_us = 7u64, "stage");
            let name = String::from("gha-acme-r1");
            tracing::debug!(target: shared::stage::TARGET, stage = "start_sent", runner = %name, "stage");
            tracing::debug!(target: "elsewhere", stage = "not_a_mark", "other");
            tracing::info!("ordinary log line");
            let (marks, dropped) = take();
            let ours: Vec<&Mark> = marks.iter().filter(|m| m.at >= before).collect();
            assert_eq!(dropped, 0);
            assert_eq!(ours.len(), 2, "{ours:?}");
            assert_eq!(
                (ours[0].stage.as_str(), ours[0].job, ours[0].handler_us),
                ("webhook_recorded", Some(42), Some(7))
            );
            assert_eq!(
                (ours[1].stage.as_str(), ours[1].runner.as_deref()),
                ("start_sent", Some("gha-acme-r1"))
            );
        });
    }
}
