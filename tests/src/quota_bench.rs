//! `bench quota` (issue 11 §4): GitHub calls per hour by kind against the simulator, for an
//! organization with `ALL_REPOS` and N repositories, a steady job stream, and 5 % of jobs whose
//! `queued` webhooks (`workflow_run` requested and `workflow_job` queued) are all dropped.
//!
//! Time is compressed by [`COMPRESSION`]: `RECONCILE_INTERVAL`, `STALE_JOB_AGE` and
//! `OFFLINE_RUNNER_GRACE` are the defaults divided by it, and so is the quota window, by giving
//! the credential [`COMPRESSION`] times GitHub's 5 000 calls per (real) hour. One bench second is
//! then [`COMPRESSION`] seconds of a controller running with the defaults, and every count is
//! scaled to a real hour as `count × 3600 / (seconds measured × COMPRESSION)`.
//!
//! The controller counts its requests by kind and outcome (`gha_scaler_github_requests_total`);
//! the simulator counts 304s. Only the steady state is measured: after a warm-up in which the
//! reconciler has polled every repository once (a first poll is a counted 200).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::emulator::RunnerEmulator;
use crate::github_sim::{DeliveryFault, GithubSim};
use crate::harness::{AgentTls, TestAgent, TestController, controller_env, hook_to, init, vars};
use crate::pki::TestCa;

/// How much faster than real time the bench runs.
pub const COMPRESSION: u64 = 150;
/// The label only lost jobs ask for.
const LOST_LABEL: &str = "bench-lost";
/// The default `RECONCILE_INTERVAL` (real seconds).
pub const DEFAULT_RECONCILE_S: u64 = 300;

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Scale {
    pub repos: usize,
    /// Jobs per real hour, spread over the repositories at random.
    pub jobs_per_hour: u64,
    /// Bench seconds measured after the warm-up.
    pub measure: Duration,
    /// Percent of jobs whose `queued` webhooks are all dropped.
    pub lost_pct: u32,
    /// Whether the simulator answers conditional requests (GitHub always does; off = baseline).
    pub etags: bool,
}

/// What a run measured, scaled to a real hour.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub repos: usize,
    pub etags: bool,
    /// (kind, outcome) → calls per real hour.
    pub per_hour: HashMap<(String, String), f64>,
    pub served: u64,
    /// Job-serving calls that counted, per served job.
    pub serving_per_job: f64,
    /// Registration calls per served job.
    pub registration_per_job: f64,
    pub lost: usize,
    pub lost_served: usize,
    /// The slowest lost job, queued → taken by a runner, in units of `RECONCILE_INTERVAL`.
    pub worst_lost_intervals: f64,
    /// 304s the simulator answered per real hour.
    pub not_modified_per_hour: f64,
}

impl Report {
    pub fn rate(&self, kind: &str, outcome: &str) -> f64 {
        self.per_hour
            .get(&(kind.to_owned(), outcome.to_owned()))
            .copied()
            .unwrap_or(0.0)
    }
}

async fn request_counts(controller: &TestController) -> HashMap<(String, String), u64> {
    let text = match reqwest::get(format!("http://{}/metrics", controller.http_addr)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("gha_scaler_github_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let n: u64 = value.trim().parse().unwrap_or(0);
        *out.entry((label("kind"), label("outcome"))).or_default() += n;
    }
    out
}

/// Runs one scale; the controller, agent and simulator are torn down at the end.
pub async fn run(scale: &Scale) -> Report {
    init();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(&dir.path().join("pki"), "bench CA");
    let server = ca.server();
    let sim = Arc::new(GithubSim::start().await.expect("simulator"));
    sim.add_user("alice");
    sim.add_org("acme", &["alice"], &[]);
    let names: Vec<String> = (0..scale.repos).map(|i| format!("repo-{i:04}")).collect();
    for n in &names {
        sim.add_repo("acme", n, true);
    }
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    sim.set_rate_limit(5000 * COMPRESSION);
    sim.set_conditional_requests(scale.etags);
    let interval_ms = DEFAULT_RECONCILE_S * 1000 / COMPRESSION;
    let mut env = vars(&[
        ("GITHUB_API_URL", sim.api_url().to_owned()),
        ("REPO_OWNER", "acme".into()),
        ("GITHUB_TOKEN", token),
        ("ALL_REPOS", "true".into()),
        ("WEBHOOK_SECRET", crate::harness::TEST_WEBHOOK_SECRET.into()),
        ("MAX_RUNNERS", "20".into()),
        ("RECONCILE_INTERVAL", format!("{interval_ms}ms")),
        ("STALE_JOB_AGE", format!("{}ms", 600_000 / COMPRESSION)),
        (
            "OFFLINE_RUNNER_GRACE",
            format!("{}ms", 600_000 / COMPRESSION),
        ),
    ]);
    env.extend(controller_env(
        &dir.path().join("state"),
        &ca.ca_file(),
        &server,
    ));
    let controller = TestController::start(env).await;
    hook_to(&sim, "acme", &controller);
    let cert = ca.client("bench-host", &[]);
    let agent = TestAgent::start(
        &controller.grpc_url(),
        &AgentTls {
            ca: ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        },
        &[("MAX_RUNNERS", "50"), ("LABELS", LOST_LABEL)],
    );
    agent
        .wait_status(Duration::from_secs(30), "connected", |st| st.connected)
        .await;
    let emulator = RunnerEmulator::start(
        sim.clone(),
        vec![agent.runtime.clone()],
        Duration::from_millis(50),
    );

    // Warm-up: until the reconciler has polled every repository once (two lists each), with the
    // job stream already going so the state is steady.
    let job_gap = Duration::from_secs_f64(3600.0 / (scale.jobs_per_hour * COMPRESSION) as f64);
    let interval = Duration::from_millis(interval_ms);
    let stream = |until: Instant, record: bool| {
        let sim = sim.clone();
        let names = names.clone();
        let lost_pct = scale.lost_pct;
        async move {
            let mut lost: Vec<(u64, Instant)> = Vec::new();
            let mut taken: HashMap<u64, Duration> = HashMap::new();
            let mut queued = Vec::new();
            while Instant::now() < until {
                let (drop, repo) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..100) < lost_pct,
                        names[rng.random_range(0..names.len())].clone(),
                    )
                };
                if drop {
                    // The faults go to the next matching deliveries: let earlier jobs' go first,
                    // so exactly this job's are the ones dropped.
                    sim.deliveries_settled(Duration::from_secs(10)).await;
                    sim.fault_delivery("workflow_run", Some("requested"), DeliveryFault::Drop);
                    sim.fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
                }
                // A lost job asks for a label only lost jobs have, so only a runner started for
                // it (once the reconciler found it) can take it: any matching runner takes any
                // queued job at GitHub, and a runner started for another job would hide the
                // reconciler's delay.
                let labels: &[&str] = if drop {
                    &["self-hosted", LOST_LABEL]
                } else {
                    &["self-hosted"]
                };
                let (_, job) = sim.queue_job("acme", &repo, labels);
                let at = Instant::now();
                if drop {
                    sim.deliveries_settled(Duration::from_secs(10)).await;
                }
                if record {
                    queued.push(job);
                    if drop {
                        lost.push((job, at));
                    }
                }
                // Lost jobs: when a runner took each (checked at every job of the stream).
                for (job, at) in &lost {
                    if !taken.contains_key(job)
                        && sim.job(*job).is_some_and(|j| j.started_at.is_some())
                    {
                        taken.insert(*job, at.elapsed());
                    }
                }
                tokio::time::sleep(job_gap).await;
            }
            (queued, lost, taken)
        }
    };
    let warm_until =
        Instant::now() + interval * (scale.repos as u32 / 50 + 4) + Duration::from_secs(2);
    let _ = stream(warm_until, false).await;
    let before = request_counts(&controller).await;
    let not_modified_before = sim.counters().not_modified;
    let started = Instant::now();
    let (queued, lost, mut taken) = stream(started + scale.measure, true).await;
    let measured = started.elapsed();
    let after = request_counts(&controller).await;
    let not_modified = sim.counters().not_modified - not_modified_before;
    if std::env::var_os("QUOTA_ROUTES").is_some() {
        for (route, n) in sim.counters().by_route {
            eprintln!("{n:>8} {route}");
        }
    }

    // Lost jobs still waiting: polled until 4 intervals have passed.
    let deadline = Instant::now() + interval * 4;
    while Instant::now() < deadline && taken.len() < lost.len() {
        for (job, at) in &lost {
            if !taken.contains_key(job) && sim.job(*job).is_some_and(|j| j.started_at.is_some()) {
                taken.insert(*job, at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost_served = taken.len();
    let worst = taken.values().copied().max().unwrap_or_default();
    let served = queued
        .iter()
        .filter(|j| sim.job(**j).is_some_and(|j| j.started_at.is_some()))
        .count() as u64;
    drop(emulator);
    drop(agent);

    let scale_to_hour = 3600.0 / (measured.as_secs_f64() * COMPRESSION as f64);
    let mut per_hour = HashMap::new();
    for (key, n) in &after {
        let d = n - before.get(key).copied().unwrap_or(0);
        per_hour.insert(key.clone(), d as f64 * scale_to_hour);
    }
    let delta = |kind: &str| {
        let key = (kind.to_owned(), "sent".to_owned());
        after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
    };
    let per_job = |n: u64| {
        if served == 0 {
            0.0
        } else {
            n as f64 / served as f64
        }
    };
    Report {
        repos: scale.repos,
        etags: scale.etags,
        per_hour,
        served,
        serving_per_job: per_job(delta("job_serving")),
        registration_per_job: per_job(delta("registration")),
        lost: lost.len(),
        lost_served,
        worst_lost_intervals: worst.as_secs_f64() / interval.as_secs_f64(),
        not_modified_per_hour: not_modified as f64 * scale_to_hour,
    }
}
