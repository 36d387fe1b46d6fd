//! The gha-scaler agent as a library: `main` parses configuration and calls [`Agent::run`];
//! tests build an [`Agent`] with the in-memory runtime and watch its [`AgentStatus`].
//!
//! - [`config`]: configuration from environment variables.
//! - [`connection`]: the mutual-TLS channel to the controller.
//! - [`worker`]: the long-lived session loop (reconnects, commands, reports).
//! - [`runners`]: the table that makes commands idempotent and is the inventory.
//! - [`runtime`]: the container runtime trait (Docker, Kubernetes; in-memory for tests).
//! - [`join`]: enrollment with a one-time join token.
//! - [`control`]: the local control socket behind `gha-agent drain`.
//! - [`backoff`]: capped, jittered exponential backoff.
//! - [`images`]: the runner images the controller asked for and their states, as reported.
//! - [`targets`]: which controller replica to dial next; [`fence`]: refusing a deposed
//!   leader's commands.

pub mod backoff;
pub mod bootstrap;
pub mod config;
pub mod connection;
pub mod control;
pub mod fence;
pub mod images;
pub mod join;
pub mod renew;
pub mod runners;
pub mod runtime;
pub mod targets;
mod worker;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::runners::RunnerTable;
use crate::runtime::{EventSink, RunnerRuntime, event_channel};

/// What the agent is doing, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    pub connected: bool,
    /// The identity the controller confirmed at the last registration.
    pub agent_name: Option<String>,
    /// Why the last connection attempt or session failed.
    pub last_error: Option<String>,
    /// Sessions established since start.
    pub sessions: u64,
    /// Connection attempts since start.
    pub attempts: u64,
    /// Runners not finished yet.
    pub active_runners: usize,
    /// Those runners, each as `name (phase)`, for `gha-agent status`.
    pub runners: Vec<String>,
    /// Accepting no new runners (told by the controller or `gha-agent drain`).
    pub draining: bool,
}

/// An agent, ready to run.
pub struct Agent<R> {
    config: AgentConfig,
    runtime: Arc<R>,
    sink: EventSink,
    events: tokio::sync::mpsc::Receiver<shared::runner::RunnerState>,
    status: watch::Sender<AgentStatus>,
    drain: CancellationToken,
    /// Held by [`Agent::drain_hold`]'s callers (the control socket); the worker reads it.
    hold: Arc<watch::Sender<bool>>,
    /// The runner images the controller asked for; the worker replaces the set, the runtime
    /// records states.
    images: images::ImageBoard,
}

/// The agent stopped because its own TLS material is unusable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the agent cannot run: {0}")]
pub struct AgentError(pub String);

impl<R: RunnerRuntime> Agent<R> {
    /// Builds the agent; `make_runtime` receives the sink the runtime reports runner events on.
    pub fn new(config: AgentConfig, make_runtime: impl FnOnce(EventSink) -> R) -> Self {
        let (sink, events) = event_channel();
        let runtime = Arc::new(make_runtime(sink.clone()));
        let (status, _) = watch::channel(AgentStatus::default());
        let (hold, _) = watch::channel(false);
        Self {
            config,
            runtime,
            sink,
            events,
            status,
            drain: CancellationToken::new(),
            hold: Arc::new(hold),
            images: images::ImageBoard::default(),
        }
    }

    /// Cancel the returned token to drain the agent: it accepts no new runners and `run`
    /// returns once the last one has finished (what `gha-agent drain` does).
    pub fn drain_token(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Set to `true` to hold the agent drained without exiting (a drain that outlived a
    /// restart), `false` to let it accept runners again (`gha-agent undrain`). Unlike
    /// [`Agent::drain_token`] this is reversible and never makes the agent exit.
    pub fn drain_hold(&self) -> Arc<watch::Sender<bool>> {
        self.hold.clone()
    }

    /// The runner images the controller asked this agent to prepare, with their states.
    pub fn images(&self) -> images::ImageBoard {
        self.images.clone()
    }

    /// Follows the agent's status.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` is cancelled. Runners are never stopped by this returning.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        worker::Worker {
            config: self.config,
            runtime: self.runtime,
            sink: self.sink,
            events: self.events,
            table: RunnerTable::default(),
            outbox: Vec::new(),
            draining: false,
            controller_drain: false,
            drain: self.drain,
            hold: self.hold.subscribe(),
            status: self.status,
            image_watch: self.images.watch(),
            images: self.images,
            fence: fence::Fence::default(),
        }
        .run(shutdown)
        .await
        .map_err(AgentError)
    }
}
