//! `bench fleet` (issue 15 §4): one controller process, a thousand agents, ten thousand runners.
//!
//! - The controller is the real `gha-controller` binary of the same build, on a fresh
//!   `STATE_DIR` with its built-in PKI, serving [`Params::owners`] organizations of the GitHub
//!   simulator (in this process), which answers its REST calls (JIT configs, runner lists).
//! - Every agent is enrolled as an operator would: a join token minted through the controller's
//!   own code on its `STATE_DIR` ([`controller::join_tokens::mint`], what `gha-controller agents
//!   join-token` runs), then [`agent::join::join`] trades it for a certificate over TLS pinned to
//!   the token's CA fingerprint. The agents then run as tasks of this process, each the agent
//!   library's real connection code ([`agent::Agent`]) over mutual TLS with its own identity and
//!   the in-memory runtime, wrapped so that a `StartRunner`'s arrival is timed ([`FleetRuntime`]).
//! - This process plays GitHub's part in the job's life: it sends the signed `workflow_job`
//!   deliveries itself (`queued`, then `in_progress` naming the runner, then `completed`), over up
//!   to [`DELIVERY_CONNECTIONS`] connections as GitHub delivers in parallel. When a runner
//!   starts, the oldest queued job of its owner goes to it (GitHub gives an organization runner
//!   any matching job; the planner serves the oldest first), so runners stay busy, and tracked,
//!   until the bench completes their job.
//! - queued → `StartRunner`: from the moment the job's `queued` delivery is sent to the moment
//!   the agent's runtime is asked to start the runner that the job went to. Scheduling pass:
//!   the controller's own `gha_scaler_scheduler_activation_seconds` histogram (read as bucket
//!   upper bounds). RSS and CPU: `/proc/<pid>` of the controller.
//!
//! The controller shares the machine's cores with this process (the agents, the deliveries,
//! the simulator), as a real controller would not: its CPU is its own, its latencies are not.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::AgentStatus;
use agent::config::AgentConfig;
use agent::runtime::memory::MemoryRuntime;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::github_sim::GithubSim;
use crate::harness::{AgentTls, TEST_API_TOKEN, TEST_WEBHOOK_SECRET, agent_env, vars};
use crate::process::ControllerProcess;

/// Parallel webhook deliveries (GitHub delivers many at once).
pub const DELIVERY_CONNECTIONS: usize = 32;
/// How long any wait of the bench may take before it gives up.
const WAIT: Duration = Duration::from_secs(600);
/// The bench's load ticks.
const TICK: Duration = Duration::from_millis(100);
/// `workflow_job` deliveries in one job's life: queued, in_progress, completed.
const DELIVERIES_PER_JOB: f64 = 3.0;

mod hub;
mod measure;

pub use hub::FleetRuntime;
use hub::{Deliveries, Hub, HubState, owner_login};
pub use measure::*;

/// What to run; every field has the issue's default and a `FLEET_*` variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `FLEET_AGENTS` (1 000).
    pub agents: usize,
    /// `FLEET_RUNNERS` (10 000): runners busy, and tracked, before the measured window.
    pub runners: usize,
    /// `FLEET_OWNERS` (20) organizations.
    pub owners: usize,
    /// `FLEET_RATE` (100) `workflow_job` deliveries per second in the steady load.
    pub rate: f64,
    /// `FLEET_BURST` (2 000) jobs queued at once.
    pub burst: usize,
    /// `FLEET_BURST_EVERY` (30 s): a burst at the middle of every such period of the window.
    pub burst_every: Duration,
    /// `FLEET_WINDOW` (60 s) measured under load.
    pub window: Duration,
    /// `FLEET_IDLE` (10 s) measured at idle (all agents connected, before any job).
    pub idle: Duration,
    /// `FLEET_RUNNER_BOOT` (30 s): from a runner's start to GitHub's `in_progress` for the job it
    /// took (a runner boots, registers and claims first). Much shorter races the controller's
    /// own record of the runner running, which then forgets the job (see BENCHMARKS.md).
    pub boot: Duration,
    /// `FLEET_JOIN_CONCURRENCY` (8) enrollments at once (each token's policy allows the
    /// agent's slots, [`Params::max_runners_per_agent`]).
    pub join_concurrency: usize,
    /// `FLEET_AGENT_RSS` (true): also start one `gha-agent` process (Docker runtime) and read
    /// its idle RSS.
    pub agent_process: bool,
    /// `FLEET_AGENT_BINARY`: the `gha-agent` to measure (default: the one next to this bench;
    /// the images ship the static build of `scripts/test.sh`, `target/static/<host>/release`).
    pub agent_binary: Option<PathBuf>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            agents: 1_000,
            runners: 10_000,
            owners: 20,
            rate: 100.0,
            burst: 2_000,
            burst_every: Duration::from_secs(30),
            window: Duration::from_secs(60),
            idle: Duration::from_secs(10),
            boot: Duration::from_secs(30),
            join_concurrency: 8,
            agent_process: true,
            agent_binary: None,
        }
    }
}

/// A `FLEET_*` variable with a value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {expected}")]
pub struct BadParam {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Params {
    /// The defaults, overridden by the `FLEET_*` variables in `env`.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, BadParam> {
        let mut p = Self::default();
        let get = |var: &'static str| env.get(var).map(|v| v.trim().to_owned());
        let count = |var: &'static str, min: usize| -> Result<Option<usize>, BadParam> {
            get(var)
                .map(|v| match v.replace('_', "").parse::<usize>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(BadParam {
                        var,
                        value: v,
                        expected: if min > 0 {
                            "a whole number, at least 1"
                        } else {
                            "a whole number"
                        },
                    }),
                })
                .transpose()
        };
        let duration = |var: &'static str| -> Result<Option<Duration>, BadParam> {
            get(var)
                .map(|v| {
                    humantime::parse_duration(&v).map_err(|_| BadParam {
                        var,
                        value: v,
                        expected: "a duration such as 60s",
                    })
                })
                .transpose()
        };
        if let Some(n) = count("FLEET_AGENTS", 1)? {
            p.agents = n;
        }
        if let Some(n) = count("FLEET_RUNNERS", 0)? {
            p.runners = n;
        }
        if let Some(n) = count("FLEET_OWNERS", 1)? {
            p.owners = n;
        }
        if let Some(v) = get("FLEET_RATE") {
            p.rate = match v.parse::<f64>() {
                Ok(r) if r.is_finite() && r >= 0.0 => r,
                _ => {
                    return Err(BadParam {
                        var: "FLEET_RATE",
                        value: v,
                        expected: "deliveries per second, 0 or more",
                    });
                }
            };
        }
        if let Some(n) = count("FLEET_BURST", 0)? {
            p.burst = n;
        }
        if let Some(d) = duration("FLEET_BURST_EVERY")? {
            p.burst_every = d;
        }
        if let Some(d) = duration("FLEET_WINDOW")? {
            p.window = d;
        }
        if let Some(d) = duration("FLEET_IDLE")? {
            p.idle = d;
        }
        if let Some(d) = duration("FLEET_RUNNER_BOOT")? {
            p.boot = d;
        }
        if let Some(n) = count("FLEET_JOIN_CONCURRENCY", 1)? {
            p.join_concurrency = n;
        }
        if let Some(v) = get("FLEET_AGENT_RSS") {
            p.agent_process = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(BadParam {
                        var: "FLEET_AGENT_RSS",
                        value: v,
                        expected: "true or false",
                    });
                }
            };
        }
        if let Some(v) = get("FLEET_AGENT_BINARY") {
            p.agent_binary = Some(PathBuf::from(v));
        }
        Ok(p)
    }

    /// Bursts in the window: one in the middle of every full `burst_every`.
    pub fn bursts(&self) -> usize {
        if self.burst == 0 || self.burst_every.is_zero() {
            return 0;
        }
        (self.window.as_secs_f64() / self.burst_every.as_secs_f64()).floor() as usize
    }

    /// Room for the tracked runners plus every burst (each agent, each owner), with a margin.
    pub fn capacity(&self) -> usize {
        (self.runners + self.burst * self.bursts().max(1)) * 6 / 5 + 10
    }

    /// Runner slots of each agent.
    pub fn max_runners_per_agent(&self) -> usize {
        self.capacity().div_ceil(self.agents).max(1)
    }

    /// `MAX_RUNNERS` of each owner.
    pub fn max_runners_per_owner(&self) -> usize {
        self.capacity().div_ceil(self.owners).max(1)
    }
}

/// Why a job was queued: its latency is reported per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobKind {
    /// Filling the fleet up to [`Params::runners`].
    Fill,
    /// The steady load of the window.
    Steady,
    /// A burst of the window.
    Burst,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub params: Option<Params>,
    pub mint: Duration,
    pub enroll: Duration,
    pub enroll_p50: Duration,
    pub enroll_p99: Duration,
    pub connect_all: Duration,
    pub agents_connected: usize,
    pub idle: Option<Usage>,
    pub idle_passes: Passes,
    pub fill: Duration,
    pub fill_busy: usize,
    pub tracked_idle: Option<Usage>,
    pub load: Option<Usage>,
    pub load_passes: Passes,
    /// Each step of the passes under load.
    pub load_steps: Vec<StepTimes>,
    pub deliveries_in_window: u64,
    pub window: Duration,
    pub latency: BTreeMap<JobKind, Latency>,
    pub unassigned_starts: u64,
    pub jobs_to_idle_runners: u64,
    pub lost_starts: u64,
    /// Deliveries not answered 2xx before the kill (under load), and while the controller was
    /// down and starting again (GitHub's fail too; they are not the controller's refusals).
    pub failed_deliveries: u64,
    pub failed_during_restart: u64,
    pub busy_after_window: usize,
    pub queued_after_window: usize,
    /// kill -9 → the new process answers `/health`.
    pub restart_healthy: Duration,
    /// kill -9 → every agent has a new session.
    pub reconnect_all: Option<Duration>,
    pub reconnected: usize,
    pub after_restart: Option<Usage>,
    pub bench_rss_mb: f64,
    pub agent_process_rss_mb: Option<f64>,
    pub agent_process_note: String,
}

fn state_sessions(statuses: &[watch::Receiver<AgentStatus>]) -> Vec<u64> {
    statuses.iter().map(|s| s.borrow().sessions).collect()
}

fn connected(statuses: &[watch::Receiver<AgentStatus>]) -> usize {
    statuses.iter().filter(|s| s.borrow().connected).count()
}

async fn poll_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            tracing::warn!("bench fleet: gave up waiting for {what} after {timeout:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn metrics_text(http: std::net::SocketAddr) -> String {
    match reqwest::get(format!("http://{http}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

const PASS_HISTOGRAM: &str = "gha_scaler_scheduler_activation_seconds";
const STEP_HISTOGRAM: &str = "gha_scaler_scheduler_step_seconds";

/// The path of `gha-controller` / `gha-agent` of the build this executable belongs to.
pub fn sibling_binary(name: &str) -> PathBuf {
    crate::process::workspace_binary(name)
}

fn self_rss_mb() -> f64 {
    proc_sample(std::process::id()).map_or(0.0, |s| s.rss_mb)
}

/// Runs the whole bench; `log` is a progress line printer.
pub async fn run(params: &Params, log: &(dyn Fn(String) + Sync)) -> anyhow::Result<Report> {
    shared::tls::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    if std::env::var_os("FLEET_KEEP").is_some() {
        // `FLEET_KEEP`: the controller's log and state stay for a look afterwards.
        let kept = dir.keep();
        log(format!("keeping {}", kept.display()));
        return Box::pin(run_in(params, log, &kept)).await;
    }
    run_in(params, log, dir.path()).await
}

async fn run_in(
    params: &Params,
    log: &(dyn Fn(String) + Sync),
    dir: &Path,
) -> anyhow::Result<Report> {
    let mut report = Report {
        params: Some(params.clone()),
        ..Default::default()
    };
    let sim = Arc::new(GithubSim::start().await?);
    sim.add_user("alice");
    for i in 0..params.owners {
        let org = owner_login(i);
        sim.add_org(&org, &["alice"], &[]);
        sim.add_repo(&org, "app", true);
    }
    sim.set_rate_limit(100_000_000);
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    let owners: Vec<String> = (0..params.owners).map(owner_login).collect();
    let state_dir = dir.join("state");
    let mut env = vars(&[
        ("STATE_DIR", state_dir.display().to_string()),
        ("GITHUB_API_URL", sim.api_url().to_owned()),
        ("OWNERS", owners.join(",")),
        ("GITHUB_TOKEN", token),
        ("ALL_REPOS", "true".into()),
        ("WEBHOOK_SECRET", TEST_WEBHOOK_SECRET.into()),
        ("API_TOKEN", TEST_API_TOKEN.into()),
        ("MAX_RUNNERS", params.max_runners_per_owner().to_string()),
        // The REST paths are not what this bench measures (`bench quota` is): the jobs exist
        // only in deliveries, so the reconciler, stale checks, the sweep of offline
        // registrations and the online check are kept out of the window.
        ("RECONCILE_INTERVAL", "0".into()),
        ("REDELIVERY_INTERVAL", "0".into()),
        ("STALE_JOB_AGE", "24h".into()),
        ("OFFLINE_RUNNER_GRACE", "24h".into()),
        ("RUNNER_REGISTER_TIMEOUT", "24h".into()),
        ("RUNNER_IDLE_GRACE", "24h".into()),
        ("LOG_FORMAT", "json".into()),
        (
            "RUST_LOG",
            std::env::var("FLEET_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]);
    let http_port = crate::process::free_port();
    let grpc_port = crate::process::free_port();
    env.insert("PORT".into(), http_port.to_string());
    env.insert("GRPC_PORT".into(), grpc_port.to_string());
    let log_file = dir.join("controller.log");
    let mut controller =
        ControllerProcess::start_on(env.clone(), log_file.clone(), http_port, grpc_port).await;
    let pid = controller
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no controller pid"))?;
    log(format!(
        "controller pid {pid} (http {}, grpc {}), {} owners with MAX_RUNNERS {}, agents with MAX_RUNNERS {}",
        controller.http_addr,
        controller.grpc_addr,
        params.owners,
        params.max_runners_per_owner(),
        params.max_runners_per_agent()
    ));

    // Enrollment: mint through the controller's code on its state, then join over TLS.
    let config = controller::config::Config::from_env(&env)
        .map_err(|e| anyhow::anyhow!("controller config: {e}"))?;
    let total = params.agents + usize::from(params.agent_process);
    let t = Instant::now();
    let mut tokens = Vec::with_capacity(total);
    for i in 0..total {
        let name = shared::ids::AgentName::parse(&format!("fleet-{i:04}"))?;
        // Every agent may serve every owner (`--all-owners`).
        let mut options =
            controller::join_tokens::MintOptions::new(Duration::from_secs(3600), Some(name));
        options.policy.all_owners = true;
        options.policy.max_runners = Some(params.max_runners_per_agent() as u32);
        let minted = controller::join_tokens::mint(&config, options)
            .await
            .map_err(|e| anyhow::anyhow!("mint: {e}"))?;
        tokens.push(minted.token);
    }
    report.mint = t.elapsed();
    log(format!("minted {total} join tokens in {:?}", report.mint));
    let agent_dirs: Vec<PathBuf> = (0..total)
        .map(|i| dir.join(format!("agents/{i:04}")))
        .collect();
    let t = Instant::now();
    let joins = Arc::new(Semaphore::new(params.join_concurrency));
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let permit = joins.clone().acquire_owned().await?;
        let options = agent::join::JoinOptions {
            controller_url: controller.grpc_url(),
            token,
            dir: agent_dirs[i].clone(),
            ca_fingerprint: None,
            ca_file: None,
            name: format!("fleet-{i:04}"),
            force: false,
        };
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let out = agent::join::join(&options).await;
            drop(permit);
            out.map(|_| t.elapsed())
        }));
    }
    let mut join_times = Vec::new();
    for task in tasks {
        join_times.push(task.await?.map_err(|e| anyhow::anyhow!("join: {e}"))?);
    }
    report.enroll = t.elapsed();
    report.enroll_p50 = percentile(&join_times, 50.0);
    report.enroll_p99 = percentile(&join_times, 99.0);
    log(format!(
        "enrolled {total} agents in {:?} ({} at once; one join p50 {:?}, p99 {:?})",
        report.enroll, params.join_concurrency, report.enroll_p50, report.enroll_p99
    ));

    // The agents, as tasks of this process.
    let (started_tx, started_rx) = mpsc::channel(1 << 16);
    let lost = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let mut statuses = Vec::with_capacity(params.agents);
    let mut runtimes = Vec::with_capacity(params.agents);
    let per_agent = params.max_runners_per_agent().to_string();
    let t = Instant::now();
    for (i, agent_dir) in agent_dirs.iter().take(params.agents).enumerate() {
        let mut aenv = agent_env(&controller.grpc_url(), &AgentTls::in_dir(agent_dir));
        aenv.insert("MAX_RUNNERS".into(), per_agent.clone());
        // The agent's own reconnect back-off, not the test harness's fast one.
        aenv.remove("RECONNECT_MIN_BACKOFF");
        aenv.remove("RECONNECT_MAX_BACKOFF");
        let config = AgentConfig::from_env(&aenv).map_err(|e| anyhow::anyhow!("agent: {e}"))?;
        let mut memory = None;
        let agent = agent::Agent::new(config, |sink| {
            let m = MemoryRuntime::new(sink);
            memory = Some(m.clone());
            FleetRuntime {
                memory: m,
                agent: i,
                started: started_tx.clone(),
                lost: lost.clone(),
            }
        });
        runtimes.push(memory.ok_or_else(|| anyhow::anyhow!("runtime not built"))?);
        statuses.push(agent.status());
        tokio::spawn(agent.run(shutdown.clone()));
    }
    drop(started_tx);
    let connect_budget = Duration::from_secs(60 + params.agents as u64 / 10);
    poll_until("every agent connected", connect_budget, || {
        connected(&statuses) == params.agents
    })
    .await;
    report.connect_all = t.elapsed();
    report.agents_connected = connected(&statuses);
    log(format!(
        "{} of {} agents connected {:?} after the first started",
        report.agents_connected, params.agents, report.connect_all
    ));

    let deliveries = Deliveries::new(format!("http://{}/webhook", controller.http_addr));
    let hub = Hub {
        state: Arc::new(Mutex::new(HubState {
            queued: (0..params.owners).map(|_| VecDeque::new()).collect(),
            idle: (0..params.owners).map(|_| VecDeque::new()).collect(),
            ..Default::default()
        })),
        deliveries: deliveries.clone(),
        runtimes: Arc::new(runtimes),
        owners: params.owners,
        boot: params.boot,
    };
    tokio::spawn(hub.clone().serve(started_rx));

    // Idle: every agent connected, nothing to do.
    let before = histogram(&metrics_text(controller.http_addr).await, PASS_HISTOGRAM);
    let ((), idle) = sampled(pid, tokio::time::sleep(params.idle)).await;
    let after = histogram(&metrics_text(controller.http_addr).await, PASS_HISTOGRAM);
    report.idle = idle;
    report.idle_passes = Passes::of(&bucket_delta(&before, &after));
    log(format!("idle: {idle:?}, passes {:?}", report.idle_passes));

    // Fill: `runners` jobs, each taken by the runner started for it and kept busy.
    let t = Instant::now();
    hub.queue(params.runners, JobKind::Fill).await;
    let fill_budget = Duration::from_secs(60 + params.runners as u64 / 50);
    poll_until("the fleet filled", fill_budget, || {
        hub.busy() >= params.runners
    })
    .await;
    deliveries.settled().await;
    report.fill = t.elapsed();
    report.fill_busy = hub.busy();
    log(format!(
        "filled: {} runners busy after {:?}",
        report.fill_busy, report.fill
    ));
    let ((), tracked_idle) = sampled(pid, tokio::time::sleep(params.idle)).await;
    report.tracked_idle = tracked_idle;
    log(format!("idle with the runners tracked: {tracked_idle:?}"));

    // The window: a steady churn of `rate` deliveries per second, bursts in the middle of every
    // `burst_every`; completions bring the busy count back to `runners` after a burst.
    let before_text = metrics_text(controller.http_addr).await;
    let before = histogram(&before_text, PASS_HISTOGRAM);
    let sent_before = deliveries.sent.load(Ordering::Relaxed);
    let jobs_per_tick = params.rate / DELIVERIES_PER_JOB * TICK.as_secs_f64();
    let window = params.window;
    let bursts = params.bursts();
    let (burst, burst_every, target) = (params.burst, params.burst_every, params.runners);
    let load_hub = hub.clone();
    let load = async move {
        let start = Instant::now();
        let mut owed = 0.0;
        let mut next_burst = 0;
        let mut burst_tasks = Vec::new();
        while start.elapsed() < window {
            let tick = Instant::now();
            if next_burst < bursts
                && start.elapsed() >= burst_every.mul_f64(next_burst as f64 + 0.5)
            {
                let h = load_hub.clone();
                burst_tasks.push(tokio::spawn(
                    async move { h.queue(burst, JobKind::Burst).await },
                ));
                next_burst += 1;
            }
            owed += jobs_per_tick;
            let n = owed.floor() as usize;
            owed -= n as f64;
            let excess = load_hub.busy().saturating_sub(target).min(n);
            load_hub.complete(n + excess).await;
            load_hub.queue(n, JobKind::Steady).await;
            tokio::time::sleep(TICK.saturating_sub(tick.elapsed())).await;
        }
        for t in burst_tasks {
            let _ = t.await;
        }
        start.elapsed()
    };
    let (measured, usage) = sampled(pid, load).await;
    let after_text = metrics_text(controller.http_addr).await;
    let after = histogram(&after_text, PASS_HISTOGRAM);
    report.load_steps = step_times(&before_text, &after_text, STEP_HISTOGRAM);
    report.window = measured;
    report.load = usage;
    report.load_passes = Passes::of(&bucket_delta(&before, &after));
    report.deliveries_in_window = deliveries.sent.load(Ordering::Relaxed) - sent_before;
    // The window's last jobs get their runners.
    poll_until("the window's jobs served", Duration::from_secs(60), || {
        hub.queued() == 0
    })
    .await;
    deliveries.settled().await;
    {
        let st = hub.lock();
        for (kind, samples) in &st.latency {
            report.latency.insert(
                *kind,
                Latency {
                    samples: samples.clone(),
                },
            );
        }
        report.unassigned_starts = st.unassigned;
        report.jobs_to_idle_runners = st.to_idle;
    }
    report.busy_after_window = hub.busy();
    report.queued_after_window = hub.queued();
    log(format!(
        "window: {:?}, {} deliveries, controller {usage:?}, passes {:?}",
        measured, report.deliveries_in_window, report.load_passes
    ));

    // The reconnect storm: kill -9, start again on the same state and ports.
    let sessions = state_sessions(&statuses);
    report.failed_deliveries = deliveries.failed.load(Ordering::Relaxed);
    let t = Instant::now();
    controller.restart().await;
    report.restart_healthy = t.elapsed();
    let new_pid = controller.pid().unwrap_or(pid);
    let back = |statuses: &[watch::Receiver<AgentStatus>]| {
        statuses
            .iter()
            .zip(&sessions)
            .filter(|(s, before)| {
                let s = s.borrow();
                s.connected && s.sessions > **before
            })
            .count()
    };
    let (all_back, after_restart) = sampled(
        new_pid,
        poll_until("every agent back", Duration::from_secs(300), || {
            back(&statuses) == params.agents
        }),
    )
    .await;
    report.reconnected = back(&statuses);
    report.reconnect_all = all_back.then(|| t.elapsed());
    report.after_restart = after_restart;
    log(format!(
        "restart: healthy after {:?}, {} of {} agents back after {:?}",
        report.restart_healthy,
        report.reconnected,
        params.agents,
        t.elapsed()
    ));
    report.bench_rss_mb = self_rss_mb();
    report.lost_starts = lost.load(Ordering::Relaxed);
    report.failed_during_restart =
        deliveries.failed.load(Ordering::Relaxed) - report.failed_deliveries;

    if params.agent_process {
        let dir = &agent_dirs[params.agents];
        let binary = params
            .agent_binary
            .clone()
            .unwrap_or_else(|| sibling_binary("gha-agent"));
        match agent_process_rss(
            &binary,
            &controller.grpc_url(),
            dir,
            &dir.with_extension("log"),
        )
        .await
        {
            Ok((rss, note)) => {
                report.agent_process_rss_mb = Some(rss);
                report.agent_process_note = note;
            }
            Err(e) => report.agent_process_note = format!("not measured: {e:#}"),
        }
        log(format!(
            "gha-agent process: {:?} MB ({})",
            report.agent_process_rss_mb, report.agent_process_note
        ));
    }
    shutdown.cancel();
    drop(controller);
    Ok(report)
}

/// Starts one `gha-agent` process with its enrolled identity in `dir` and the Docker runtime,
/// waits until it has been idle and connected for 10 s, and reads its RSS.
async fn agent_process_rss(
    binary: &Path,
    grpc_url: &str,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<(f64, String)> {
    let out = std::fs::File::create(log)?;
    let tls = AgentTls::in_dir(dir);
    let mut child = std::process::Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(agent_env(grpc_url, &tls))
        .env("RUNTIME", "docker")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let pid = child.id();
    let result = async {
        tokio::time::sleep(Duration::from_secs(12)).await;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "gha-agent exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let s = proc_sample(pid).ok_or_else(|| anyhow::anyhow!("no /proc/{pid}"))?;
        // What the RSS is made of: the program's own pages (file) or its heap and stacks (anon).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |v| v / 1024.0)
        };
        Ok((
            s.rss_mb,
            format!(
                "{}, RUNTIME=docker, 12 s after start, no runners; anon {:.1} MB, file {:.1} MB, threads {}",
                binary.display(),
                kb("RssAnon:"),
                kb("RssFile:"),
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .unwrap_or("?")
                    .trim()
            ),
        ))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_default_to_the_issue_and_read_their_variables() {
        let p = Params::from_env(&HashMap::new()).unwrap();
        assert_eq!(p, Params::default());
        assert_eq!(
            (p.agents, p.runners, p.owners, p.burst),
            (1_000, 10_000, 20, 2_000)
        );
        assert_eq!(p.bursts(), 2);
        // 10 000 tracked plus two bursts of 2 000, with a fifth more: 16 810 slots.
        assert!(p.max_runners_per_agent() * p.agents >= 14_000);
        assert!(p.max_runners_per_owner() * p.owners >= 14_000);
        let env = vars(&[
            ("FLEET_AGENTS", "100".into()),
            ("FLEET_RUNNERS", "1_000".into()),
            ("FLEET_WINDOW", "20s".into()),
            ("FLEET_RATE", "50".into()),
        ]);
        let p = Params::from_env(&env).unwrap();
        assert_eq!((p.agents, p.runners, p.rate), (100, 1_000, 50.0));
        assert_eq!(p.window, Duration::from_secs(20));
        let err = Params::from_env(&vars(&[("FLEET_AGENTS", "0".into())])).unwrap_err();
        assert_eq!(err.var, "FLEET_AGENTS");
        let err = Params::from_env(&vars(&[("FLEET_WINDOW", "soon".into())])).unwrap_err();
        assert!(err.to_string().contains("FLEET_WINDOW=\"soon\""), "{err}");
    }

    #[test]
    fn histogram_quantiles_are_bucket_upper_bounds() {
        let text = "# TYPE x histogram\n\
            gha_scaler_x_bucket{le=\"0.001\"} 10\n\
            gha_scaler_x_bucket{le=\"0.01\"} 98\n\
            gha_scaler_x_bucket{le=\"0.1\"} 100\n\
            gha_scaler_x_bucket{le=\"+Inf\"} 100\n";
        let b = histogram(text, "gha_scaler_x");
        assert_eq!(b.len(), 4);
        assert_eq!(bucket_quantile(&b, 0.5), Some(0.01));
        assert_eq!(bucket_quantile(&b, 0.99), Some(0.1));
        let none = bucket_delta(&b, &b);
        assert_eq!(bucket_quantile(&none, 0.5), None);
        let before = histogram(&text.replace("} 10\n", "} 5\n"), "gha_scaler_x");
        assert_eq!(bucket_delta(&before, &b)[0], (0.001, 5));
    }

    #[test]
    fn proc_sample_reads_this_process() {
        let s = proc_sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_mb > 1.0, "{s:?}");
    }
}
