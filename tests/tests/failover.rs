//! Leader and standby (issue 15 §3): two real `gha-controller` processes on one PostgreSQL
//! database (`GHA_TEST_PG_URL`), sharing one CA and server certificate; two real agents with
//! the in-memory runtime that know both replicas (`CONTROLLER_URL=a,b`); the GitHub simulator
//! delivering signed webhooks through a round-robin load balancer to both.
//!
//! - SIGKILL of the leader in the middle of a burst of 500 jobs: the standby leads within
//!   15 s, the agents reconnect to it, every job either replica accepted with a 2xx is served
//!   exactly once, no runner is started twice, and none is left behind.
//! - A standby answers a session with `UNAVAILABLE` "not leader", naming the leader's address
//!   in the message and the `gha-leader-address` metadata.
//! - A leader whose database connection is cut (through a TCP proxy the test closes) steps
//!   down, and the other replica takes over and serves new jobs.
//!
//! Without `GHA_TEST_PG_URL` the tests are skipped with a message (and fail on CI, where it
//! must be set; see `tests::postgres`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tests::emulator::RunnerEmulator;
use tests::github_sim::GithubSim;
use tests::harness::{
    AgentTls, TEST_WEBHOOK_SECRET, TestAgent, controller_env, init, simulated_github, wait_until,
};
use tests::net::{RoundRobin, TcpProxy};
use tests::pki::TestCa;
use tests::postgres::TestDb;
use tests::process::{ControllerProcess, free_port, workspace_binary};
use tests::raw_agent;

const JOBS: usize = 500;
/// The lease in these tests: a dead leader's lease lapses after this.
const LEASE: &str = "3s";
/// The bound on a failover.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);
const API_TOKEN: &str = "failover-test-api-token-01";

/// Two replicas' worth of shared set-up: the CA, the simulator, the variables both get.
struct Installation {
    dir: tempfile::TempDir,
    ca: TestCa,
    sim: std::sync::Arc<GithubSim>,
    env: HashMap<String, String>,
}

impl Installation {
    async fn new() -> Self {
        init();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(&dir.path().join("pki"), "test CA");
        // One server certificate (127.0.0.1) for both replicas: they share the PKI.
        let server = ca.server();
        let (sim, mut env) = simulated_github().await;
        env.extend(controller_env(
            &dir.path().join("unused"),
            &ca.ca_file(),
            &server,
        ));
        env.insert("MAX_RUNNERS".into(), "50".into());
        env.insert("API_TOKEN".into(), API_TOKEN.into());
        env.insert("LEADER_LEASE".into(), LEASE.into());
        // Idle runners (started for a job another runner took) are stopped soon, so the test
        // can see that none is left behind.
        env.insert("RUNNER_IDLE_GRACE".into(), "2s".into());
        Self { dir, ca, sim, env }
    }

    /// Starts replica `name` with its database at `database_url`.
    async fn replica(&self, name: &str, database_url: &str) -> ControllerProcess {
        let (http, grpc) = (free_port(), free_port());
        let env = self.replica_env(name, database_url, grpc);
        let log = self.dir.path().join(format!("controller-{name}.log"));
        ControllerProcess::start_on(env, log, http, grpc).await
    }

    /// The built-in PKI (`certs init`, with its CA key, so replicas enroll agents), one for
    /// every replica, instead of the test CA.
    fn with_built_in_pki(mut self) -> Self {
        let made = controller::pki::init(&self.dir.path().join("shared-pki"), &[], false)
            .expect("certs init");
        for (var, path) in [
            ("TLS_CA_FILE", &made.ca_cert),
            ("TLS_CA_KEY_FILE", &made.ca_key),
            ("TLS_CERT_FILE", &made.server_cert),
            ("TLS_KEY_FILE", &made.server_key),
        ] {
            self.env.insert(var.into(), path.display().to_string());
        }
        self
    }

    /// `gha-controller ARGS` as an operator runs it beside replica `name` (its variables,
    /// another process); returns its standard output.
    fn cli(&self, name: &str, database_url: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(workspace_binary("gha-controller"))
            .env_clear()
            .envs(self.replica_env(name, database_url, 0))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(args)
            .output()
            .expect("run gha-controller");
        assert!(
            out.status.success(),
            "gha-controller {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Replica `name`'s variables (its gRPC port advertised as `grpc`).
    fn replica_env(&self, name: &str, database_url: &str, grpc: u16) -> HashMap<String, String> {
        let mut env = self.env.clone();
        env.insert("DATABASE_URL".into(), database_url.to_owned());
        env.insert("REPLICA_ID".into(), name.to_owned());
        // An address the shared certificate (localhost, 127.0.0.1) does not name, like a pod's
        // IP: an agent sent there checks the certificate for the name it was configured with.
        env.insert(
            "ADVERTISE_GRPC_URL".into(),
            format!("https://127.0.0.2:{grpc}"),
        );
        // Each replica its own STATE_DIR; the agent directory is in the database, the PKI
        // files are shared.
        env.insert(
            "STATE_DIR".into(),
            self.dir
                .path()
                .join(format!("state-{name}"))
                .display()
                .to_string(),
        );
        env
    }

    /// An agent that knows both replicas.
    fn agent(&self, name: &str, replicas: &[&ControllerProcess]) -> TestAgent {
        let cert = self.ca.client(name, &[]);
        let urls: Vec<String> = replicas
            .iter()
            .map(|r| format!("https://localhost:{}", r.grpc_addr.port()))
            .collect();
        TestAgent::start(
            &urls.join(","),
            &AgentTls {
                ca: self.ca.ca_file(),
                cert: cert.cert,
                key: cert.key,
            },
            &[("MAX_RUNNERS", "25")],
        )
    }

    /// GitHub's organisation hook, pointed at the load balancer in front of the replicas.
    fn hook_through(&self, balancer: &RoundRobin) {
        self.sim.add_hook(
            "acme",
            None,
            &balancer.url("/webhook"),
            Some(TEST_WEBHOOK_SECRET),
            "json",
            &["workflow_job", "workflow_run"],
        );
    }
}

/// Replica `a` (leading, its database at `url_a`) and then `b` (a standby, at `url_b`), behind
/// a round-robin balancer that GitHub's hook points at.
async fn two_replicas(
    site: &Installation,
    url_a: &str,
    url_b: &str,
) -> (ControllerProcess, ControllerProcess, RoundRobin) {
    let a = site.replica("a", url_a).await;
    wait_until(Duration::from_secs(20), "replica a leads", || leads(&a)).await;
    let b = site.replica("b", url_b).await;
    wait_for_roles(&a, &b, "a").await;
    let balancer = RoundRobin::start(vec![
        format!("http://{}", a.http_addr),
        format!("http://{}", b.http_addr),
    ])
    .await;
    site.hook_through(&balancer);
    (a, b, balancer)
}

/// Waits until every agent has a session.
async fn connected(agents: &[&TestAgent]) {
    for agent in agents {
        agent
            .wait_status(Duration::from_secs(20), "connected to the leader", |s| {
                s.connected
            })
            .await;
    }
}

/// What a replica's `/ready` says: (HTTP status, `leader` object); `None` when it does not
/// answer.
async fn ready(replica: &ControllerProcess) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::Client::new()
        .get(format!("http://{}/ready", replica.http_addr))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.ok()?;
    Some((status, body["leader"].clone()))
}

async fn leads(replica: &ControllerProcess) -> bool {
    ready(replica)
        .await
        .is_some_and(|(_, leader)| leader["this_replica"] == true)
}

/// The workflow_job `queued` deliveries answered with a 2xx, by job id.
fn accepted_jobs(sim: &GithubSim) -> BTreeSet<u64> {
    sim.deliveries()
        .iter()
        .filter(|d| {
            d.event == "workflow_job"
                && d.action.as_deref() == Some("queued")
                && d.status_code / 100 == 2
        })
        .filter_map(|d| d.payload["workflow_job"]["id"].as_u64())
        .collect()
}

/// Every runner the agents' runtimes were asked to start, across both agents.
fn starts(agents: &[&TestAgent]) -> Vec<String> {
    agents
        .iter()
        .flat_map(|a| a.runtime.start_calls())
        .map(|id| id.to_string())
        .collect()
}

/// Waits until `replica` leads and `standby` answers as a standby that names it.
async fn wait_for_roles(leader: &ControllerProcess, standby: &ControllerProcess, name: &str) {
    wait_until(Duration::from_secs(20), "the first replica leads", || {
        leads(leader)
    })
    .await;
    wait_until(
        Duration::from_secs(20),
        "the second replica is a ready standby naming the leader",
        || async {
            match ready(standby).await {
                Some((200, leader)) => leader["this_replica"] == false && leader["replica"] == name,
                _ => false,
            }
        },
    )
    .await;
}

/// Once all accepted jobs are done: no runner alive on an agent, none registered at GitHub.
async fn nothing_left_behind(sim: &GithubSim, agents: &[&TestAgent]) {
    let left = || {
        let alive: Vec<String> = agents
            .iter()
            .flat_map(|a| a.runtime.runners())
            .filter(|r| !r.phase.is_terminal())
            .map(|r| format!("{} {:?}", r.name, r.phase))
            .collect();
        let registered: Vec<String> = sim
            .runners()
            .iter()
            .map(|r| format!("{} job={:?} online={}", r.name, r.job, r.online))
            .collect();
        (alive, registered)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (alive, registered) = left();
        if alive.is_empty() && registered.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "runners left behind: on the agents {alive:?}, at GitHub {registered:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_from_a_killed_leader_mid_burst_and_every_accepted_job_runs_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let site = Installation::new().await;
    let (mut a, b, balancer) = two_replicas(&site, &db.url, &db.url).await;
    let agent1 = site.agent("host-1", &[&a, &b]);
    // The second agent lists the standby first: it is turned away and follows the hint.
    let agent2 = site.agent("host-2", &[&b, &a]);
    connected(&[&agent1, &agent2]).await;
    // host-2 was turned away by b and went straight to the address b named (an address the
    // certificate does not name, verified as the configured `localhost`): two attempts.
    let attempts = agent2.status.borrow().attempts;
    assert_eq!(attempts, 2, "host-2 followed the standby's hint at once");
    let emulator = RunnerEmulator::start(
        site.sim.clone(),
        vec![agent1.runtime.clone(), agent2.runtime.clone()],
        Duration::ZERO,
    );

    for _ in 0..JOBS {
        site.sim.queue_job("acme", "app", &["self-hosted"]);
    }
    wait_until(
        Duration::from_secs(60),
        "a fifth of the deliveries answered",
        || async { accepted_jobs(&site.sim).len() >= JOBS / 5 },
    )
    .await;
    a.kill9();
    let killed = Instant::now();
    wait_until(FAILOVER_BOUND, "the standby leads", || leads(&b)).await;
    let failover = killed.elapsed();
    assert!(failover < FAILOVER_BOUND, "failover took {failover:?}");
    for agent in [&agent1, &agent2] {
        agent
            .wait_status(
                Duration::from_secs(30),
                "reconnected to the new leader",
                |s| s.connected && s.sessions >= 2,
            )
            .await;
    }
    assert!(
        site.sim.deliveries_settled(Duration::from_secs(60)).await,
        "the simulator finished delivering"
    );
    let accepted = accepted_jobs(&site.sim);
    assert!(
        accepted.len() >= JOBS / 5,
        "{} of {JOBS} deliveries accepted",
        accepted.len()
    );
    let served_by_b = balancer.served[1].load(std::sync::atomic::Ordering::SeqCst);
    assert!(served_by_b > 0, "the standby took webhooks too");

    wait_until(
        Duration::from_secs(90),
        "every accepted job completed",
        || async {
            accepted.iter().all(|j| {
                site.sim
                    .job(*j)
                    .is_some_and(|job| job.status == "completed")
            })
        },
    )
    .await;
    let completed = emulator.completed();
    let unique: BTreeSet<u64> = completed.iter().copied().collect();
    assert_eq!(unique.len(), completed.len(), "a job was served twice");
    assert!(
        accepted.iter().all(|j| unique.contains(j)),
        "an accepted job was not served by one of our runners"
    );
    // No runner started twice: every start the agents executed is a distinct runner. (More
    // runners than jobs may start: GitHub gives a runner any matching job, so one started for
    // job X may take job Y; the runner left without a job is stopped as idle, checked below.)
    let started = starts(&[&agent1, &agent2]);
    let distinct: BTreeSet<&String> = started.iter().collect();
    assert_eq!(distinct.len(), started.len(), "a runner was started twice");
    nothing_left_behind(&site.sim, &[&agent1, &agent2]).await;
    eprintln!(
        "failover in {failover:?}; {} of {JOBS} deliveries accepted ({served_by_b} by the \
         standby); {} runners started, {} jobs completed",
        accepted.len(),
        started.len(),
        completed.len()
    );
    drop(emulator);
}

/// `host:port` of a `postgres://` URL.
fn server_of(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).expect("a postgres:// URL");
    let host = url.host_str().expect("a host");
    let port = url.port().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("resolvable")
        .next()
        .expect("an address")
}

/// `url` with its server replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let mut url = url::Url::parse(url).expect("a postgres:// URL");
    url.set_host(Some(&addr.ip().to_string())).expect("host");
    url.set_port(Some(addr.port())).expect("port");
    url.to_string()
}

/// Queues `n` jobs and waits until the simulator saw them all completed.
async fn serve_jobs(sim: &GithubSim, n: usize, what: &str) {
    let jobs: Vec<u64> = (0..n)
        .map(|_| sim.queue_job("acme", "app", &["self-hosted"]).1)
        .collect();
    wait_until(Duration::from_secs(60), what, || async {
        jobs.iter()
            .all(|j| sim.job(*j).is_some_and(|job| job.status == "completed"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_its_database_steps_down_and_the_other_replica_takes_over() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let site = Installation::new().await;
    let mut proxy = TcpProxy::start(server_of(&db.url));
    let (a, b, _balancer) = two_replicas(&site, &through(&db.url, proxy.addr), &db.url).await;
    // The standby's answer to a session, as the wire shows it.
    let cert = site.ca.client("raw-agent", &[]);
    let channel = raw_agent::channel(&b.grpc_url(), &site.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let refusal = raw_agent::session(channel, raw_agent::register(proto::v1::Arch::Amd64))
        .await
        .expect_err("a standby serves no session");
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    let leader_address = format!("https://127.0.0.2:{}", a.grpc_addr.port());
    assert!(
        refusal.message().starts_with("not leader") && refusal.message().contains(&leader_address),
        "{}",
        refusal.message()
    );
    assert_eq!(
        refusal
            .metadata()
            .get("gha-leader-address")
            .and_then(|v| v.to_str().ok()),
        Some(leader_address.as_str())
    );
    let agent1 = site.agent("host-1", &[&a, &b]);
    let agent2 = site.agent("host-2", &[&a, &b]);
    connected(&[&agent1, &agent2]).await;
    let _emulator = RunnerEmulator::start(
        site.sim.clone(),
        vec![agent1.runtime.clone(), agent2.runtime.clone()],
        Duration::ZERO,
    );
    serve_jobs(&site.sim, 10, "jobs served while a leads").await;

    // The partition: a loses its database, its process and its agents' sessions stay up.
    proxy.cut();
    let cut = Instant::now();
    wait_until(FAILOVER_BOUND, "a steps down", || async {
        matches!(ready(&a).await, Some((_, leader)) if leader["this_replica"] == false)
    })
    .await;
    wait_until(FAILOVER_BOUND, "b leads", || leads(&b)).await;
    assert!(cut.elapsed() < FAILOVER_BOUND, "took {:?}", cut.elapsed());
    // a knows it is cut off: not ready, and it does not claim to lead.
    let (status, leader) = ready(&a).await.expect("a still answers /ready");
    assert_eq!(status, 503, "a replica without its database is not ready");
    assert_eq!(leader["this_replica"], false);
    for agent in [&agent1, &agent2] {
        agent
            .wait_status(Duration::from_secs(30), "reconnected to b", |s| {
                s.connected && s.sessions >= 2
            })
            .await;
    }
    serve_jobs(&site.sim, 10, "jobs served after b took over").await;
    assert!(!leads(&a).await, "the cut-off replica never leads again");
    let log = a.log();
    assert!(
        log.contains("tenure over") || log.contains("tenure ended"),
        "a says it stopped acting: {}",
        &log[log.len().saturating_sub(4000)..]
    );
}

/// What `replica`'s API says about agent `name` (`None`: unknown there).
async fn agent_view(replica: &ControllerProcess, name: &str) -> Option<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/v1/agents/{name}", replica.http_addr))
        .bearer_auth(API_TOKEN)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// How soon a revocation (or a drain) made anywhere is enforced by every replica: the
/// handshake's list and live sessions' admission and drain are re-read every 2 s
/// (`grpc::revocation::REFRESH`, `ADMISSION_CHECK`), from the shared database. The wait allows
/// the agent's own reaction too.
const REVOCATION_BOUND: Duration = Duration::from_secs(10);

/// The agent directory in PostgreSQL (issue 15 §2): a token minted beside replica a is spent
/// through the standby b; the agent is let in with its token's policy by a, then by b after a
/// is killed, and renews its certificate through b; a drain through a's API (a standby again) and a revocation through a's CLI are
/// enforced by the leader b within [`REVOCATION_BOUND`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_directory_is_shared_by_the_replicas() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let site = Installation::new().await.with_built_in_pki();
    let (mut a, b, _balancer) = two_replicas(&site, &db.url, &db.url).await;

    // Minted beside replica a (the CLI, another process), spent through the standby b.
    let token = site.cli(
        "a",
        &db.url,
        &[
            "agents",
            "join-token",
            "--name",
            "pg-builder",
            "--max-runners",
            "3",
            // Renewed at two thirds of its life: after the failover, through b.
            "--cert-validity",
            "24s",
        ],
    );
    let agent_dir = site.dir.path().join("agent-pg-builder");
    let joined = agent::join::join(&agent::join::JoinOptions {
        controller_url: format!("https://localhost:{}", b.grpc_addr.port()),
        token: token.trim().to_owned(),
        dir: agent_dir.clone(),
        ca_fingerprint: None,
        ca_file: None,
        name: "ignored".into(),
        force: false,
    })
    .await
    .expect("the token minted beside a is spent through b");
    assert_eq!(joined.agent_name, "pg-builder");
    let tls = AgentTls::in_dir(&agent_dir);
    let urls = format!(
        "https://localhost:{},https://localhost:{}",
        a.grpc_addr.port(),
        b.grpc_addr.port()
    );
    let agent = TestAgent::start(&urls, &tls, &[("MAX_RUNNERS", "25")]);
    connected(&[&agent]).await;
    let view = agent_view(&a, "pg-builder")
        .await
        .expect("the leader a serves it");
    assert_eq!(
        view["policy"]["max_runners"], 3,
        "the leader applies the policy minted through a, recorded at b's enrollment: {view}"
    );

    // The leader dies; b leads and lets the agent in with the certificate b issued, and the
    // policy of its token.
    a.kill9();
    wait_until(FAILOVER_BOUND, "b leads", || leads(&b)).await;
    agent
        .wait_status(Duration::from_secs(30), "let in by the new leader", |s| {
            s.connected && s.sessions >= 2
        })
        .await;
    let view = agent_view(&b, "pg-builder").await.expect("b serves it");
    assert_eq!(view["connected"], true, "{view}");
    assert_eq!(view["policy"]["max_runners"], 3, "{view}");
    assert_eq!(
        view["capacity"], 3,
        "the policy caps what the agent reports: {view}"
    );

    // The agent renews its certificate through b: b knows it as enrolled (with a directory of
    // its own it would be refused as "not enrolled").
    let issued = std::fs::read(&tls.cert).unwrap();
    wait_until(
        Duration::from_secs(40),
        "the certificate renewed by b",
        || async { std::fs::read(&tls.cert).is_ok_and(|now| now != issued) },
    )
    .await;
    assert!(
        b.log().contains("agent certificate renewed"),
        "b renewed it: {}",
        b.log()
    );

    // a comes back as a standby; a drain through its API (a load balancer may send one there)
    // is recorded in the shared directory and sent by b, the leader, to the live session.
    a.restart().await;
    wait_for_roles(&b, &a, "b").await;
    let drained = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/agents/pg-builder/drain",
            a.http_addr
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("a answers");
    assert_eq!(
        drained.status().as_u16(),
        202,
        "the standby knows the enrolled agent"
    );
    agent
        .wait_status(REVOCATION_BOUND, "drained by the leader b", |s| s.draining)
        .await;

    // Revoked beside a (its CLI, another process): b, the leader, ends the session and
    // refuses the certificate at the handshake.
    let revoked_at = Instant::now();
    site.cli("a", &db.url, &["agents", "revoke", "pg-builder"]);
    agent
        .wait_status(REVOCATION_BOUND, "revoked on the other replica", |s| {
            !s.connected
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("revoked"))
        })
        .await;
    let enforced = revoked_at.elapsed();
    let cert = tests::pki::CertFiles {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    };
    wait_until(
        REVOCATION_BOUND,
        "b refuses the revoked certificate",
        || async {
            let Ok(channel) = raw_agent::channel(&b.grpc_url(), &tls.ca, Some(&cert)).await else {
                return true;
            };
            // b leads: any refusal is the revocation's (at the handshake, or at admission).
            raw_agent::session(channel, raw_agent::register(proto::v1::Arch::Amd64))
                .await
                .is_err()
        },
    )
    .await;
    assert!(
        !agent_view(&b, "pg-builder")
            .await
            .is_some_and(|v| v["connected"] == true),
        "the revoked agent is not connected to b"
    );
    eprintln!("revocation made beside a enforced by b in {enforced:?}");
}
