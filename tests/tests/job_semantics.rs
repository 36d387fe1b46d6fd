//! Job semantics GitHub really sends, end to end with a real agent: a job with no labels (a
//! `runs-on: { group: ... }` job) starts nothing and says why; a label is one string, never
//! split on commas; `workflow_run` deliveries fetch a run's jobs only where no `workflow_job`
//! deliveries arrive for the owner.

use std::sync::Arc;
use std::time::Duration;

use tests::github_sim::GithubSim;
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

/// Where the controller's webhooks come from.
enum Hooks {
    /// An org hook with both events, added by the test.
    Both,
    /// None yet: the test adds its own.
    None,
    /// Webhook setup makes one (`WEBHOOK_URL` is the controller's own `/webhook`).
    Setup,
}

async fn start(extra: &[(&str, &str)], hooks: Hooks) -> Setup {
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
    env.insert("MAX_RUNNERS".into(), "10".into());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let controller = match hooks {
        Hooks::Setup => TestController::start_self_hooked(env).await,
        Hooks::Both | Hooks::None => TestController::start(env).await,
    };
    if matches!(hooks, Hooks::Both) {
        hook_to(&sim, "acme", &controller);
    }
    Setup {
        _dir: dir,
        ca,
        sim,
        controller,
    }
}

async fn setup() -> Setup {
    start(&[], Hooks::Both).await
}

impl Setup {
    fn agent(&self, name: &str) -> TestAgent {
        let cert = self.ca.client(name, &[]);
        TestAgent::start(
            &self.controller.grpc_url(),
            &AgentTls {
                ca: self.ca.ca_file(),
                cert: cert.cert,
                key: cert.key,
            },
            &[("MAX_RUNNERS", "10")],
        )
    }

    /// Waits until the controller knows `job`.
    async fn known(&self, job: u64, what: &str) {
        wait_until(WAIT, what, || async {
            get_json(&self.controller, &format!("/api/v1/jobs/{job}"))
                .await
                .0
                == 200
        })
        .await;
    }

    /// Adds an org hook of `acme` to the controller for `events`.
    fn hook(&self, events: &[&str]) {
        self.sim.add_hook(
            "acme",
            None,
            &format!("http://{}/webhook", self.controller.http_addr),
            Some(tests::harness::TEST_WEBHOOK_SECRET),
            "json",
            events,
        );
    }

    async fn activations(&self) -> u64 {
        get_json(&self.controller, "/status").await.1["scheduler"]["activations"]
            .as_u64()
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn jobs_without_labels_or_with_a_comma_label_start_nothing_and_say_why() {
    let s = setup().await;
    let agent = s.agent("host-1");
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let (_, group_job) = s.sim.queue_job("acme", "app", &[]);
    let (_, comma_job) = s.sim.queue_job("acme", "app", &["self-hosted,linux,x64"]);
    let (_, control) = s.sim.queue_job("acme", "app", &["self-hosted"]);

    // The control job gets its runner: the scheduler has seen all three.
    wait_until(WAIT, "a runner for the control job", || async {
        !agent.runtime.start_calls().is_empty()
    })
    .await;
    let (code, job) = get_json(&s.controller, &format!("/api/v1/jobs/{control}")).await;
    assert_eq!(code, 200, "{job}");
    // A few more activations, then nothing else may have been started.
    let seen = s.activations().await;
    wait_until(WAIT, "three more scheduler activations", || async {
        s.activations().await >= seen + 3
    })
    .await;
    assert_eq!(
        agent.runtime.start_calls().len(),
        1,
        "only the control job's runner: {:?}",
        agent.runtime.start_calls()
    );

    let (code, job) = get_json(&s.controller, &format!("/api/v1/jobs/{group_job}")).await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["job"]["labels"], serde_json::json!([]));
    assert_eq!(job["job"]["state"], "queued");
    let why = job["explanation"].as_str().unwrap();
    assert!(why.contains("no labels") && why.contains("group"), "{why}");
    assert_eq!(job["runner"], serde_json::Value::Null);

    let (code, job) = get_json(&s.controller, &format!("/api/v1/jobs/{comma_job}")).await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(
        job["job"]["labels"],
        serde_json::json!(["self-hosted,linux,x64"])
    );
    let why = job["explanation"].as_str().unwrap();
    assert!(
        why.contains("no agent offers the labels self-hosted,linux,x64"),
        "{why}"
    );
}

/// What the controller answered to each `workflow_run` delivery of `run_id`.
fn run_answers(sim: &GithubSim, run_id: u64) -> Vec<String> {
    sim.deliveries()
        .into_iter()
        .filter(|d| d.event == "workflow_run" && d.payload["workflow_run"]["id"] == run_id)
        .map(|d| d.response_body)
        .collect()
}

#[tokio::test]
async fn workflow_run_is_fetched_only_where_it_is_the_only_signal() {
    let s = start(&[], Hooks::None).await;
    let sim = &s.sim;
    // The Go tool's hooks send `workflow_run` only: the run's jobs must be fetched.
    s.hook(&["workflow_run"]);
    let (run1, job1) = sim.queue_job("acme", "app", &["self-hosted"]);
    s.known(job1, "job 1 known from its run's jobs").await;
    assert!(sim.deliveries_settled(WAIT).await);
    let answers = run_answers(sim, run1);
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|a| a.contains("\"accepted\"")),
        "{answers:?}"
    );

    // Once `workflow_job` deliveries arrive for the owner they carry each job: a run's jobs
    // are not fetched as well.
    s.hook(&["workflow_job"]);
    let (_, warmup) = sim.queue_job("acme", "app", &["self-hosted"]);
    s.known(warmup, "the warm-up job known").await;
    assert!(sim.deliveries_settled(WAIT).await);
    let (run2, job2) = sim.queue_job("acme", "app", &["self-hosted"]);
    s.known(job2, "job 2 known from its workflow_job delivery")
        .await;
    assert!(sim.deliveries_settled(WAIT).await);
    let answers = run_answers(sim, run2);
    assert!(!answers.is_empty());
    assert!(
        answers
            .iter()
            .all(|a| a.contains("ignored_covered_by_workflow_job")),
        "{answers:?}"
    );
}

#[tokio::test]
async fn lost_deliveries_are_redelivered_once_and_their_job_is_served() {
    // No REST sweep: the job can only become known through the redelivered webhook.
    let s = start(
        &[("RECONCILE_INTERVAL", "0"), ("REDELIVERY_INTERVAL", "1s")],
        Hooks::Setup,
    )
    .await;
    let sim = s.sim.clone();
    wait_until(WAIT, "webhook setup created our hook", || async {
        !sim.hooks().is_empty()
    })
    .await;
    let agent = s.agent("host-1");
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let _emulator = tests::emulator::RunnerEmulator::start(
        sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(50),
    );
    // GitHub could not reach us for both signals of the job.
    sim.fault_delivery(
        "workflow_run",
        Some("requested"),
        tests::github_sim::DeliveryFault::Drop,
    );
    sim.fault_delivery(
        "workflow_job",
        Some("queued"),
        tests::github_sim::DeliveryFault::Drop,
    );
    let (_, job) = sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job completed on a runner", || async {
        sim.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    assert!(sim.deliveries_settled(WAIT).await);
    // Give a few more passes the chance to ask again: they must not.
    let passes = |v: serde_json::Value| v["webhook_redelivery"]["at_ms"].as_i64().unwrap_or(0);
    let first = passes(get_json(&s.controller, "/status").await.1);
    wait_until(WAIT, "two more redelivery passes", || async {
        passes(get_json(&s.controller, "/status").await.1) > first + 1_500
    })
    .await;
    let deliveries = sim.deliveries();
    let lost: Vec<_> = deliveries
        .iter()
        .filter(|d| d.status_code == 0 && !d.redelivery)
        .collect();
    assert_eq!(lost.len(), 2, "both dropped deliveries recorded as failed");
    for d in lost {
        let retries: Vec<_> = deliveries
            .iter()
            .filter(|r| r.guid == d.guid && r.redelivery)
            .collect();
        assert_eq!(retries.len(), 1, "{} redelivered exactly once", d.event);
        assert_eq!(retries[0].status_code / 100, 2, "and received");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", s.controller.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gha_scaler_webhook_redeliveries_total{outcome=\"requested\"} 2"),
        "{metrics}"
    );
}
