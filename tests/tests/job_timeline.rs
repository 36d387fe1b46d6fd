//! A job's timeline and the scheduler's decision lines (issue 14 §1, §2, §4), against a real
//! controller process: with `LOG_FORMAT=json` the start decision is one JSON line carrying the
//! job, runner, agent, owner and delivery ids; the timeline (webhooks with their delivery ids,
//! the runner planned, taking the job, ending) is in `GET /api/v1/jobs/{id}` and in
//! `gha-controller job ID`, and is still there after a `kill -9` and restart.

use std::time::Duration;

use controller::cli::{Connection, Exit, Request, run};
use serde_json::Value;
use tests::emulator::RunnerEmulator;
use tests::harness::{agent_of, controller_env, hook_to_addr, init, simulated_github, wait_until};
use tests::pki::TestCa;
use tests::postgres::TestDb;
use tests::process::ControllerProcess;

const TOKEN: &str = "timeline-test-api-token-0123";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_timeline_and_its_decision_line_survive_a_restart() {
    timeline_across_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_timeline_survives_a_restart_on_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    timeline_across_restart(Some(&db)).await;
}

async fn job_json(controller: &ControllerProcess, job: u64) -> Value {
    reqwest::Client::new()
        .get(format!("http://{}/api/v1/jobs/{job}", controller.http_addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn messages(v: &Value) -> Vec<String> {
    v["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn timeline_across_restart(db: Option<&TestDb>) {
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
    if let Some(db) = db {
        env.insert("DATABASE_URL".into(), db.url.clone());
    }
    env.insert("API_TOKEN".into(), TOKEN.into());
    env.insert("LOG_FORMAT".into(), "json".into());
    let log = dir.path().join("controller.log");
    let mut controller = ControllerProcess::start(env, log.clone()).await;
    hook_to_addr(&sim, "acme", controller.http_addr);
    let agent = agent_of(&ca, &controller.grpc_url(), "timeline-host", &[]);
    agent.wait_status(WAIT, "connected", |s| s.connected).await;
    let _emulator = RunnerEmulator::start(
        sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(200),
    );
    let (_, job) = sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the job completed", || async {
        sim.job(job).is_some_and(|j| j.status == "completed")
    })
    .await;
    // Every event up to the runner's end is in the timeline (the observer looks every 500 ms).
    wait_until(WAIT, "the timeline up to the runner's end", || async {
        let m = messages(&job_json(&controller, job).await);
        m.iter()
            .any(|t| t.contains("webhook workflow_job: job completed"))
            && m.iter().any(|t| t.contains("ended"))
    })
    .await;
    let before = job_json(&controller, job).await;
    let texts = messages(&before);
    for want in [
        "first heard of",
        "webhook workflow_job: job queued",
        "decided: runner",
        "starts on agent timeline-host",
        "webhook workflow_job: job in progress",
        "webhook workflow_job: job completed",
        "ended",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(want)),
            "{want:?} missing from {texts:#?}"
        );
    }
    let queued_delivery = sim
        .deliveries()
        .iter()
        .find(|d| {
            d.event == "workflow_job"
                && d.action.as_deref() == Some("queued")
                && d.payload["workflow_job"]["id"].as_u64() == Some(job)
        })
        .map(|d| d.guid.clone())
        .expect("the queued delivery");
    let webhook = before["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["message"] == "webhook workflow_job: job queued")
        .unwrap();
    assert_eq!(webhook["delivery"], queued_delivery.as_str());
    assert_eq!(webhook["kind"], "webhook");

    // The start decision: one JSON line with every id.
    let text = std::fs::read_to_string(&log).unwrap();
    let decision: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["decision"] == "start" && v["job"].as_u64() == Some(job))
        .unwrap_or_else(|| panic!("no start decision line for job {job} in:\n{text}"));
    assert_eq!(decision["outcome"], "sent", "{decision}");
    assert_eq!(decision["owner"], "acme", "{decision}");
    assert_eq!(decision["agent"], "timeline-host", "{decision}");
    assert_eq!(decision["delivery"], queued_delivery.as_str(), "{decision}");
    let runner = decision["runner"].as_str().unwrap_or_default();
    assert!(
        !runner.is_empty() && texts.iter().any(|t| t.contains(runner)),
        "the decision's runner {runner:?} is the timeline's: {texts:#?}"
    );

    // After kill -9 and a restart the timeline is still there.
    controller.kill9();
    controller.restart().await;
    let after = job_json(&controller, job).await;
    assert_eq!(
        after["timeline"], before["timeline"],
        "the timeline changed across the restart"
    );
    let conn = Connection {
        url: format!("http://{}", controller.http_addr),
        token: Some(TOKEN.into()),
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = run(
        &conn,
        &Request::Job {
            id: job.to_string(),
            owner: None,
        },
        false,
        &mut out,
        &mut err,
    )
    .await;
    let out = String::from_utf8(out).unwrap();
    assert_eq!(exit, Exit::Ok, "{}", String::from_utf8_lossy(&err));
    assert!(out.contains("timeline:"), "{out}");
    assert!(
        out.contains(&format!(
            "webhook workflow_job: job queued (delivery {queued_delivery})"
        )),
        "{out}"
    );
    assert!(out.contains("decided: runner"), "{out}");
}
