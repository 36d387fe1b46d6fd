//! `bench fleet`'s harness at a tiny scale: 20 enrolled agents all get sessions, every queued
//! job gets a `StartRunner`, the controller counts its scheduling passes, and after a `kill -9`
//! of the controller process every agent has a new session. Behaviour only; the timings are
//! the bench's (BENCHMARKS.md).

use std::time::Duration;

use tests::fleet_bench::{JobKind, Params, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_enroll_serve_every_job_and_come_back_after_a_kill() {
    tests::harness::init();
    let params = Params {
        agents: 20,
        runners: 40,
        owners: 4,
        rate: 30.0,
        burst: 20,
        burst_every: Duration::from_secs(4),
        window: Duration::from_secs(4),
        idle: Duration::from_secs(1),
        // Well after the controller records the runner running: a shorter boot races its
        // runner write, which loses the job (BENCHMARKS.md, "A lost update").
        boot: Duration::from_secs(3),
        join_concurrency: 4,
        agent_process: false,
        agent_binary: None,
    };
    let r = run(&params, &|line| eprintln!("{line}")).await.unwrap();
    assert_eq!(r.agents_connected, 20, "{r:?}");
    // Each step of the passes under load is read off the controller's own histograms.
    for step in ["sync_runners", "plan", "starts", "publish"] {
        assert!(
            r.load_steps
                .iter()
                .any(|s| s.step == step && s.passes.count > 0),
            "{step}: {:?}",
            r.load_steps
        );
    }
    assert_eq!(r.fill_busy, 40, "{r:?}");
    assert_eq!(r.latency[&JobKind::Fill].samples.len(), 40);
    let burst = r.latency[&JobKind::Burst].samples.len() as u64;
    assert!(burst + r.jobs_to_idle_runners >= 20, "{r:?}");
    assert!(
        r.latency
            .get(&JobKind::Steady)
            .is_some_and(|l| !l.samples.is_empty()),
        "{r:?}"
    );
    assert_eq!(r.queued_after_window, 0, "every job got a runner");
    assert_eq!(r.failed_deliveries, 0);
    assert_eq!(r.lost_starts, 0);
    assert!(
        r.load_passes.count > 0,
        "the scheduler's passes are counted"
    );
    assert!(r.load_passes.p99_s.is_some());
    assert_eq!(r.reconnected, 20, "{r:?}");
    assert!(r.reconnect_all.is_some());
    assert!(r.idle.is_some_and(|u| u.rss_max_mb > 1.0));
}
