//! Failure containment end to end (issue 11): a refused registration backs off and says why
//! instead of looping, a crash-looping image backs off and leaves no registration behind, a 5xx
//! after GitHub created the runner is resolved through the 409 that follows, a lost `completed`
//! stops holding a slot, and a runner busy with a job whose webhooks were lost is not stopped.
//!
//! Intervals are scaled down through the controller's variables (`CIRCUIT_PROBE_INTERVAL`,
//! `BACKOFF_*`, `STALE_JOB_AGE`) so the minutes of production become seconds here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agent::runtime::memory::MemoryRuntime;
use shared::runner::RunnerPhase;
use tests::emulator::RunnerEmulator;
use tests::github_sim::{DeliveryFault, GithubSim, JitRefusal};
use tests::harness::{
    AgentTls, TestAgent, TestController, controller_env, get_json, hook_to, init, simulated_github,
    wait_until,
};
use tests::pki::TestCa;
use tokio_util::sync::CancellationToken;

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
    async fn agent(&self, name: &str, extra: &[(&str, &str)]) -> TestAgent {
        let cert = self.ca.client(name, &[]);
        let agent = TestAgent::start(
            &self.controller.grpc_url(),
            &AgentTls {
                ca: self.ca.ca_file(),
                cert: cert.cert,
                key: cert.key,
            },
            extra,
        );
        agent
            .wait_status(WAIT, "connected", |st| st.connected)
            .await;
        agent
    }

    async fn job(&self, id: u64) -> serde_json::Value {
        get_json(&self.controller, &format!("/api/v1/jobs/{id}"))
            .await
            .1
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.controller.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn our_registrations(&self) -> usize {
        self.sim
            .runners()
            .iter()
            .filter(|r| r.name.starts_with("gha-"))
            .count()
    }
}

#[tokio::test]
async fn a_refused_jit_registration_opens_a_circuit_with_a_bounded_number_of_calls() {
    // A probe every 600 ms stands for one a minute: the 3 s watched stand for 5 minutes.
    let s = setup(&[
        ("MAX_RUNNERS", "10"),
        ("CIRCUIT_PROBE_INTERVAL", "600ms"),
        ("BACKOFF_INITIAL", "100ms"),
        ("BACKOFF_MAX", "3s"),
    ])
    .await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "10")]).await;
    s.sim.refuse_jit("acme", JitRefusal::Forbidden);
    let jobs: Vec<u64> = (0..10)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted"]).1)
        .collect();
    wait_until(WAIT, "the first refusal", || async {
        s.sim.jit_requests() >= 1
    })
    .await;
    let first = tokio::time::Instant::now();
    tokio::time::sleep_until(first + Duration::from_secs(3)).await;
    let calls = s.sim.jit_requests();
    assert!(
        (2..=6).contains(&calls),
        "{calls} JIT requests for 10 queued jobs in 5 scaled minutes (a probe is expected)"
    );
    assert!(
        agent.runtime.start_calls().is_empty(),
        "nothing was started"
    );

    let body = s.job(jobs[9]).await;
    assert_eq!(body["waiting"]["reason"], "backing_off", "{body}");
    assert_eq!(body["waiting"]["circuit_open"], true, "{body}");
    let explanation = body["explanation"].as_str().unwrap();
    assert!(
        explanation.contains(
            "owner acme: JIT registration refused 403 'Resource not accessible by integration' — grant Organization Self Hosted Runners: write; next try in"
        ),
        "{explanation}"
    );
    let (_, status) = get_json(&s.controller, "/status").await;
    let waiting = status["queue"]["jobs"].as_array().unwrap();
    assert!(
        waiting
            .iter()
            .all(|j| j["explanation"].as_str().unwrap().contains("refused 403")),
        "{status}"
    );
    assert_eq!(status["containment"][0]["cause"], "github", "{status}");
    assert_eq!(status["containment"][0]["owner"], "acme", "{status}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("gha_scaler_start_failures_total{cause=\"github\",kind=\"circuit\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gha_scaler_jobs_held_by_backoff{cause=\"github\",kind=\"circuit\"} 10"),
        "{metrics}"
    );

    // The permission is granted: the next probe succeeds and the queue is served.
    s.sim.clear_jit_refusal("acme");
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(20),
    );
    wait_until(WAIT, "every job completed after the fix", || async {
        jobs.iter()
            .all(|j| s.sim.job(*j).is_some_and(|j| j.status == "completed"))
    })
    .await;
}

/// Every runner the agent starts exits at once with code 1, never registering: a broken image.
fn crash_every_runner(runtime: MemoryRuntime) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut crashed = BTreeSet::new();
        while !token.is_cancelled() {
            for r in runtime.runners() {
                if r.phase == RunnerPhase::Running && crashed.insert(r.id.clone()) {
                    runtime.finish(&r.id, 1).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    stop
}

#[tokio::test]
async fn a_crash_looping_image_backs_off_and_leaves_no_registration() {
    let s = setup(&[
        ("MAX_RUNNERS", "3"),
        ("BACKOFF_INITIAL", "200ms"),
        ("BACKOFF_MAX", "1s"),
    ])
    .await;
    let agent = s.agent("host-1", &[]).await;
    let crashing = crash_every_runner(agent.runtime.clone());
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "a first crash", || async {
        !agent.runtime.start_calls().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starts = agent.runtime.start_calls().len();
    // Without a back-off a runner is started every activation (tens of times a second).
    assert!(
        starts <= 12,
        "{starts} starts in 3 s of a crash loop (back-off 200 ms doubling to 1 s)"
    );
    // Between tries (a try is a runner starting, briefly) the job says why it waits.
    wait_until(WAIT, "the job explained as backing off", || async {
        let body = s.job(job).await;
        body["waiting"]["reason"] == "backing_off"
            && body["explanation"]
                .as_str()
                .is_some_and(|e| e.contains("end without taking a job"))
    })
    .await;
    assert!(
        s.metrics()
            .await
            .contains("gha_scaler_start_failures_total{cause=\"crash\",kind=\"backoff\"}")
    );
    // Every crashed runner's registration was deleted: between tries none is left.
    wait_until(WAIT, "no registration of ours left at GitHub", || async {
        s.our_registrations() == 0
    })
    .await;
    crashing.cancel();
}

#[tokio::test]
async fn a_5xx_after_the_runner_was_created_is_resolved_through_the_409() {
    let s = setup(&[("MAX_RUNNERS", "2")]).await;
    let agent = s.agent("host-1", &[]).await;
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(20),
    );
    // GitHub creates the runner, then answers 502.
    s.sim.fail_jit_after_create(1, 502);
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job completed", || async {
        s.sim.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    // 502 (created), the retry with the same name: 409, then the one that worked.
    assert_eq!(s.sim.jit_requests(), 3);
    assert_eq!(
        agent.runtime.start_calls().len(),
        1,
        "one runner served the job"
    );
    wait_until(WAIT, "the orphan registration deleted", || async {
        s.our_registrations() == 0
    })
    .await;
}

#[tokio::test]
async fn a_lost_completed_stops_holding_a_slot_after_one_recheck() {
    let s = setup(&[("MAX_RUNNERS", "1"), ("STALE_JOB_AGE", "500ms")]).await;
    let agent = s.agent("host-1", &[]).await;
    let emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(20),
    );
    // Only `queued` reaches the controller: it never hears that the job ran and completed.
    for (event, action) in [
        ("workflow_run", "in_progress"),
        ("workflow_job", "in_progress"),
        ("workflow_job", "completed"),
        ("workflow_run", "completed"),
    ] {
        s.sim
            .fault_delivery(event, Some(action), DeliveryFault::Drop);
    }
    let (_, lost) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job completed at GitHub", || async {
        s.sim.job(lost).is_some_and(|j| j.status == "completed")
    })
    .await;
    wait_until(WAIT, "the controller learns it completed", || async {
        s.job(lost).await["job"]["state"] == "completed"
    })
    .await;
    // The slot is free: the next job is served, and no runner idles for the phantom.
    let (_, next) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the next job completed", || async {
        s.sim.job(next).is_some_and(|j| j.status == "completed")
    })
    .await;
    wait_until(WAIT, "the queue is empty", || async {
        get_json(&s.controller, "/status").await.1["queue"]["depth"] == 0
    })
    .await;
    assert_eq!(emulator.completed(), vec![lost, next]);
    assert!(
        s.metrics()
            .await
            .contains("gha_scaler_stale_job_checks_total{outcome=\"completed\"}")
    );
}

#[tokio::test]
async fn a_busy_runner_whose_webhooks_were_lost_is_not_stopped() {
    let s = setup(&[("MAX_RUNNERS", "2"), ("RUNNER_IDLE_GRACE", "300ms")]).await;
    let agent = s.agent("host-1", &[]).await;
    // Job C: GitHub sends nothing the controller receives, not even `queued`.
    for (event, action) in [
        ("workflow_run", "requested"),
        ("workflow_job", "queued"),
        ("workflow_run", "in_progress"),
        ("workflow_job", "in_progress"),
    ] {
        s.sim
            .fault_delivery(event, Some(action), DeliveryFault::Drop);
    }
    let (_, c) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    assert!(s.sim.deliveries_settled(WAIT).await);
    // Job A is heard of; the runner started for it takes C (older, also matching).
    let emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_secs(3),
    );
    let (_, a) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "C taken by our runner", || async {
        s.sim.job(c).is_some_and(|j| j.status == "in_progress")
    })
    .await;
    // A is cancelled: here the runner now looks idle with nothing to serve.
    s.sim.cancel_queued_job(a).unwrap();
    wait_until(
        WAIT,
        "the idle stop was vetoed by GitHub's busy flag",
        || async {
            s.metrics()
                .await
                .contains("gha_scaler_idle_stops_vetoed_total 1")
        },
    )
    .await;
    wait_until(WAIT, "C completed", || async {
        s.sim.job(c).is_some_and(|j| j.status == "completed")
    })
    .await;
    assert_eq!(emulator.completed(), vec![c]);
    let runners = agent.runtime.runners();
    assert_eq!(runners.len(), 1, "{runners:?}");
    assert_ne!(
        runners[0].reason, "stopped by the controller",
        "the runner working on C was stopped"
    );
}

#[tokio::test]
async fn an_offline_registration_of_ours_is_deleted_and_a_foreign_one_kept() {
    let s = setup(&[("OFFLINE_RUNNER_GRACE", "300ms")]).await;
    let _agent = s.agent("host-1", &[]).await;
    // This installation's tag in runner names (gha-{owner}-{installation}-{id}).
    let (_, status) = get_json(&s.controller, "/status").await;
    let installation = status["config"]["installation"]
        .as_str()
        .expect("the installation tag in /status")
        .to_owned();
    assert_eq!(installation.len(), 6, "{status}");
    // Left by a start that failed half-way (or a controller that lost its state).
    let ours = s.sim.add_offline_runner(
        "acme",
        None,
        &format!("gha-acme-{installation}-0123456789ab"),
    );
    let foreign = s.sim.add_offline_runner("acme", None, "build-box-1");
    let other_owner = s.sim.add_offline_runner(
        "acme",
        None,
        &format!("gha-globex-{installation}-0123456789ab"),
    );
    // A staging controller on the same organization: its JIT registrations are offline until
    // their runners connect, and must never be deleted by this one.
    let mut staging = installation.clone().into_bytes();
    staging[5] = if staging[5] == b'0' { b'1' } else { b'0' };
    let staging = String::from_utf8(staging).unwrap();
    let other_installation =
        s.sim
            .add_offline_runner("acme", None, &format!("gha-acme-{staging}-0123456789ab"));
    // Untagged, with no record of ours: proves nothing.
    let untagged = s
        .sim
        .add_offline_runner("acme", None, "gha-acme-0123456789ab");
    wait_until(WAIT, "our leftover deleted", || async {
        s.sim.runners().iter().all(|r| r.id != ours)
    })
    .await;
    let left: Vec<u64> = s.sim.runners().iter().map(|r| r.id).collect();
    assert!(left.contains(&foreign), "a foreign runner was deleted");
    assert!(
        left.contains(&other_owner),
        "another owner's prefix was deleted"
    );
    assert!(
        left.contains(&other_installation),
        "another installation's registration was deleted"
    );
    assert!(
        left.contains(&untagged),
        "an untagged registration was deleted"
    );
    let (_, status) = get_json(&s.controller, "/status").await;
    let sweep = &status["registration_sweeps"][0];
    assert_eq!(sweep["owner"], "acme", "{status}");
    assert!(
        s.metrics()
            .await
            .contains("gha_scaler_registrations_deleted_total{reason=\"offline\"} 1")
    );
}

/// What a myoung34-style image does with a registration token: registers a non-ephemeral runner
/// under its own name, takes one job, completes it and exits (the registration stays at GitHub).
fn token_runners(sim: Arc<GithubSim>, runtime: MemoryRuntime) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut handled = BTreeSet::new();
        while !token.is_cancelled() {
            for r in runtime.runners() {
                if r.phase != RunnerPhase::Running || !handled.insert(r.id.clone()) {
                    continue;
                }
                let Some(spec) = runtime.spec(&r.id) else {
                    continue;
                };
                let shared::command::Registration::Token { token, .. } = &spec.registration else {
                    runtime.finish(&r.id, 1).await;
                    continue;
                };
                let labels: Vec<&str> = spec.labels.iter().map(String::as_str).collect();
                let registered = sim
                    .register_runner(token, &spec.name, &labels, false)
                    .expect("the registration token is accepted");
                while sim.claim_job(registered.id).ok().flatten().is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                sim.complete_job(registered.id, "success").unwrap();
                runtime.finish(&r.id, 0).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    stop
}

#[tokio::test]
async fn a_token_mode_runner_is_deregistered_by_name_when_it_ends() {
    let s = setup(&[("RUNNER_REGISTRATION", "token")]).await;
    let agent = s.agent("host-1", &[]).await;
    let runners = token_runners(s.sim.clone(), agent.runtime.clone());
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job completed", || async {
        s.sim.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    wait_until(WAIT, "the token-mode runner deregistered", || async {
        s.our_registrations() == 0
    })
    .await;
    runners.cancel();
}

#[tokio::test]
async fn a_runner_that_runs_but_never_comes_online_is_stopped_and_deregistered() {
    // Nothing registers the runners with the simulator: their containers "run" (the in-memory
    // runtime says so) but GitHub never sees them online, as with an image that cannot reach
    // GitHub.
    let s = setup(&[
        ("OFFLINE_RUNNER_GRACE", "300ms"),
        ("RUNNER_REGISTER_TIMEOUT", "1s"),
    ])
    .await;
    let agent = s.agent("host-1", &[]).await;
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "a runner started", || async {
        !agent.runtime.start_calls().is_empty()
    })
    .await;
    let first = agent.runtime.start_calls()[0].clone();
    let name = agent
        .runtime
        .runners()
        .into_iter()
        .find(|r| r.id == first)
        .unwrap()
        .name;
    assert!(
        s.sim.runners().iter().any(|r| r.name == name),
        "registered (JIT), offline"
    );
    wait_until(WAIT, "it was stopped as never registered", || async {
        agent
            .runtime
            .runners()
            .iter()
            .any(|r| r.id == first && r.phase != RunnerPhase::Running)
    })
    .await;
    wait_until(WAIT, "its registration deleted", || async {
        s.sim.runners().iter().all(|r| r.name != name)
    })
    .await;
    assert!(
        s.metrics()
            .await
            .contains("gha_scaler_registrations_deleted_total{reason=\"never_registered\"} 1")
    );
    assert_eq!(
        s.sim.job(job).unwrap().status,
        "queued",
        "the job still waits"
    );
    // The next runner is not started at once: the image backs off, and the job says why.
    wait_until(WAIT, "the job explains the back-off", || async {
        let (_, explained) = get_json(&s.controller, &format!("/api/v1/jobs/{job}")).await;
        explained["explanation"]
            .as_str()
            .unwrap_or("")
            .contains("without coming online")
    })
    .await;
    assert_eq!(
        agent.runtime.start_calls().len(),
        1,
        "no second start during the back-off"
    );
}

#[tokio::test]
async fn a_burst_is_registered_concurrently_but_never_more_than_eight_at_once_for_one_owner() {
    // GitHub allows 100 concurrent requests per user or app; one after another, a burst of
    // 2 000 jobs took tens of seconds to start. With a round trip of 100 ms, 24 jobs one after
    // another would take 2.4 s of registrations; the bound is what is asserted, not the time.
    let s = setup(&[("MAX_RUNNERS", "40")]).await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "40")]).await;
    s.sim.set_rest_latency(Duration::from_millis(100));
    for _ in 0..24 {
        s.sim.queue_job("acme", "app", &["self-hosted"]);
    }
    wait_until(WAIT, "24 runners started", || async {
        agent.runtime.start_calls().len() >= 24
    })
    .await;
    let most = s.sim.max_requests_in_flight("generate-jitconfig");
    assert!(
        (2..=8).contains(&most),
        "{most} JIT registrations of one owner were in flight at once (expected 2 to 8)"
    );
    assert_eq!(s.sim.concurrency_refusals(), 0);
    assert_eq!(s.our_registrations(), 24);
}
