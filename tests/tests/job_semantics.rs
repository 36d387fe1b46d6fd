//! Job semantics GitHub really sends, end to end with a real agent: a job with no labels (a
//! `runs-on: { group: ... }` job) starts nothing and says why; a label is one string, never
//! split on commas.

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

async fn setup() -> Setup {
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
