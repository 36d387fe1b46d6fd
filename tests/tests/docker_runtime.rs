//! The Docker runtime on the real engine: runner containers of the locally built test runner
//! image, started by a real agent on a real controller's command, registering with the GitHub
//! simulator, running their job and being cleaned up.

use std::time::{Duration, Instant};

use tests::docker::DockerSetup;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_jit_runner_runs_its_job_reports_its_exit_and_is_removed() {
    let s = DockerSetup::start().await;
    let agent = s.agent("host-jit", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s
        .sim
        .queue(&["self-hosted", "linux"], Duration::from_millis(1500));
    let spec = s
        .sim
        .jit_spec("r-jit", &s.image, &["self-hosted", "linux"])
        .await;
    let started = Instant::now();
    s.start_runner("host-jit", spec);
    s.wait_runner("host-jit", "r-jit", "running", WAIT).await;
    println!("command → running: {:?}", started.elapsed());
    let exited = s.wait_runner("host-jit", "r-jit", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0, "{exited}");
    let job = s.sim.sim.job(job).expect("job");
    assert_eq!(job.status, "completed");
    assert_eq!(job.conclusion, Some("success"));
    s.wait_no_containers(WAIT).await;
}
