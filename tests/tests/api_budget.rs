//! The API budget end to end (issue 11 §4): a real controller against the GitHub simulator, with
//! a real agent (in-memory runtime) and emulated runners. Background work (the reconciler) pauses
//! when the quota is low while registrations for queued jobs go on; lost webhooks in a busy
//! organization are recovered through recently pushed repositories, the rest answering 304s.

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
    _agent: TestAgent,
    _emulator: RunnerEmulator,
    sim: Arc<GithubSim>,
    controller: TestController,
}

async fn setup(rate_limit: u64, extra: &[(&str, &str)], repos: usize) -> Setup {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "test CA");
    let server = ca.server();
    let (sim, mut env) = simulated_github().await;
    sim.set_rate_limit(rate_limit);
    for i in 0..repos {
        sim.add_repo("acme", &format!("repo-{i:03}"), true);
    }
    env.extend(controller_env(
        &dir.path().join("state"),
        &ca.ca_file(),
        &server,
    ));
    env.insert("MAX_RUNNERS".into(), "5".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let controller = TestController::start(env).await;
    hook_to(&sim, "acme", &controller);
    let cert = ca.client("host-1", &[]);
    let agent = TestAgent::start(
        &controller.grpc_url(),
        &AgentTls {
            ca: ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        },
        &[],
    );
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let emulator = RunnerEmulator::start(
        sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(20),
    );
    Setup {
        _dir: dir,
        _agent: agent,
        _emulator: emulator,
        sim,
        controller,
    }
}

impl Setup {
    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.controller.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `gha_scaler_github_requests_total` for acme's `kind` and `outcome`.
    async fn requests(&self, kind: &str, outcome: &str) -> u64 {
        let text = self.metrics().await;
        let wanted = format!(
            "gha_scaler_github_requests_total{{owner=\"acme\",kind=\"{kind}\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&wanted))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn completed(&self, job: u64) -> bool {
        self.sim.job(job).is_some_and(|j| j.status == "completed")
    }
}

#[tokio::test]
async fn low_quota_pauses_background_work_while_registrations_go_on() {
    let s = setup(1000, &[("RECONCILE_INTERVAL", "200ms")], 0).await;
    wait_until(WAIT, "the reconciler polls", || async {
        s.requests("background", "sent").await > 0
    })
    .await;
    // Other clients of the token spent it: 150 of 1 000 left. Background work stops at 200
    // (twice the 10 % reserve); serving and registering go on.
    s.sim.set_quota_remaining(150);
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job is served on low quota", || async {
        s.completed(job)
    })
    .await;
    assert!(s.requests("registration", "sent").await > 0);
    let sent = s.requests("background", "sent").await;
    let deferred = s.requests("background", "deferred").await;
    wait_until(WAIT, "reconciliation passes are deferred", || async {
        s.requests("background", "deferred").await >= deferred + 3
    })
    .await;
    assert_eq!(
        s.requests("background", "sent").await,
        sent,
        "no background call is sent while the quota is low"
    );
    let (code, status) = get_json(&s.controller, "/status").await;
    assert_eq!(code, 200);
    let bucket = &status["github_budget"]["buckets"][0];
    assert_eq!(bucket["owner"], "acme", "{status}");
    assert_eq!(bucket["state"], "background_paused", "{bucket}");
    assert!(
        bucket["reason"]
            .as_str()
            .unwrap()
            .contains("the quota is low"),
        "{bucket}"
    );
    assert_eq!(status["github_budget"]["background_share_pct"], 30);
}

#[tokio::test]
async fn the_background_share_caps_reconciliation_within_a_window() {
    // 30 repositories polled twice each per pass would spend 60 calls a pass; the share of a
    // 100-call window is 10 (API_BACKGROUND_SHARE=10).
    let s = setup(
        100,
        &[
            ("RECONCILE_INTERVAL", "100ms"),
            ("API_BACKGROUND_SHARE", "10"),
        ],
        30,
    )
    .await;
    s.sim.set_conditional_requests(false);
    wait_until(WAIT, "background work reaches its share", || async {
        s.requests("background", "deferred").await >= 5
    })
    .await;
    let sent = s.requests("background", "sent").await;
    assert!(
        sent <= 10 + 1,
        "{sent} background calls in a window whose share is 10 (one may have been in flight)"
    );
    // Registrations still have their quota.
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job is served", || async { s.completed(job) }).await;
}

#[tokio::test]
async fn a_lost_job_in_a_large_organization_is_found_through_its_push_while_the_rest_answer_304() {
    let s = setup(5000, &[("RECONCILE_INTERVAL", "300ms")], 20).await;
    // Warm up: every repository polled once (a first poll is a counted 200), then 304s.
    wait_until(WAIT, "the unchanged lists answer 304", || async {
        s.requests("background", "not_modified").await >= 40
    })
    .await;
    s.sim
        .fault_delivery("workflow_run", Some("requested"), DeliveryFault::Drop);
    s.sim
        .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
    let (_, job) = s.sim.queue_job("acme", "repo-013", &["self-hosted"]);
    assert!(s.sim.deliveries_settled(WAIT).await);
    wait_until(WAIT, "the lost job completed", || async {
        s.completed(job)
    })
    .await;
}

#[tokio::test]
async fn permanently_failing_run_fetches_never_block_a_newer_one() {
    let s = setup(5000, &[], 0).await;
    // Every jobs list of repository `web` is a 404 (as for a repository deleted meanwhile).
    s.sim.fail_rest(
        "acme/web/actions/runs/",
        100_000,
        tests::github_sim::RestFault::ServerError(404),
    );
    // 40 runs in `web` and then one in `app` are known only from `workflow_run` webhooks: their
    // `workflow_job` deliveries are lost, so only fetching the run finds the job. More failing
    // runs than one activation fetches (32) come first.
    for _ in 0..41 {
        s.sim
            .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
    }
    for _ in 0..40 {
        s.sim.queue_job("acme", "web", &["self-hosted"]);
    }
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the newer run's job is served", || async {
        s.completed(job)
    })
    .await;
    // Served while the failing fetches still back off, not because they were given up (the
    // counters start at 0 for every outcome, so their values are read).
    let metrics = s.metrics().await;
    let count = |outcome: &str| -> f64 {
        let prefix = format!("gha_scaler_run_fetches_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("failed") > 0.0, "{metrics}");
    assert_eq!(count("given_up"), 0.0, "{metrics}");
}
