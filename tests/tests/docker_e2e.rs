//! The whole system on the real Docker engine: GitHub simulator → signed webhooks → controller
//! (scheduler) → agents → runner containers of the locally built test image → the simulator sees
//! them claim and complete the jobs → webhooks → capacity freed.

use std::time::Duration;

use agent::runtime::docker::labels;
use tests::docker::{Census, DockerSetup, WEBHOOK_PATH};
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

#[tokio::test]
async fn mixed_jobs_are_served_by_containers_within_the_limit_on_the_right_arch() {
    // Over-provisioned runners (GitHub gave their job to another) wait idle; they are stopped
    // after the idle grace, which the final "nothing left behind" needs to be short.
    let s = DockerSetup::start_e2e(3, &[("RUNNER_IDLE_GRACE", "2s")]).await;
    let census = Census::start(&s.run).await;
    let amd = s.agent("e2e-amd", &[("AGENT_ARCH", "amd64"), ("MAX_RUNNERS", "4")]);
    // An arm64 agent in name only: it runs the host's test image, so its image check is off.
    let arm = s.agent(
        "e2e-arm",
        &[
            ("AGENT_ARCH", "arm64"),
            ("MAX_RUNNERS", "4"),
            ("IMAGE_PLATFORM_CHECK", "false"),
        ],
    );
    amd.wait_status(WAIT, "amd agent connected", |st| st.connected)
        .await;
    arm.wait_status(WAIT, "arm agent connected", |st| st.connected)
        .await;

    let kinds: [&[&str]; 3] = [
        &["self-hosted", "linux"],
        &["self-hosted", "linux", "arm64"],
        &["self-hosted", "x64", "docker"],
    ];
    let jobs = s.queue_mixed(9, &kinds, Duration::from_millis(300));
    s.wait_jobs_completed(&jobs, Duration::from_secs(120)).await;

    assert!(
        census.max_alive() <= 3,
        "{} containers alive at once with MAX_RUNNERS=3",
        census.max_alive()
    );
    census.assert_never_given(&s.sim.pat);
    let started = census.started();
    for (i, job) in jobs.iter().enumerate() {
        let runner = s
            .sim
            .sim
            .job(*job)
            .and_then(|j| j.runner)
            .expect("completed job has a runner")
            .1;
        let container = started
            .iter()
            .find(|c| c.labels.get(labels::RUNNER_NAME) == Some(&runner))
            .unwrap_or_else(|| panic!("no container for runner {runner}"));
        let agent = container.labels.get(labels::AGENT).map(String::as_str);
        match i % 3 {
            1 => assert_eq!(agent, Some("e2e-arm"), "arm64 job {job} ran on {agent:?}"),
            2 => assert_eq!(agent, Some("e2e-amd"), "x64 job {job} ran on {agent:?}"),
            _ => {}
        }
    }
    s.wait_no_containers(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_controller_restart_mid_run_loses_no_job_and_leaves_no_container() {
    let mut s = DockerSetup::start_e2e(2, &[("RUNNER_IDLE_GRACE", "2s")]).await;
    let agent = s.agent("e2e-restart", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let jobs = s.queue_mixed(4, &[&["self-hosted"]], Duration::from_millis(1500));
    wait_until(Duration::from_secs(60), "a job is running", || async {
        jobs.iter().any(|j| {
            s.sim
                .sim
                .job(*j)
                .is_some_and(|job| job.status == "in_progress")
        })
    })
    .await;
    s.controller.restart().await;
    s.wait_jobs_completed(&jobs, Duration::from_secs(120)).await;
    s.wait_no_containers(Duration::from_secs(60)).await;
}
