//! Helpers for the tests that run on the real Docker engine.
//!
//! - [`TestRun`]: a unique label value for everything one test creates, and a guard that removes
//!   every container, volume, network and image carrying it when dropped, even after a failure.
//! - [`TestRun::runner_image`] and [`TestRun::runner_image_of`]: the test runner images, made
//!   locally (nothing can be pulled): the static fake runner of `tests/runner-image/` (built
//!   once with `+crt-static`, cached by cargo) at the program paths of each [`RunnerLayout`],
//!   imported as an image labelled for this run.
//! - [`DockerAgent`]: a real agent with the Docker runtime on a tokio runtime of its own, so it
//!   can be killed like a process.
//! - [`SocketProxy`]: a Unix socket that forwards to the engine's, which a test stops and starts
//!   to make the engine unreachable for an agent.
//! - [`SimRunners`]: the GitHub simulator with an owner, a repository and a PAT, handing out
//!   registration material for runner specs.
//! - [`DockerSetup`]: all of the above around a real controller, and the end-to-end wiring
//!   for the scheduler's tests ([`DockerSetup::start_e2e`]).
//! - [`Census`]: the run's containers as the engine's events tell: the most alive at once, and
//!   each one's configuration at start.

mod agent;
mod census;
mod proxy;
mod run;
mod setup;
mod sim;

use std::collections::HashMap;

use bollard::Docker;

pub use agent::DockerAgent;
pub use census::{Census, StartedContainer};
pub use proxy::SocketProxy;
pub(crate) use run::cargo_command;
pub use run::{
    CUSTOM_COMMAND, RunnerLayout, TestRun, fake_runner_binary, gha_agent_binary, test_network,
};
pub use setup::{DockerSetup, SEED_DEFAULT_IMAGE};
pub use sim::{SimRunners, runner_spec};

/// The label that marks what one test created.
pub const TEST_RUN_LABEL: &str = "dev.gha-scaler.test-run";
/// Where the controller takes GitHub's webhooks.
pub const WEBHOOK_PATH: &str = "/webhook";
/// The repository of the test runner image; each run tags its own.
pub const RUNNER_IMAGE_REPO: &str = "gha-scaler-test-runner";
/// The engine's socket the tests use (`DOCKER_HOST` is not consulted: tests are explicit).
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A client for the engine, API version negotiated.
pub async fn docker() -> Docker {
    Docker::connect_with_unix(DOCKER_SOCKET, 120, bollard::API_DEFAULT_VERSION)
        .expect("the Docker socket exists")
        .negotiate_version()
        .await
        .expect("the Docker engine answers")
}

pub(crate) fn label_filter(run: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{TEST_RUN_LABEL}={run}")])])
}
