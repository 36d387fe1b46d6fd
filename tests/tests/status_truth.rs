//! Status that tells the truth (issue 17 §2): with GitHub unreachable or refusing, a queued
//! job says which GitHub error holds it and when the next try is, `/status` says `degraded`
//! with a reason and the last error, and `/ready` answers 503 while nothing can be served.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tests::github_sim::{GithubSim, JitRefusal};
use tests::harness::{
    AgentTls, TestAgent, TestController, controller_env, get_json, hook_to, init, simulated_github,
    wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    _dir: tempfile::TempDir,
    sim: Arc<GithubSim>,
    controller: TestController,
    _agent: TestAgent,
}

/// A controller with one agent; `github_url` replaces the simulator's API URL when given (the
/// simulator still delivers the webhooks).
async fn setup(github_url: Option<String>) -> Setup {
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
    for (k, v) in [
        ("BACKOFF_INITIAL", "200ms"),
        ("BACKOFF_MAX", "2s"),
        ("CIRCUIT_PROBE_INTERVAL", "30s"),
    ] {
        env.insert(k.into(), v.into());
    }
    if let Some(url) = github_url {
        env.insert("GITHUB_API_URL".into(), url);
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
    Setup {
        _dir: dir,
        sim,
        controller,
        _agent: agent,
    }
}

impl Setup {
    async fn explanation(&self, job: u64) -> String {
        let (_, body) = get_json(&self.controller, &format!("/api/v1/jobs/{job}")).await;
        body["explanation"].as_str().unwrap_or_default().to_owned()
    }

    async fn ready(&self) -> (u16, Value) {
        let response = reqwest::get(format!("http://{}/ready", self.controller.http_addr))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn github_unreachable_is_told_as_such_on_the_job_status_and_readiness() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let s = setup(Some(url.clone())).await;
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job names the unreachable GitHub", || async {
        let text = s.explanation(job).await;
        text.contains(&format!("could not reach GitHub at {url}")) && text.contains("next try in")
    })
    .await;
    let text = s.explanation(job).await;
    assert!(!text.contains("registration refused"), "{text}");
    assert!(!text.contains("is being started"), "{text}");

    let (_, status) = get_json(&s.controller, "/status").await;
    assert_eq!(status["status"], "degraded", "{status:#}");
    assert!(
        status["reason"].as_str().unwrap().contains("unreachable"),
        "{status:#}"
    );
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("could not reach GitHub"),
        "{status:#}"
    );
    // Without a token the state and a name-free reason still show.
    let open: Value = reqwest::get(format!("http://{}/status", s.controller.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(open["status"], "degraded", "{open:#}");
    assert!(open.get("last_error").is_none(), "{open:#}");

    let (code, body) = s.ready().await;
    assert_eq!(code, 503, "{body:#}");
    assert_eq!(body["github"], false, "{body:#}");
}

#[tokio::test]
async fn github_refusing_is_told_as_a_refusal_and_healthy_github_is_running() {
    let s = setup(None).await;
    wait_until(WAIT, "ready", || async { s.ready().await.0 == 200 }).await;
    let (_, status) = get_json(&s.controller, "/status").await;
    assert_eq!(status["status"], "running", "{status:#}");
    assert!(status["last_error"].is_null(), "{status:#}");

    s.sim.refuse_jit("acme", JitRefusal::Forbidden);
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job names GitHub's refusal", || async {
        let text = s.explanation(job).await;
        text.contains("refused 403") && text.contains("next try in")
    })
    .await;
    let (_, status) = get_json(&s.controller, "/status").await;
    assert_eq!(status["status"], "degraded", "{status:#}");
    assert!(
        status["reason"].as_str().unwrap().contains("refusing"),
        "{status:#}"
    );
    assert!(
        status["last_error"].as_str().unwrap().contains("403"),
        "{status:#}"
    );
    let (code, body) = s.ready().await;
    assert_eq!(code, 503, "{body:#}");
}
