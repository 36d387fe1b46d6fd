//! A runtime that keeps runners in memory: for the test suite and local demos only.
//!
//! It is compiled only with the `memory-runtime` feature and the binary offers it only in a
//! debug build. Tests drive it through [`MemoryRuntime`]'s shared state: they can see every
//! start call and finish a runner with an exit code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shared::arch::RuntimeKind;
use shared::command::RunnerSpec;
use shared::ids::RunnerId;
use shared::image::ImageState;
use shared::runner::{RunnerPhase, RunnerState};

use super::{EventSink, RunnerRuntime, RuntimeError};
use crate::images::ImageReporter;

#[derive(Default)]
struct Inner {
    runners: BTreeMap<RunnerId, RunnerState>,
    specs: BTreeMap<RunnerId, RunnerSpec>,
    start_calls: Vec<RunnerId>,
    unhealthy: Option<String>,
    /// When set, new runners stay starting with this reason (like a pod stuck Pending).
    stuck_starting: Option<String>,
    /// When set, the capacity per architecture the runtime reports (like a cluster's nodes).
    capacity: Option<Vec<(shared::arch::Arch, u32)>>,
    /// When set, the image store a test gave it: image → state and detail. An image asked for
    /// and not in it is reported failed, as absent; unset, every image is reported unknown.
    images: Option<BTreeMap<String, (ImageState, String)>>,
    /// The reporter of the last `prepare_images`, so a changed store is reported at once.
    reporter: Option<ImageReporter>,
    /// The image sets of every `prepare_images` call, in order.
    prepare_calls: Vec<Vec<String>>,
}

/// What the memory runtime reports for `image` with the store `images`.
fn image_state(
    images: Option<&BTreeMap<String, (ImageState, String)>>,
    image: &str,
) -> (ImageState, String) {
    match images {
        None => (
            ImageState::Unknown,
            "the memory runtime keeps no images (a test sets them with set_images)".into(),
        ),
        Some(store) => store.get(image).cloned().unwrap_or((
            ImageState::Failed,
            "not in the memory runtime's image store".into(),
        )),
    }
}

/// Clones share the same runners, so a test keeps one clone and the agent another.
#[derive(Clone)]
pub struct MemoryRuntime {
    // Short sections only, never across an await.
    inner: Arc<Mutex<Inner>>,
    events: EventSink,
}

impl MemoryRuntime {
    pub fn new(events: EventSink) -> Self {
        Self {
            inner: Arc::default(),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every runner and its state.
    pub fn runners(&self) -> Vec<RunnerState> {
        self.lock().runners.values().cloned().collect()
    }

    /// The spec a runner was started with (what a real runtime would hand the container).
    pub fn spec(&self, id: &RunnerId) -> Option<RunnerSpec> {
        self.lock().specs.get(id).cloned()
    }

    /// Every `start` call, in order (one per actual start: repeats are the agent's bug).
    pub fn start_calls(&self) -> Vec<RunnerId> {
        self.lock().start_calls.clone()
    }

    /// Ends a runner as if its job finished with `exit_code`.
    pub async fn finish(&self, id: &RunnerId, exit_code: i32) {
        let state = {
            let mut inner = self.lock();
            let Some(runner) = inner.runners.get_mut(id) else {
                return;
            };
            runner.phase = RunnerPhase::Exited;
            runner.exit_code = Some(exit_code);
            runner.observed_at_ms = shared::runner::now_ms();
            runner.clone()
        };
        self.events.report(state).await;
    }

    /// Reports `capacity` per architecture from now on (`None`: the agent's configuration).
    pub fn set_capacity(&self, capacity: Option<Vec<(shared::arch::Arch, u32)>>) {
        self.lock().capacity = capacity;
    }

    /// Gives the runtime an image store (image → state and detail), reported for the images the
    /// controller asked for from now on; `None`: it reports every image as unknown.
    pub fn set_images(&self, images: Option<BTreeMap<String, (ImageState, String)>>) {
        let reporter = {
            let mut inner = self.lock();
            inner.images = images;
            inner.reporter.clone()
        };
        if let Some(reporter) = reporter {
            self.report_images(&reporter);
        }
    }

    /// The image sets the agent asked this runtime to prepare, one per call.
    pub fn prepare_calls(&self) -> Vec<Vec<String>> {
        self.lock().prepare_calls.clone()
    }

    fn report_images(&self, reporter: &ImageReporter) {
        let states: Vec<(String, (ImageState, String))> = {
            let inner = self.lock();
            reporter
                .images()
                .iter()
                .map(|i| (i.clone(), image_state(inner.images.as_ref(), i)))
                .collect()
        };
        for (image, (state, detail)) in states {
            reporter.set(&image, state, detail);
        }
    }

    /// New runners stay in `Starting` with `reason` (or run normally again with `None`).
    pub fn set_stuck_starting(&self, reason: Option<String>) {
        self.lock().stuck_starting = reason;
    }

    /// Makes `health` fail (or succeed again with `None`).
    pub fn set_unhealthy(&self, reason: Option<String>) {
        self.lock().unhealthy = reason;
    }
}

impl RunnerRuntime for MemoryRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Memory
    }

    async fn start(&self, spec: RunnerSpec) -> Result<(), RuntimeError> {
        let running = {
            let mut inner = self.lock();
            inner.start_calls.push(spec.id.clone());
            inner.specs.insert(spec.id.clone(), spec.clone());
            let mut state =
                RunnerState::new(spec.id.clone(), spec.name.clone(), RunnerPhase::Running);
            if let Some(reason) = &inner.stuck_starting {
                state.phase = RunnerPhase::Starting;
                state.reason = reason.clone();
            }
            inner.runners.insert(spec.id.clone(), state.clone());
            state
        };
        self.events.report(running).await;
        Ok(())
    }

    async fn stop(&self, id: &RunnerId) -> Result<(), RuntimeError> {
        let stopped = {
            let mut inner = self.lock();
            inner
                .runners
                .get_mut(id)
                .filter(|r| !r.phase.is_terminal())
                .map(|r| {
                    r.phase = RunnerPhase::Exited;
                    r.exit_code = Some(143);
                    r.reason = "stopped by the controller".into();
                    r.observed_at_ms = shared::runner::now_ms();
                    r.clone()
                })
        };
        if let Some(state) = stopped {
            self.events.report(state).await;
        }
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<RunnerState>, RuntimeError> {
        Ok(self.runners())
    }

    fn prepare_images(&self, reporter: ImageReporter) {
        {
            let mut inner = self.lock();
            inner.reporter = Some(reporter.clone());
            inner.prepare_calls.push(reporter.images().to_vec());
        }
        self.report_images(&reporter);
    }

    async fn capacity(&self, max_runners: u32) -> Option<Vec<(shared::arch::Arch, u32)>> {
        self.lock().capacity.clone().map(|c| {
            c.into_iter()
                .map(|(arch, n)| (arch, n.min(max_runners)))
                .collect()
        })
    }

    async fn health(&self) -> Result<(), String> {
        match &self.lock().unhealthy {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}
