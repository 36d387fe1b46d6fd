//! The container runtime an agent drives, behind a small trait the agent owns.
//!
//! Operations return quickly and report progress as [`RunnerState`] events on the sink given to
//! the runtime at construction; the agent forwards them to the controller. The Docker and
//! Kubernetes runtimes implement this trait ([`docker`] is the Docker one); [`memory`] (tests
//! and local demos only) records commands in memory. [`launch`] decides, for both, how a runner
//! image is started.

pub mod cache_scope;
pub mod docker;
pub mod kubernetes;
pub mod launch;
#[cfg(feature = "memory-runtime")]
pub mod memory;
pub mod sandbox;

use std::future::Future;

use shared::arch::{Arch, RuntimeKind};
use shared::command::RunnerSpec;
use shared::ids::RunnerId;
use shared::image::ImageState;
use shared::runner::RunnerState;
use tokio::sync::mpsc;

use crate::images::ImageReporter;

/// A runtime operation that failed; the message is safe to show the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

/// Where a runtime reports runner state changes. The agent's main task holds the receiver.
#[derive(Clone)]
pub struct EventSink(mpsc::Sender<RunnerState>);

impl EventSink {
    pub async fn report(&self, state: RunnerState) {
        // The receiver only goes away when the agent is stopping; nothing is left to tell.
        let _ = self.0.send(state).await;
    }
}

/// A sink and the receiver the agent reads from.
pub fn event_channel() -> (EventSink, mpsc::Receiver<RunnerState>) {
    let (tx, rx) = mpsc::channel(1024);
    (EventSink(tx), rx)
}

pub trait RunnerRuntime: Send + Sync + 'static {
    fn kind(&self) -> RuntimeKind;

    /// Starts a runner. Progress (running, exited) is reported on the event sink.
    fn start(&self, spec: RunnerSpec) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops a runner if it exists.
    fn stop(&self, id: &RunnerId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Every runner of ours that exists now, for adoption after an agent restart.
    fn inventory(&self) -> impl Future<Output = Result<Vec<RunnerState>, RuntimeError>> + Send;

    /// `Err(reason)` while the runtime cannot take runners (e.g. the engine is unreachable).
    fn health(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// The controller `controller_id` acknowledged this agent (on every session). Runtimes that
    /// label what they create with the controller's id, or look for strays of other
    /// controllers, learn it here.
    fn registered(&self, _controller_id: &str) {}

    /// The controller's runner images (`reporter.images()`, replacing any earlier set): the
    /// runtime makes them ready if it can, without blocking the caller, and records each one's
    /// state on `reporter`; work for a replaced set should stop once `reporter.is_current()` is
    /// false. The default, for a runtime that cannot tell, says so for each image.
    fn prepare_images(&self, reporter: ImageReporter) {
        for image in reporter.images() {
            reporter.set(
                image,
                ImageState::Unknown,
                "this runtime does not prepare or report images",
            );
        }
    }

    /// Runners per architecture this runtime can take, read at every registration, for a
    /// runtime that knows better than `AGENT_ARCH` (a cluster with nodes of several
    /// architectures). `None`, the default: the agent's own architecture with `max_runners`.
    fn capacity(&self, max_runners: u32) -> impl Future<Output = Option<Vec<(Arch, u32)>>> + Send {
        let _ = max_runners;
        async { None }
    }
}
