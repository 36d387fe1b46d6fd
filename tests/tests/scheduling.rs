//! The controller core end to end: the GitHub simulator queues jobs and delivers signed
//! webhooks; the controller records them, plans, fetches JIT configs and starts runners on real
//! agents (in-memory runtime); emulated runners claim and complete jobs at the simulator.

use std::sync::Arc;
use std::time::Duration;

use tests::emulator::RunnerEmulator;
use tests::github_sim::{DeliveryFault, GithubSim};
use tests::harness::{
    AgentTls, TestAgent, TestController, controller_env, get_json, hook_to, init, simulated_github,
    wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    ca: TestCa,
    sim: Arc<GithubSim>,
    controller: TestController,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "test CA");
    let server = ca.server();
    let (sim, mut env) = simulated_github().await;
    env.extend(controller_env(
        &dir.path().join("state"),
        &ca.ca_file(),
        &server,
    ));
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let controller = TestController::start(env).await;
    hook_to(&sim, "acme", &controller);
    Setup {
        _dir: dir,
        ca,
        sim,
        controller,
    }
}

impl Setup {
    fn agent(&self, name: &str, extra: &[(&str, &str)]) -> TestAgent {
        let cert = self.ca.client(name, &[]);
        TestAgent::start(
            &self.controller.grpc_url(),
            &AgentTls {
                ca: self.ca.ca_file(),
                cert: cert.cert,
                key: cert.key,
            },
            extra,
        )
    }

    async fn job_completed(&self, job: u64) -> bool {
        self.sim.job(job).is_some_and(|j| j.status == "completed")
    }

    async fn all_completed(&self, jobs: &[u64]) -> bool {
        for j in jobs {
            if !self.job_completed(*j).await {
                return false;
            }
        }
        true
    }
}

#[tokio::test]
async fn queued_jobs_are_served_within_the_owner_limit_and_capacity_is_freed() {
    let s = setup(&[("MAX_RUNNERS", "2")]).await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "10")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(150),
    );

    let jobs: Vec<u64> = (0..6)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted", "linux"]).1)
        .collect();
    wait_until(WAIT, "every job completed", || s.all_completed(&jobs)).await;

    assert!(
        emulator.max_alive() <= 2,
        "{} runners alive at once with MAX_RUNNERS=2",
        emulator.max_alive()
    );
    let mut done = emulator.completed();
    done.sort();
    let mut expected = jobs.clone();
    expected.sort();
    assert_eq!(done, expected, "each job completed exactly once");
    // The queue drains and the status says so.
    wait_until(WAIT, "queue empty in /status", || async {
        get_json(&s.controller, "/status").await.1["queue"]["depth"] == 0
    })
    .await;
    let (code, body) = get_json(&s.controller, &format!("/api/v1/jobs/{}", jobs[0])).await;
    assert_eq!(code, 200);
    assert_eq!(body["job"]["state"], "completed");
    assert!(
        body["explanation"]
            .as_str()
            .unwrap()
            .contains("completed (success)")
    );
}

#[tokio::test]
async fn duplicate_and_reordered_deliveries_start_one_runner_per_job() {
    let s = setup(&[("MAX_RUNNERS", "10")]).await;
    let agent = s.agent("host-1", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    s.sim
        .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Duplicate);
    s.sim
        .fault_delivery("workflow_run", None, DeliveryFault::Reorder);
    s.sim
        .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Duplicate);
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(50),
    );
    let jobs: Vec<u64> = (0..3)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted"]).1)
        .collect();
    wait_until(WAIT, "every job completed", || s.all_completed(&jobs)).await;
    assert!(s.sim.deliveries_settled(WAIT).await);
    assert_eq!(
        agent.runtime.start_calls().len(),
        3,
        "one runner per job, duplicates notwithstanding"
    );
}

#[tokio::test]
async fn a_run_with_jobs_of_different_labels_lands_on_the_right_agents() {
    let s = setup(&[("MAX_RUNNERS", "10")]).await;
    let amd = s.agent("amd-host", &[("AGENT_ARCH", "amd64")]);
    let arm = s.agent("arm-host", &[("AGENT_ARCH", "arm64")]);
    let gpu = s.agent("gpu-host", &[("AGENT_ARCH", "amd64"), ("LABELS", "gpu")]);
    for a in [&amd, &arm, &gpu] {
        a.wait_status(WAIT, "connected", |st| st.connected).await;
    }
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![
            amd.runtime.clone(),
            arm.runtime.clone(),
            gpu.runtime.clone(),
        ],
        Duration::from_millis(50),
    );
    let (_, jobs) = s.sim.queue_run(
        "acme",
        "app",
        "matrix",
        &[
            ("arm", &["self-hosted", "linux", "arm64"]),
            ("gpu", &["self-hosted", "gpu"]),
            // The in-memory runtime is not Docker, so no `docker` label here.
            ("x64", &["self-hosted", "x64"]),
        ],
    );
    wait_until(WAIT, "every job completed", || s.all_completed(&jobs)).await;
    let runner_of = |job: u64| s.sim.job(job).unwrap().runner.unwrap().1;
    let on = |rt: &TestAgent, name: &str| rt.runtime.runners().iter().any(|r| r.name == name);
    assert!(
        on(&arm, &runner_of(jobs[0])),
        "arm64 job ran on the arm64 agent"
    );
    assert!(
        on(&gpu, &runner_of(jobs[1])),
        "gpu job ran on the gpu agent"
    );
    assert!(
        !on(&arm, &runner_of(jobs[2])),
        "x64 job did not run on the arm64 agent"
    );
}

#[tokio::test]
async fn a_stolen_runner_is_replaced_so_the_job_still_gets_one() {
    let s = setup(&[("MAX_RUNNERS", "5")]).await;
    let agent = s.agent("host-1", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // Job C's queued webhook is lost: the controller never hears of C being queued...
    s.sim
        .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
    s.sim
        .fault_delivery("workflow_run", Some("requested"), DeliveryFault::Drop);
    let (_, c) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    assert!(s.sim.deliveries_settled(WAIT).await);
    // ...then job A is queued. The runner started for A takes C (older, also matching).
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(50),
    );
    let (_, a) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    let both = [a, c];
    wait_until(WAIT, "both jobs completed", || s.all_completed(&both)).await;
    assert_eq!(
        agent.runtime.start_calls().len(),
        2,
        "a replacement runner was started for A"
    );
}

#[tokio::test]
async fn jobs_that_wait_say_why() {
    let s = setup(&[("MAX_RUNNERS", "1")]).await;
    let agent = s.agent("amd-only", &[("AGENT_ARCH", "amd64")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // No emulator: runners start but never take jobs, so the owner stays at its limit.
    let (_, first) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    let (_, hosted) = s.sim.queue_job("acme", "app", &["ubuntu-latest"]);
    let (_, arm) = s.sim.queue_job("acme", "web", &["self-hosted", "arm64"]);
    let (_, second) = s.sim.queue_job("acme", "web", &["self-hosted"]);

    let reason_of = |job: u64| {
        let c = &s.controller;
        async move { get_json(c, &format!("/api/v1/jobs/{job}")).await.1["waiting"]["reason"].clone() }
    };
    wait_until(WAIT, "every job has a reason", || async {
        !reason_of(second).await.is_null()
            && !reason_of(hosted).await.is_null()
            && !reason_of(arm).await.is_null()
    })
    .await;
    let first_reason = reason_of(first).await;
    assert!(
        first_reason == "runner_planned" || first_reason == "runner_starting",
        "{first_reason}"
    );
    assert_eq!(reason_of(hosted).await, "labels_not_offered");
    assert_eq!(reason_of(arm).await, "no_agent_of_arch");
    assert_eq!(reason_of(second).await, "owner_at_limit");
    let (_, body) = get_json(&s.controller, &format!("/api/v1/jobs/{second}")).await;
    assert!(
        body["explanation"].as_str().unwrap().contains("limit of 1"),
        "{body}"
    );
    let (code, body) = get_json(&s.controller, "/api/v1/jobs/123456789").await;
    assert_eq!(code, 404);
    assert_eq!(body["error"], "not_found");

    // /status tells the same story in the seed's shape.
    let (_, status) = get_json(&s.controller, "/status").await;
    assert_eq!(status["config"]["max_runners"], 1);
    assert_eq!(status["runners"]["max"], 1);
    assert_eq!(status["queue"]["depth"], 4);
    let metrics = reqwest::get(format!("http://{}/metrics", s.controller.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gha_scaler_queue_depth{owner=\"acme\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gha_scaler_webhooks_total{event=\"workflow_job\",outcome=\"accepted\"}"),
        "{metrics}"
    );
    // JIT configs were fetched for acme: its GitHub quota is exported.
    assert!(
        metrics.contains("gha_scaler_github_rate_limit_remaining{owner=\"acme\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_job_whose_webhooks_were_all_lost_is_found_and_served() {
    let s = setup(&[("MAX_RUNNERS", "5"), ("RECONCILE_INTERVAL", "300ms")]).await;
    let agent = s.agent("host-1", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(20),
    );
    // Every webhook about this run is lost, as when the controller was down.
    s.sim
        .fault_delivery("workflow_run", Some("requested"), DeliveryFault::Drop);
    s.sim
        .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
    let (_, job) = s.sim.queue_job("acme", "web", &["self-hosted"]);
    assert!(s.sim.deliveries_settled(WAIT).await);
    assert_eq!(
        get_json(&s.controller, &format!("/api/v1/jobs/{job}"))
            .await
            .0,
        404,
        "no webhook reached us"
    );
    wait_until(WAIT, "the lost job completed", || s.job_completed(job)).await;
}

#[tokio::test]
async fn an_owner_at_its_limit_drains_its_queue_in_order() {
    let s = setup(&[("MAX_RUNNERS", "1")]).await;
    let agent = s.agent("host-1", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let jobs: Vec<u64> = (0..4)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted"]).1)
        .collect();
    assert!(s.sim.deliveries_settled(WAIT).await);
    let emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(30),
    );
    wait_until(WAIT, "every job completed", || s.all_completed(&jobs)).await;
    assert_eq!(
        emulator.completed(),
        jobs,
        "served oldest first, one at a time"
    );
    assert_eq!(emulator.max_alive(), 1);
}

#[tokio::test]
async fn why_a_runner_is_not_up_yet_reaches_the_jobs_explanation() {
    let s = setup(&[("MAX_RUNNERS", "2")]).await;
    let agent = s.agent("k8s-like", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let pending = "Unschedulable: 0/3 nodes are available: 3 Insufficient memory";
    agent.runtime.set_stuck_starting(Some(pending.into()));
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the pending reason in the explanation", || async {
        get_json(&s.controller, &format!("/api/v1/jobs/{job}"))
            .await
            .1["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(pending))
    })
    .await;
}

#[tokio::test]
async fn a_runner_the_controller_does_not_know_is_stopped_after_the_grace() {
    let s = setup(&[("STRAY_GRACE", "300ms")]).await;
    let agent = s.agent("host-1", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // Started behind the controller's back (as by a controller that lost its state).
    let name = shared::ids::AgentName::parse("host-1").unwrap();
    let spec = shared::command::RunnerSpec {
        id: shared::ids::RunnerId::parse("stray-1").unwrap(),
        name: "gha-stray-1".into(),
        image: "runner:test".into(),
        launch: Default::default(),
        registration: shared::command::Registration::JitConfig("e30=".into()),
        labels: vec!["self-hosted".into()],
        env: Default::default(),
        timeout: Duration::from_secs(3600),
        cache: Default::default(),
        arch: shared::arch::Arch::Amd64,
        owner: "acme".into(),
        repository: Some("app".into()),
    };
    s.controller
        .registry
        .send(
            &name,
            shared::command::AgentCommand::StartRunner(Box::new(spec)),
        )
        .unwrap();
    wait_until(WAIT, "the stray is stopped", || async {
        agent
            .runtime
            .runners()
            .iter()
            .any(|r| r.id.as_str() == "stray-1" && r.phase == shared::runner::RunnerPhase::Exited)
    })
    .await;
}

/// A backlog behind an owner at its limit: the scheduler reads only the jobs it could serve and
/// one more (issue 15 §4), yet every queued job still has its reason in `/status` and in
/// `GET /api/v1/jobs/{id}`, and the queue depth counts them all.
#[tokio::test]
async fn jobs_behind_the_heads_of_the_queue_are_explained_and_counted() {
    let s = setup(&[("MAX_RUNNERS", "1")]).await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "10")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // No emulator: the one runner started never takes a job, so the owner stays at its limit.
    let jobs: Vec<u64> = (0..30)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted", "linux"]).1)
        .collect();
    let last = *jobs.last().unwrap();
    wait_until(WAIT, "the last job waits for the owner's limit", || async {
        let (_, body) = get_json(&s.controller, &format!("/api/v1/jobs/{last}")).await;
        body["waiting"]["reason"] == "owner_at_limit"
    })
    .await;
    let (code, status) = get_json(&s.controller, "/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["queue"]["depth"], 30, "{status}");
    let listed = status["queue"]["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 30);
    for job in listed {
        assert!(
            !job["waiting"].is_null(),
            "a queued job without a reason: {job}"
        );
    }
    let limited = listed
        .iter()
        .filter(|j| j["waiting"]["reason"] == "owner_at_limit")
        .count();
    assert_eq!(
        limited, 29,
        "one job has the runner, the rest wait: {status}"
    );
}
