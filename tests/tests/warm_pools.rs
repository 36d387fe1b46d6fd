//! Warm pools end to end (`MIN_IDLE_RUNNERS`, `WARM_RUNNER_MAX_AGE`, `MIN_IDLE_SCHEDULE`): a
//! controller, the GitHub simulator and an agent with the in-memory runtime; emulated runners
//! register with their JIT config and take exactly one job each, as ephemeral runners do.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tests::emulator::RunnerEmulator;
use tests::github_sim::GithubSim;
use tests::harness::{
    AgentTls, TestAgent, TestController, controller_env, get_json, hook_to, init, simulated_github,
    wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(30);
const API_TOKEN: &str = "warm-pool-test-api-token";

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
    env.insert("API_TOKEN".into(), API_TOKEN.into());
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

    async fn status(&self) -> Value {
        get_json(&self.controller, "/status").await.1
    }

    /// acme's first pool in `/status`.
    async fn pool(&self) -> Value {
        self.status().await["warm_pools"]["owners"][0]["pools"][0].clone()
    }

    /// The runners acme's first pool keeps, once it keeps `n` ready ones.
    async fn ready(&self, n: u64) -> BTreeSet<String> {
        wait_until(WAIT, &format!("{n} warm runner(s) ready"), || async {
            self.pool().await["ready"] == n
        })
        .await;
        runner_ids(&self.pool().await)
    }

    /// Active runner records in `/status`.
    async fn active(&self) -> Vec<Value> {
        self.status().await["runners"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn completed(&self, jobs: &[u64]) -> bool {
        jobs.iter().all(|j| {
            self.sim
                .job(*j)
                .is_some_and(|job| job.status == "completed")
        })
    }
}

fn runner_ids(pool: &Value) -> BTreeSet<String> {
    pool["runners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

/// The GitHub name of the runner with controller id `id`.
fn name_of(runners: &[Value], id: &str) -> String {
    runners
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["name"].as_str())
        .unwrap_or_else(|| panic!("runner {id} in {runners:?}"))
        .to_owned()
}

#[tokio::test]
async fn a_pool_is_kept_at_its_minimum_and_a_warm_runner_that_takes_a_job_is_replaced() {
    let s = setup(&[("MAX_RUNNERS", "4"), ("MIN_IDLE_RUNNERS", "2")]).await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "10")]).await;
    let emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(100),
    );
    // Before any job: two runners registered and idle at GitHub.
    let warm = s.ready(2).await;
    let active = s.active().await;
    let warm_names: BTreeSet<String> = warm.iter().map(|id| name_of(&active, id)).collect();
    let online: BTreeSet<String> = s
        .sim
        .runners()
        .into_iter()
        .filter(|r| r.connected && r.job.is_none())
        .map(|r| r.name)
        .collect();
    assert!(
        warm_names.is_subset(&online),
        "{warm_names:?} not idle at GitHub: {online:?}"
    );
    assert!(active.iter().all(|r| r["for_job"].is_null()), "{active:?}");
    assert_eq!(
        s.status().await["owners"][0]["min_idle_runners"],
        2,
        "the owner shows its minimum"
    );

    // A job goes to a warm runner (no runner start to wait for), which then exits.
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted", "linux"]);
    let one = [job];
    wait_until(WAIT, "job completed", || s.completed(&one)).await;
    let taken_by = s.sim.job(job).unwrap().runner.unwrap().1;
    assert!(
        warm_names.contains(&taken_by),
        "{taken_by} is not one of the warm runners {warm_names:?}"
    );
    // The pool is back at two, with a new runner in place of the one used.
    wait_until(WAIT, "pool refilled with a new runner", || async {
        let pool = s.pool().await;
        pool["ready"] == 2 && runner_ids(&pool) != warm
    })
    .await;
    assert!(emulator.max_alive() <= 4, "{}", emulator.max_alive());
}

#[tokio::test]
async fn a_pool_never_takes_the_owner_above_its_limit_and_is_refilled_after_a_burst() {
    let s = setup(&[("MAX_RUNNERS", "3"), ("MIN_IDLE_RUNNERS", "2")]).await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "10")]).await;
    let emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(200),
    );
    s.ready(2).await;
    let jobs: Vec<u64> = (0..8)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted"]).1)
        .collect();
    wait_until(WAIT, "every job completed", || s.completed(&jobs)).await;
    assert!(
        emulator.max_alive() <= 3,
        "{} runners alive at once with MAX_RUNNERS=3 and MIN_IDLE_RUNNERS=2",
        emulator.max_alive()
    );
    let mut done = emulator.completed();
    done.sort();
    let mut expected = jobs.clone();
    expected.sort();
    assert_eq!(done, expected, "each job completed exactly once");
    s.ready(2).await;
    assert!(s.active().await.len() <= 3);
}

#[tokio::test]
async fn when_demand_falls_idle_runners_are_stopped_and_the_warm_one_last() {
    // No runner emulation: runners start and stay idle, so cancelling their jobs leaves a
    // surplus of idle runners.
    let s = setup(&[
        ("MAX_RUNNERS", "5"),
        ("MIN_IDLE_RUNNERS", "1"),
        ("RUNNER_IDLE_GRACE", "1s"),
    ])
    .await;
    let _agent = s.agent("host-1", &[("MAX_RUNNERS", "10")]).await;
    s.ready(1).await;
    let jobs: Vec<u64> = (0..3)
        .map(|_| s.sim.queue_job("acme", "app", &["self-hosted"]).1)
        .collect();
    // One job is absorbed by the warm runner: two runners for the others, and a new warm one.
    wait_until(WAIT, "4 runners running", || async {
        s.active()
            .await
            .iter()
            .filter(|r| r["lifecycle"] == "running")
            .count()
            == 4
    })
    .await;
    for j in &jobs {
        s.sim.cancel_queued_job(*j).unwrap();
    }
    // Demand is gone: the surplus goes after the idle grace, one warm runner stays throughout.
    wait_until(WAIT, "one runner left, kept warm", || async {
        let active = s.active().await;
        assert!(
            !active.is_empty(),
            "the warm runner was stopped with the surplus"
        );
        active.len() == 1 && s.pool().await["ready"] == 1
    })
    .await;
    let kept = runner_ids(&s.pool().await);
    let active = s.active().await;
    assert_eq!(
        kept.iter().next(),
        active[0]["id"].as_str().map(str::to_owned).as_ref()
    );
    // The stopped ones left no registration behind.
    let names: Vec<String> = s.sim.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec![name_of(&active, kept.iter().next().unwrap())]);
}

#[tokio::test]
async fn a_warm_runner_past_its_max_age_is_replaced_and_deregistered() {
    let s = setup(&[
        ("MAX_RUNNERS", "2"),
        ("MIN_IDLE_RUNNERS", "1"),
        ("WARM_RUNNER_MAX_AGE", "2s"),
    ])
    .await;
    let agent = s.agent("host-1", &[]).await;
    let _emulator = RunnerEmulator::start(
        s.sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(50),
    );
    let first = s.ready(1).await;
    let first_id = first.iter().next().unwrap().clone();
    let first_name = name_of(&s.active().await, &first_id);
    wait_until(WAIT, "a younger warm runner in its place", || async {
        let pool = s.pool().await;
        pool["ready"] == 1 && !runner_ids(&pool).contains(&first_id)
    })
    .await;
    wait_until(WAIT, "the stale one gone, here and at GitHub", || async {
        !s.active()
            .await
            .iter()
            .any(|r| r["id"] == first_id.as_str())
            && !s.sim.runners().iter().any(|r| r.name == first_name)
    })
    .await;
    assert!(s.active().await.len() <= 2);
}

#[tokio::test]
async fn outside_its_schedule_no_runner_is_kept_warm() {
    // An hour that is not now (UTC).
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 12)
        % 24;
    let schedule = format!("* {hour} * * *");
    let s = setup(&[
        ("MIN_IDLE_RUNNERS", "2"),
        ("MIN_IDLE_SCHEDULE", schedule.as_str()),
    ])
    .await;
    let _agent = s.agent("host-1", &[]).await;
    wait_until(WAIT, "pools outside their schedule", || async {
        s.status().await["warm_pools"]["owners"][0]["state"] == "outside_schedule"
    })
    .await;
    assert!(s.active().await.is_empty());
    let status = s.status().await;
    assert!(
        status["warm_pools"]["owners"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&schedule),
        "{status}"
    );
}
