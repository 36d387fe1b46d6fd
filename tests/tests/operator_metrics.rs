//! The Grafana dashboard and the alert rules (issue 14 §3) name only metrics a running
//! controller exposes: every `gha_scaler_*` name in `deploy/grafana/gha-scaler.json` and
//! `deploy/prometheus/alerts.yml` is looked up in `/metrics`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use std::time::Duration;

use tests::emulator::RunnerEmulator;
use tests::harness::{
    AgentTls, TestAgent, TestController, controller_env, hook_to, init, simulated_github,
    wait_until,
};
use tests::pki::TestCa;

/// Every `gha_scaler_…` identifier in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("gha_scaler_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The metric families and sample names `/metrics` exposes.
fn exposed(metrics: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.insert(name.to_owned());
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_count", "_sum", "_created"],
                    _ => &[],
                };
                for s in suffixes {
                    out.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_use_is_exposed() {
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
    let wait = Duration::from_secs(60);
    agent
        .wait_status(wait, "connected", |st| st.connected)
        .await;
    // Everyday traffic: a webhook, a job, a runner started for it (GitHub calls with quotas),
    // the job taken by it (and worked on for longer than the test lasts, so the runner stays
    // active and is counted by state).
    let _emulator = RunnerEmulator::start(
        sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_secs(600),
    );
    let (_, job) = sim.queue_job("acme", "app", &["Self-Hosted"]);
    wait_until(wait, "the job in progress", || async {
        sim.job(job).is_some_and(|j| j.status == "in_progress")
    })
    .await;
    let scrape = || async {
        reqwest::get(format!("http://{}/metrics", controller.http_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // The scheduler's next activation counts the runner by state.
    wait_until(wait, "runners counted by state", || async {
        scrape().await.contains("gha_scaler_runners{")
    })
    .await;
    // The agent's own status (what `gha-agent status` prints) lists the runner by name.
    agent
        .wait_status(wait, "the runner listed in the agent's status", |st| {
            st.runners.len() == 1 && st.runners[0].ends_with("(running)")
        })
        .await;
    // The job's wait, by owner and its (canonical) label set, and its runner's start, both read
    // off the in-progress webhook; queued → runner started once the scheduler saw it running.
    wait_until(wait, "the queue times observed", || async {
        let m = scrape().await;
        [
            "gha_scaler_job_queued_to_runner_started_seconds_count{owner=\"acme\",labels=\"self-hosted\"} 1",
            "gha_scaler_job_queued_to_in_progress_seconds_count{owner=\"acme\",labels=\"self-hosted\"} 1",
            "gha_scaler_runner_started_to_online_seconds_count{owner=\"acme\"} 1",
            "gha_scaler_runner_starts_total{outcome=\"sent\",reason=\"started\"} 1",
        ]
        .iter()
        .all(|s| m.contains(s))
    })
    .await;
    let metrics = scrape().await;
    let exposed = exposed(&metrics);
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["grafana/gha-scaler.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let used = names_in(&text);
        assert!(used.len() >= 5, "{file} uses too few metrics: {used:?}");
        let missing: Vec<_> = used.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not expose: {missing:?}\nexposed: {exposed:?}"
        );
    }
    // The new operator gauges carry their label sets before anything happens.
    for sample in [
        "gha_scaler_agents{state=\"disconnected\"} 0",
        "gha_scaler_circuits_open{cause=\"github\"} 0",
        "gha_scaler_oldest_queued_job_seconds{owner=\"acme\"} 0",
        "gha_scaler_runner_starts_total{outcome=\"failed\",reason=\"github\"} 0",
        "gha_scaler_jobs_recovered_total{owner=\"acme\"} 0",
        "gha_scaler_agent_sessions 1",
        "gha_scaler_agent_reconnects_total 0",
    ] {
        assert!(metrics.contains(sample), "{sample} missing:\n{metrics}");
    }
}

#[test]
fn names_are_found_in_expressions() {
    let names = names_in("rate(gha_scaler_webhooks_total[5m]) / gha_scaler_x{a=\"b\"}");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["gha_scaler_webhooks_total", "gha_scaler_x"]
    );
}
