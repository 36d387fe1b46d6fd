//! The whole system on the real Docker engine: GitHub simulator → signed webhooks → controller
//! → agents → runner containers → simulator. The scheduler (issue 4) is what turns a queued
//! job into a `StartRunner`; until it lands, this file checks the wiring the end-to-end tests
//! stand on. The tests to add with the scheduler, on the helpers of `tests::docker`:
//!
//! - N jobs with mixed labels (`DockerSetup::queue_mixed`) all completed
//!   (`DockerSetup::wait_jobs_completed`) with at most `MAX_RUNNERS` containers alive
//!   (`Census::max_alive`), none left behind (`DockerSetup::wait_no_containers`), and the PAT in
//!   no container (`Census::assert_never_given`);
//! - an agent killed mid-run and restarted (`DockerAgent::kill`, then `DockerSetup::agent`):
//!   containers adopted, not duplicated (`Census::started`);
//! - the controller restarted mid-run (`controller.restart()`): every job still completes;
//! - the engine briefly unreachable (`SocketProxy` as the agent's `DOCKER_HOST`);
//! - two agents on one engine, one with `AGENT_ARCH=arm64`: arm64 jobs only on it
//!   (`StartedContainer::labels` carry the agent's name);
//! - the webhook → container running benchmark (`tests/src/bin/docker-bench.rs`).

use std::time::Duration;

use tests::docker::{DockerSetup, WEBHOOK_PATH};
use tests::harness::wait_until;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_simulator_is_the_controllers_github_and_sends_it_signed_webhooks() {
    let s = DockerSetup::start_e2e(3, &[]).await;
    let config = &s.controller.config;
    assert_eq!(config.github_api_url, s.sim.sim.api_url());
    assert_eq!(config.runners.image, s.image);
    let job = s.sim.queue(&["self-hosted", "linux"], Duration::ZERO);
    let target = format!("http://{}{WEBHOOK_PATH}", s.controller.http_addr);
    wait_until(
        WAIT,
        "workflow_job queued delivered to the controller",
        || async {
            s.sim.sim.deliveries().iter().any(|d| {
                d.event == "workflow_job"
                    && d.action.as_deref() == Some("queued")
                    && d.url == target
                    && d.status_code > 0
                    && d.request_headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("x-hub-signature-256"))
            })
        },
    )
    .await;
    assert_eq!(s.sim.sim.job(job).expect("job").status, "queued");
}
