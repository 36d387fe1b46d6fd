//! `kill -9` of the controller during a burst of queued jobs: every delivery it answered 2xx
//! is served after the restart, and no job is served twice. Once with the default SQLite
//! store, once with `DATABASE_URL` on a PostgreSQL database of its own.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::emulator::RunnerEmulator;
use tests::harness::{AgentTls, TestAgent, controller_env, init, simulated_github, wait_until};
use tests::pki::TestCa;
use tests::postgres::TestDb;
use tests::process::ControllerProcess;

const JOBS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_a_burst_loses_no_accepted_job() {
    burst_kill_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_a_burst_loses_no_accepted_job_on_postgres() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    burst_kill_restart(Some(&db)).await;
    // The state really was in PostgreSQL: the accepted jobs are rows there.
    let completed = db
        .query_strings("SELECT count(*)::text FROM jobs WHERE state = 'completed'")
        .await;
    assert_ne!(
        completed,
        vec!["0".to_string()],
        "no job rows in PostgreSQL"
    );
}

async fn burst_kill_restart(db: Option<&TestDb>) {
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
    env.insert("MAX_RUNNERS".into(), "40".into());
    if let Some(db) = db {
        env.insert("DATABASE_URL".into(), db.url.clone());
    }
    env.insert("API_TOKEN".into(), "crash-test-api-token-0123".into());
    let mut controller = ControllerProcess::start(env, dir.path().join("controller.log")).await;
    sim.add_hook(
        "acme",
        None,
        &format!("http://{}/webhook", controller.http_addr),
        Some(tests::harness::TEST_WEBHOOK_SECRET),
        "json",
        &["workflow_job", "workflow_run"],
    );
    let cert = ca.client("burst-host", &[]);
    let agent = TestAgent::start(
        &controller.grpc_url(),
        &AgentTls {
            ca: ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        },
        &[("MAX_RUNNERS", "40")],
    );
    agent
        .wait_status(Duration::from_secs(20), "connected", |s| s.connected)
        .await;

    // The burst: jobs are queued faster than they are delivered. Kill the controller once a
    // fifth of the queued-job deliveries were answered.
    let queued_answered = |sim: &tests::github_sim::GithubSim| {
        sim.deliveries()
            .iter()
            .filter(|d| {
                d.event == "workflow_job"
                    && d.action.as_deref() == Some("queued")
                    && d.status_code / 100 == 2
            })
            .count()
    };
    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        jobs.push(sim.queue_job("acme", "app", &["self-hosted"]).1);
    }
    wait_until(
        Duration::from_secs(60),
        "a fifth of the deliveries answered",
        || async { queued_answered(&sim) >= JOBS / 5 },
    )
    .await;
    controller.kill9();
    assert!(
        sim.deliveries_settled(Duration::from_secs(60)).await,
        "the simulator finished delivering"
    );

    let accepted: BTreeSet<u64> = sim
        .deliveries()
        .iter()
        .filter(|d| {
            d.event == "workflow_job"
                && d.action.as_deref() == Some("queued")
                && d.status_code / 100 == 2
        })
        .filter_map(|d| d.payload["workflow_job"]["id"].as_u64())
        .collect();
    assert!(
        accepted.len() >= JOBS / 5 && accepted.len() < JOBS,
        "{} accepted",
        accepted.len()
    );

    // Restart on the same state; runners come and take jobs.
    controller.restart().await;
    let emulator = RunnerEmulator::start(sim.clone(), vec![agent.runtime.clone()], Duration::ZERO);
    wait_until(
        Duration::from_secs(240),
        "every accepted job completed",
        || async {
            accepted
                .iter()
                .all(|j| sim.job(*j).is_some_and(|job| job.status == "completed"))
        },
    )
    .await;
    let completed = emulator.completed();
    let unique: BTreeSet<u64> = completed.iter().copied().collect();
    assert_eq!(unique.len(), completed.len(), "a job was completed twice");
    assert!(
        emulator.max_alive() <= 40,
        "{} runners alive at once with MAX_RUNNERS=40",
        emulator.max_alive()
    );
}
