//! Benchmarks (not tests): `cargo run --release -p tests --bin bench -- <webhook|planner|quota|all>`.
//!
//! - `webhook`: signed `workflow_job` deliveries (each a new queued job, persisted before the
//!   answer) against the same server's bare `GET /health`, same client, same run. Throughput
//!   and latency percentiles, median of 3 rounds, and the ratio webhook/bare. `webhook 0,100000`
//!   runs once per backlog: that many queued jobs are in the store before the first delivery.
//! - `planner`: one planning pass over 10 000 queued jobs and 1 000 agents; median of rounds.
//!
//! - `quota`: GitHub calls per hour by kind for 10, 200 and 1 000 repositories, with ETags and
//!   without (baseline), in compressed time (see `tests::quota_bench`). `quota 10,200` picks scales.
//!
//! - `fleet`: 1 000 agents over mutual TLS (enrolled with join tokens, run as tasks of this
//!   process with the memory runtime), 10 000 runners tracked over 20 owners, 100 deliveries/s
//!   with bursts of 2 000, a `kill -9` of the controller process and the reconnect storm (see
//!   `tests::fleet_bench`; `FLEET_*` variables make it smaller). Not part of `all`.
//!
//! Both share the machine's cores with their load generator: read ratios, not absolutes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use controller::scheduler::planner::{
    self, ActiveRunner, AgentSupply, OwnerLimits, PendingJob, PlanInput,
};
use shared::arch::{Arch, RuntimeKind};
use shared::ids::AgentName;
use tests::github_sim::signature_256;
use tests::harness::{TEST_WEBHOOK_SECRET, TestController, vars};

const ROUNDS: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

struct Round {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Builds request `i` of a load run.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// Sends `total` requests over `concurrency` connections; `make` builds request `i`.
async fn load(
    client: &reqwest::Client,
    total: usize,
    concurrency: usize,
    make: MakeRequest,
) -> Round {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, make) = (client.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return latencies;
                }
                let t = Instant::now();
                let resp = make(&client, i).send().await.expect("request");
                assert!(resp.status().is_success(), "status {}", resp.status());
                let _ = resp.bytes().await;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let elapsed = started.elapsed();
    all.sort();
    Round {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
    }
}

fn job_body(i: usize) -> Vec<u8> {
    format!(
        r#"{{"action":"queued","workflow_job":{{"id":{id},"run_id":{run},"name":"build","status":"queued","labels":["self-hosted","linux","x64"],"runner_name":null,"conclusion":null,"steps":[],"head_sha":"4a3f1b2c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a","html_url":"https://github.com/acme/app/actions/runs/{run}/job/{id}","created_at":"2026-11-28T00:00:00Z"}},"repository":{{"id":1,"name":"app","full_name":"acme/app","private":true,"owner":{{"login":"acme","id":2,"type":"Organization"}}}},"organization":{{"login":"acme","id":2}},"sender":{{"login":"alice","id":3,"type":"User"}}}}"#,
        id = 10_000_000 + i,
        run = 20_000_000 + i
    )
    .into_bytes()
}

/// Puts `backlog` queued jobs of the bench's owner into the store under `state_dir` before the
/// controller starts, as a controller that had received them would hold them.
async fn preload_backlog(state_dir: &std::path::Path, backlog: usize) {
    if backlog == 0 {
        return;
    }
    let store = controller::store::SqliteStore::open(state_dir).expect("store");
    let now = shared::runner::now_ms();
    for chunk in (0..backlog).collect::<Vec<_>>().chunks(5_000) {
        let jobs = chunk
            .iter()
            .map(|&i| controller::store::JobRecord {
                id: 1_000_000 + i as u64,
                run_id: 2_000_000 + i as u64,
                owner: shared::owner::Owner::new("acme"),
                repo: "app".into(),
                name: "build".into(),
                labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
                state: controller::store::JobState::Queued,
                runner_name: None,
                conclusion: None,
                first_seen_ms: now,
                queued_ms: Some(now - (backlog - i) as i64),
                updated_ms: now,
            })
            .collect();
        controller::store::StateStore::upsert_jobs(&store, jobs)
            .await
            .expect("preload");
    }
}

/// `WEBHOOK_CONNECTIONS` (default 32): concurrent keep-alive connections, for both routes. A
/// delivery is answered only after its group's fsync, so with few connections intake is bounded
/// by connections / commit latency rather than by CPU.
fn webhook_connections() -> usize {
    std::env::var("WEBHOOK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&c: &usize| c > 0)
        .unwrap_or(32)
}

async fn bench_webhook(backlog: usize) {
    shared::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    preload_backlog(&dir.path().join("state"), backlog).await;
    let mut env = vars(&[
        ("STATE_DIR", dir.path().join("state").display().to_string()),
        ("AGENT_HEARTBEAT_INTERVAL", "10s".into()),
    ]);
    env.extend(tests::harness::owner_vars());
    // The controller sheds deliveries beyond WEBHOOK_CONCURRENCY (default 64) with 503: raised
    // to the bench's connections when they are more, so that every delivery is answered 2xx.
    let concurrency = webhook_connections();
    if concurrency > 64 {
        env.insert("WEBHOOK_CONCURRENCY".into(), concurrency.to_string());
    }
    let controller = TestController::start(env).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client");
    let base = format!("http://{}", controller.http_addr);
    // `WEBHOOK_REQUESTS` per round (default 20 000: a few seconds of sustained deliveries, long
    // enough for scheduler passes over the growing queue to compete with intake).
    let total = std::env::var("WEBHOOK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let bodies: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (0..total * ROUNDS)
            .map(|i| {
                let body = job_body(i);
                let sig = signature_256(TEST_WEBHOOK_SECRET, &body);
                (body, sig)
            })
            .collect(),
    );
    println!(
        "webhook ingest: backlog {backlog} queued jobs, {total} requests x {ROUNDS} rounds, {concurrency} connections, body {} bytes",
        bodies[0].0.len()
    );
    let (mut bare, mut hook) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let url = format!("{base}/health");
        let r = load(
            &client,
            total,
            concurrency,
            Arc::new(move |c, _| c.get(&url)),
        )
        .await;
        println!(
            "  round {round} bare GET /health : {:>8.0} req/s  p50 {:>7.2?}  p99 {:>7.2?}",
            r.per_sec, r.p50, r.p99
        );
        bare.push(r);
        let (url, bodies) = (format!("{base}/webhook"), bodies.clone());
        let offset = round * total;
        let r = load(
            &client,
            total,
            concurrency,
            Arc::new(move |c, i| {
                let (body, sig) = &bodies[offset + i];
                c.post(&url)
                    .header("X-GitHub-Event", "workflow_job")
                    .header("X-GitHub-Delivery", format!("bench-{}", offset + i))
                    .header("X-Hub-Signature-256", sig)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
            }),
        )
        .await;
        println!(
            "  round {round} POST /webhook     : {:>8.0} req/s  p50 {:>7.2?}  p99 {:>7.2?}",
            r.per_sec, r.p50, r.p99
        );
        hook.push(r);
    }
    let med = |rs: &[Round], f: fn(&Round) -> f64| median(rs.iter().map(f).collect());
    let (b, h) = (med(&bare, |r| r.per_sec), med(&hook, |r| r.per_sec));
    let (bp50, hp50) = (
        med(&bare, |r| r.p50.as_secs_f64() * 1e3),
        med(&hook, |r| r.p50.as_secs_f64() * 1e3),
    );
    let (bp99, hp99) = (
        med(&bare, |r| r.p99.as_secs_f64() * 1e3),
        med(&hook, |r| r.p99.as_secs_f64() * 1e3),
    );
    println!("median bare   : {b:.0} req/s, p50 {bp50:.2} ms, p99 {bp99:.2} ms");
    println!("median webhook: {h:.0} req/s, p50 {hp50:.2} ms, p99 {hp99:.2} ms");
    println!("webhook/bare throughput ratio: {:.2}", h / b);
    let stored = controller::store::SqliteStore::open(&controller.config.state_dir).expect("store");
    let queued = controller::store::StateStore::queued_jobs(&stored)
        .await
        .expect("queued")
        .len();
    println!(
        "jobs persisted: {queued} (expected {} = backlog + deliveries)",
        backlog + total * ROUNDS
    );
}

fn planner_input(
    jobs: usize,
    agent_count: usize,
) -> (
    Vec<OwnerLimits>,
    Vec<AgentSupply>,
    Vec<PendingJob>,
    Vec<ActiveRunner>,
) {
    let owners: Vec<OwnerLimits> = (0..20u32)
        .map(|i| OwnerLimits {
            name: format!("owner-{i}"),
            max_runners: 400,
            labels: vec![format!("team-{}", i % 4)],
            repo_level: i.is_multiple_of(2),
        })
        .collect();
    let agents: Vec<AgentSupply> = (0..agent_count)
        .map(|i| AgentSupply {
            name: AgentName::parse(&format!("agent-{i:04}")).expect("name"),
            runtime: RuntimeKind::Docker,
            capacity: BTreeMap::from([(
                if i.is_multiple_of(3) {
                    Arch::Arm64
                } else {
                    Arch::Amd64
                },
                8,
            )]),
            max_runners: 8,
            // No agent has the image: the plans (and BENCHMARKS.md's numbers) stay those of
            // the workload as it was measured before the image preference existed.
            has_image: false,
            labels: if i.is_multiple_of(10) {
                vec!["gpu".into()]
            } else {
                vec![]
            },
            available: !i.is_multiple_of(50),
            owners: None,
        })
        .collect();
    let pending: Vec<PendingJob> = (0..jobs)
        .map(|i| {
            let mut labels = vec!["self-hosted".to_owned(), "linux".to_owned()];
            match i % 4 {
                0 => labels.push("arm64".into()),
                1 => labels.push("x64".into()),
                2 => labels.push("gpu".into()),
                _ => {}
            }
            PendingJob {
                id: i as u64,
                owner: format!("owner-{}", i % 20),
                repo: format!("repo-{}", i % 37),
                labels,
                queued_ms: i as i64,
            }
        })
        .collect();
    let runners: Vec<ActiveRunner> = (0..2_000)
        .map(|i| ActiveRunner {
            id: format!("r-{i}"),
            owner: format!("owner-{}", i % 20),
            repo: None,
            agent: format!("agent-{:04}", i % agent_count),
            arch: if (i % agent_count).is_multiple_of(3) {
                Arch::Arm64
            } else {
                Arch::Amd64
            },
            labels: vec!["self-hosted".into(), "linux".into()],
            busy: i.is_multiple_of(2),
            running: true,
            created_ms: 0,
            settling: false,
        })
        .collect();
    (owners, agents, pending, runners)
}

fn bench_planner() {
    let (owners, agents, jobs, runners) = planner_input(10_000, 1_000);
    let input = PlanInput {
        owners: &owners,
        agents: &agents,
        jobs: &jobs,
        runners: &runners,
        global_labels: &[],
        now_ms: 1_000,
        idle_grace_ms: 300_000,
        runner_timeout_ms: 3_600_000,
    };
    let baseline = {
        // Baseline in the same run: sorting the same jobs, the least any planner must do.
        let t = Instant::now();
        let mut ids: Vec<(i64, u64)> = jobs.iter().map(|j| (j.queued_ms, j.id)).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        std::hint::black_box(&ids);
        t.elapsed()
    };
    let mut times = Vec::new();
    let mut starts = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let plan = planner::plan(&input);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        starts = plan.starts.len();
    }
    println!(
        "planner: 10000 queued jobs, 1000 agents, 2000 runners -> {starts} starts; median {:.1} ms over 7 passes (sort-only baseline {:.2} ms)",
        median(times),
        baseline.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if what == "planner" || what == "all" {
        bench_planner();
    }
    if what == "webhook" || what == "all" {
        // `webhook 0,40000,100000`: one run per backlog of queued jobs already in the store.
        let backlogs = std::env::args().nth(2).unwrap_or_else(|| "0".into());
        for backlog in backlogs
            .split(',')
            .filter_map(|s| s.trim().parse::<usize>().ok())
        {
            bench_webhook(backlog).await;
        }
    }
    // Needs the Docker engine: only when asked for.
    if what == "latency" {
        let jobs = std::env::args()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        if let Err(e) = bench_latency(jobs).await {
            eprintln!("bench latency: {e:#}");
            std::process::exit(1);
        }
    }
    if what == "fleet"
        && let Err(e) = bench_fleet().await
    {
        eprintln!("bench fleet: {e:#}");
        std::process::exit(1);
    }
    if what == "quota" || what == "all" {
        let scales = std::env::args()
            .nth(2)
            .unwrap_or_else(|| "10,200,1000".into());
        bench_quota(&scales).await;
    }
}

async fn bench_quota(scales: &str) {
    use tests::quota_bench::{COMPRESSION, DEFAULT_RECONCILE_S, Scale, run};
    let measure = Duration::from_secs(
        std::env::var("QUOTA_MEASURE_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48),
    );
    println!(
        "quota: RECONCILE_INTERVAL {DEFAULT_RECONCILE_S}s compressed {COMPRESSION}x, {} s measured per run \
         (= {:.1} real hours), 120 jobs/h, 5 % of jobs lose every queued webhook",
        measure.as_secs(),
        measure.as_secs_f64() * COMPRESSION as f64 / 3600.0
    );
    println!(
        "| repos | ETags | background sent/h | background 304/h | background deferred/h | job-serving sent/h | registration sent/h | served | job-serving calls/job | registrations/job | lost jobs served | worst lost (x interval) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for repos in scales
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        for etags in [true, false] {
            let r = run(&Scale {
                repos,
                jobs_per_hour: 120,
                measure,
                lost_pct: 5,
                etags,
            })
            .await;
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {}/{} | {:.2} |",
                r.repos,
                if r.etags { "on" } else { "off (baseline)" },
                r.rate("background", "sent"),
                r.rate("background", "not_modified"),
                r.rate("background", "deferred"),
                r.rate("job_serving", "sent"),
                r.rate("registration", "sent"),
                r.served,
                r.serving_per_job,
                r.registration_per_job,
                r.lost_served,
                r.lost,
                r.worst_lost_intervals,
            );
        }
    }
}

async fn bench_latency(jobs: usize) -> anyhow::Result<()> {
    use tests::latency_bench::{PATH, Stage, between, cold, raw, warm};
    // The controller's and the agent's stage marks, recorded in this process.
    tests::stages::install();
    let row = |name: &str, s: &Stage| {
        println!(
            "| {name} | {} | {:.1} ms | {:.1} ms |",
            s.samples.len(),
            s.percentile(50.0).as_secs_f64() * 1e3,
            s.percentile(95.0).as_secs_f64() * 1e3
        );
    };
    let baseline = raw(jobs).await?;
    let c = cold(jobs).await?;
    let pool2 = warm(2, 1, jobs).await?;
    let burst = warm(5, 20, 3).await?;
    println!("| from the job queued at the simulator to … | samples | p50 | p95 |");
    println!("|---|---|---|---|");
    row(
        "baseline: raw bollard create + start → start event",
        &baseline.event,
    );
    row(
        "cold: runner planned (controller's record: webhook in, planned)",
        &c.planned,
    );
    row("cold: runner container started", &c.started);
    row("cold: runner registered", &c.registered);
    row("cold: job taken", &c.taken);
    row("warm pool of 2, one job at a time: job taken", &pool2);
    row("burst of 20 with a pool of 5: job taken", &burst);
    println!();
    println!("| cold start, stage by stage | samples | p50 | p95 |");
    println!("|---|---|---|---|");
    for (i, (_, what)) in PATH.iter().enumerate() {
        let cumulative = Stage {
            samples: c.path.iter().filter_map(|p| p[i]).collect(),
        };
        row(&format!("queued → {what}"), &cumulative);
    }
    for (i, (_, what)) in PATH.iter().enumerate().skip(1) {
        row(&format!("stage: {what}"), &between(&c.path, i - 1, i));
    }
    let last = PATH.len() - 1;
    let sent = PATH
        .iter()
        .position(|(s, _)| *s == "start_sent")
        .unwrap_or(4);
    row(
        "**controller's share: webhook in → StartRunner sent**",
        &between(&c.path, 0, sent),
    );
    row(
        "agent: StartRunner received → start_container answered",
        &between(&c.path, sent + 1, last - 1),
    );
    row(
        "webhook in → engine `start` event",
        &between(&c.path, 0, last),
    );
    row("baseline: create_container answered", &baseline.created);
    row("baseline: start_container answered", &baseline.started);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!();
    println!(
        "our share of a cold start (container started, p50, minus raw create + start, p50): {:.1} ms",
        ms(c.started.percentile(50.0)) - ms(baseline.event.percentile(50.0))
    );
    println!(
        "our share from the webhook (webhook in → start event, p50, minus raw create + start, p50): {:.1} ms",
        ms(between(&c.path, 0, last).percentile(50.0)) - ms(baseline.event.percentile(50.0))
    );
    Ok(())
}

async fn bench_fleet() -> anyhow::Result<()> {
    use tests::fleet_bench::{JobKind, Params, run};
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let params = Params::from_env(&env)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("fleet: {params:?}");
    println!("load average before: {}", load.trim());
    let started = Instant::now();
    let r = run(&params, &|line| {
        println!("  [{:>6.1}s] {line}", started.elapsed().as_secs_f64())
    })
    .await?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let opt_ms = |s: Option<f64>| s.map_or("–".to_owned(), |s| format!("≤ {:.1} ms", s * 1e3));
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    let usage = |u: Option<tests::fleet_bench::Usage>| {
        u.map_or("–".to_owned(), |u| {
            format!(
                "RSS {:.0} MB (max {:.0}), CPU {:.0} % of a core",
                u.rss_mean_mb,
                u.rss_max_mb,
                u.cpu_cores * 100.0
            )
        })
    };
    println!();
    println!("| phase | measured |");
    println!("|---|---|");
    println!(
        "| enrollment | {} tokens minted in {:.1} s; {} joins ({} at once) in {:.1} s, one join p50 {:.0} ms, p99 {:.0} ms |",
        params.agents + usize::from(params.agent_process),
        r.mint.as_secs_f64(),
        params.agents + usize::from(params.agent_process),
        params.join_concurrency,
        r.enroll.as_secs_f64(),
        ms(r.enroll_p50),
        ms(r.enroll_p99)
    );
    println!(
        "| connect | {} of {} agents with a session {:.1} s after the first started |",
        r.agents_connected,
        params.agents,
        r.connect_all.as_secs_f64()
    );
    println!(
        "| idle, no runners | {}; {} passes, p50 {}, p99 {} |",
        usage(r.idle),
        r.idle_passes.count,
        opt_ms(r.idle_passes.p50_s),
        opt_ms(r.idle_passes.p99_s)
    );
    println!(
        "| fill | {} runners busy {:.1} s after {} queued deliveries began |",
        r.fill_busy,
        r.fill.as_secs_f64(),
        params.runners
    );
    println!(
        "| idle, {} runners tracked | {} |",
        r.fill_busy,
        usage(r.tracked_idle)
    );
    println!(
        "| load window | {:.1} s, {} deliveries ({:.0}/s), {} bursts of {}; {} |",
        r.window.as_secs_f64(),
        r.deliveries_in_window,
        r.deliveries_in_window as f64 / r.window.as_secs_f64().max(1e-3),
        params.bursts(),
        params.burst,
        usage(r.load)
    );
    println!(
        "| scheduling passes under load | {} passes, p50 {}, p99 {} |",
        r.load_passes.count,
        opt_ms(r.load_passes.p50_s),
        opt_ms(r.load_passes.p99_s)
    );
    for step in &r.load_steps {
        println!(
            "| pass step `{}` under load | mean {:.2} ms, p50 {}, p99 {} |",
            step.step,
            step.mean_s * 1000.0,
            opt_ms(step.passes.p50_s),
            opt_ms(step.passes.p99_s)
        );
    }
    for (kind, name) in [
        (JobKind::Fill, "fill (10 000 at once)"),
        (JobKind::Steady, "steady"),
        (JobKind::Burst, "bursts"),
    ] {
        if let Some(l) = r.latency.get(&kind) {
            println!(
                "| queued → StartRunner, {name} | {} jobs, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
                l.samples.len(),
                ms(l.p(50.0)),
                ms(l.p(99.0)),
                ms(l.p(100.0))
            );
        }
    }
    println!(
        "| reconnect storm | kill -9 → healthy {:.1} s; {} of {} agents with a new session {} |",
        r.restart_healthy.as_secs_f64(),
        r.reconnected,
        params.agents,
        r.reconnect_all
            .map_or("(not all within 300 s)".to_owned(), |d| format!(
                "{:.1} s after the kill",
                d.as_secs_f64()
            ))
    );
    println!("| after the restart | {} |", usage(r.after_restart));
    println!(
        "| bench process (agents, deliveries, simulator) | RSS {:.0} MB ({:.2} MB per in-process agent, upper bound) |",
        r.bench_rss_mb,
        r.bench_rss_mb / params.agents as f64
    );
    println!(
        "| one gha-agent process, idle | {} ({}) |",
        r.agent_process_rss_mb
            .map_or("–".to_owned(), |m| format!("RSS {m:.1} MB")),
        r.agent_process_note
    );
    println!(
        "| checks | failed deliveries {} (and {} while the controller was killed and restarting), starts not recorded {}, starts with no queued job {} (jobs given to them {}), busy after window {}, still queued {} |",
        r.failed_deliveries,
        r.failed_during_restart,
        r.lost_starts,
        r.unassigned_starts,
        r.jobs_to_idle_runners,
        r.busy_after_window,
        r.queued_after_window
    );
    println!();
    let rss_max = [r.idle, r.tracked_idle, r.load, r.after_restart]
        .iter()
        .flatten()
        .map(|u| u.rss_max_mb)
        .fold(0.0, f64::max);
    println!("| target | measured | |");
    println!("|---|---|---|");
    println!(
        "| controller RSS < 300 MB | max {rss_max:.0} MB | {} |",
        met(rss_max < 300.0)
    );
    let p99 = r.load_passes.p99_s.unwrap_or(f64::INFINITY);
    println!(
        "| scheduling pass p99 < 50 ms | {} | {} |",
        opt_ms(r.load_passes.p99_s),
        met(p99 < 0.050)
    );
    let steady = r
        .latency
        .get(&JobKind::Steady)
        .map_or(Duration::MAX, |l| l.p(99.0));
    println!(
        "| queued → StartRunner p99 < 100 ms at 100 deliveries/s | steady p99 {:.1} ms | {} |",
        ms(steady),
        met(steady < Duration::from_millis(100))
    );
    let back = r.reconnect_all.unwrap_or(Duration::MAX);
    println!(
        "| all agents back within 60 s | {} | {} |",
        r.reconnect_all
            .map_or("no".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        met(back < Duration::from_secs(60))
    );
    let agent_rss = r.agent_process_rss_mb.unwrap_or(f64::INFINITY);
    println!(
        "| agent idle RSS < 15 MB | {} | {} |",
        r.agent_process_rss_mb
            .map_or("–".to_owned(), |m| format!("{m:.1} MB")),
        met(agent_rss < 15.0)
    );
    Ok(())
}
