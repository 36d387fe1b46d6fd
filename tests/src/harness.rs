//! A real controller and real agents in one test process, over real mutual TLS on loopback.
//!
//! The controller runs on the test's runtime with listeners on port 0 and can be restarted on
//! the same ports with the same state directory. Each agent runs on a runtime of its own, so
//! that [`TestAgent::kill`] can drop it at once, sockets and all, like a killed process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::AgentStatus;
use agent::config::AgentConfig;
use agent::runtime::memory::MemoryRuntime;
use controller::config::Config;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Installs the crypto provider and a test log subscriber (once per process).
pub fn init() {
    shared::tls::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `condition` every 20 ms until it holds, failing the test with `what` at the deadline.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Builds a variable map from pairs.
pub fn vars(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The secret of the owner that [`owner_vars`] configures.
pub const TEST_WEBHOOK_SECRET: &str = "test-webhook-secret";

/// One owner, `acme`, serving all its repositories, as a seed `.env` would configure it.
pub fn owner_vars() -> HashMap<String, String> {
    vars(&[
        ("REPO_OWNER", "acme".into()),
        ("GITHUB_TOKEN", "ghp_test_token".into()),
        ("ALL_REPOS", "true".into()),
        ("WEBHOOK_SECRET", TEST_WEBHOOK_SECRET.into()),
    ])
}

/// The `API_TOKEN` every test controller gets unless its variables set one (an empty value
/// leaves the API without a token, which closes it).
pub const TEST_API_TOKEN: &str = "test-api-token-0123456789";

/// A controller serving on loopback.
pub struct TestController {
    pub config: Config,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub registry: controller::registry::AgentRegistry,
    shutdown: CancellationToken,
    running: Option<controller::Controller>,
}

impl TestController {
    /// Starts a controller with `env` (plus `STATE_DIR` if absent) on fresh ports.
    /// Owner variables of [`owner_vars`] are added where `env` sets no owner, and
    /// `API_TOKEN` ([`TEST_API_TOKEN`]) where `env` does not mention it.
    pub async fn start(mut env: HashMap<String, String>) -> Self {
        if !env.contains_key("OWNERS") && !env.contains_key("REPO_OWNER") {
            env.extend(owner_vars());
        }
        env.entry("API_TOKEN".into())
            .or_insert_with(|| TEST_API_TOKEN.into());
        let config = Config::from_env(&env).expect("valid controller config");
        Self::start_on(
            config,
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
    }

    /// [`Self::start`], with `WEBHOOK_URL` naming this controller's own `/webhook`, so that
    /// webhook setup points the simulator's hooks at it.
    pub async fn start_self_hooked(mut env: HashMap<String, String>) -> Self {
        if !env.contains_key("OWNERS") && !env.contains_key("REPO_OWNER") {
            env.extend(owner_vars());
        }
        env.entry("API_TOKEN".into())
            .or_insert_with(|| TEST_API_TOKEN.into());
        let http = bind_retrying("127.0.0.1:0".parse().unwrap()).await;
        let addr = http.local_addr().expect("bound");
        env.insert("WEBHOOK_URL".into(), format!("http://{addr}/webhook"));
        let config = Config::from_env(&env).expect("valid controller config");
        let grpc = bind_retrying("127.0.0.1:0".parse().unwrap()).await;
        Self::start_with(config, http, grpc).await
    }

    async fn start_on(config: Config, http: SocketAddr, grpc: SocketAddr) -> Self {
        let http = bind_retrying(http).await;
        let grpc = bind_retrying(grpc).await;
        Self::start_with(config, http, grpc).await
    }

    async fn start_with(
        config: Config,
        http: tokio::net::TcpListener,
        grpc: tokio::net::TcpListener,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let running = controller::Controller::start(
            &config,
            controller::Listeners { http, grpc },
            shutdown.clone(),
        )
        .await
        .expect("controller starts");
        Self {
            config,
            http_addr: running.http_addr,
            grpc_addr: running.grpc_addr,
            registry: running.registry.clone(),
            shutdown,
            running: Some(running),
        }
    }

    /// `https://127.0.0.1:<grpc port>`.
    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    /// Stops the controller and waits for it to finish (bounded).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), running.wait())
                .await
                .expect("controller stops within 10 s")
                .expect("controller stops cleanly");
        }
    }

    /// Stops, then starts again on the same ports with the same configuration and state.
    pub async fn restart(&mut self) {
        self.stop().await;
        let next = Self::start_on(self.config.clone(), self.http_addr, self.grpc_addr).await;
        *self = next;
    }

    /// `GET /api/v1/agents`, as JSON.
    pub async fn agents(&self) -> Vec<serde_json::Value> {
        let mut req =
            reqwest::Client::new().get(format!("http://{}/api/v1/agents", self.http_addr));
        if let Some(token) = &self.config.api_token {
            req = req.bearer_auth(token.expose());
        }
        req.send()
            .await
            .expect("GET /api/v1/agents")
            .error_for_status()
            .expect("agents API answers 200")
            .json()
            .await
            .expect("agents JSON")
    }

    /// The agent named `name` in `GET /api/v1/agents`, if listed.
    pub async fn agent(&self, name: &str) -> Option<serde_json::Value> {
        self.agents().await.into_iter().find(|a| a["name"] == name)
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%addr, error = %e, "port busy; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

/// TLS files for an agent.
#[derive(Debug, Clone)]
pub struct AgentTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AgentTls {
    /// The files `gha-agent join` writes into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join(agent::config::CA_FILE),
            cert: dir.join(agent::config::CERT_FILE),
            key: dir.join(agent::config::KEY_FILE),
        }
    }
}

/// The variables every test agent starts with: the controller, its TLS files, amd64, and
/// fast reconnects.
pub fn agent_env(controller_url: &str, tls: &AgentTls) -> HashMap<String, String> {
    vars(&[
        ("CONTROLLER_URL", controller_url.to_owned()),
        ("TLS_CA_FILE", tls.ca.display().to_string()),
        ("TLS_CERT_FILE", tls.cert.display().to_string()),
        ("TLS_KEY_FILE", tls.key.display().to_string()),
        ("AGENT_ARCH", "amd64".into()),
        ("RECONNECT_MIN_BACKOFF", "50ms".into()),
        ("RECONNECT_MAX_BACKOFF", "300ms".into()),
    ])
}

/// A one-worker tokio runtime for an agent of its own.
pub fn agent_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("agent runtime")
}

/// A running agent on a tokio runtime of its own, so that [`IsolatedAgent::kill`] drops it at
/// once, sockets and all, like a killed process. Whatever runtime it drives is left as it is.
pub struct IsolatedAgent {
    pub name: String,
    pub status: watch::Receiver<AgentStatus>,
    pub drain: CancellationToken,
    shutdown: CancellationToken,
    tokio: Option<tokio::runtime::Runtime>,
    outcome: Option<tokio::task::JoinHandle<Result<(), agent::AgentError>>>,
}

impl IsolatedAgent {
    /// Runs `agent` on `tokio` (the runtime it was built in).
    pub fn spawn<R: agent::runtime::RunnerRuntime>(
        name: &str,
        tokio: tokio::runtime::Runtime,
        agent: agent::Agent<R>,
    ) -> Self {
        let status = agent.status();
        let drain = agent.drain_token();
        let shutdown = CancellationToken::new();
        let outcome = tokio.spawn(agent.run(shutdown.clone()));
        Self {
            name: name.to_owned(),
            status,
            drain,
            shutdown,
            tokio: Some(tokio),
            outcome: Some(outcome),
        }
    }

    /// Kills the agent: every task and socket is dropped at once, nothing is said to the
    /// controller.
    pub fn kill(&mut self) {
        if let Some(rt) = self.tokio.take() {
            rt.shutdown_background();
        }
    }

    /// Asks the agent to stop (gracefully, as on SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.outcome.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        self.kill();
    }

    /// Waits until the agent's status satisfies `f`.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&AgentStatus) -> bool,
    ) -> AgentStatus {
        let mut rx = self.status.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| f(s))).await {
            Ok(Ok(s)) => s.clone(),
            _ => panic!(
                "timed out after {timeout:?} waiting for agent {}: {what}; last: {:?}",
                self.name,
                *self.status.borrow()
            ),
        }
    }

    /// Waits for the agent's run to end and returns how it ended.
    pub async fn exited(&mut self, timeout: Duration) -> Result<(), agent::AgentError> {
        let handle = self.outcome.take().expect("agent outcome taken once");
        tokio::time::timeout(timeout, handle)
            .await
            .expect("agent exits in time")
            .expect("agent task did not panic")
    }

    /// Whether the agent's run has ended.
    pub fn has_exited(&self) -> bool {
        self.outcome.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for IsolatedAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
}

/// An agent with the in-memory runtime, on a runtime of its own.
pub struct TestAgent {
    pub runtime: MemoryRuntime,
    agent: IsolatedAgent,
}

impl TestAgent {
    /// Starts an agent for `controller_url` with `tls` and extra variables (`AGENT_ARCH`, ...).
    pub fn start(controller_url: &str, tls: &AgentTls, extra: &[(&str, &str)]) -> Self {
        let mut env = agent_env(controller_url, tls);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let config = AgentConfig::from_env(&env).expect("valid agent config");
        let mut memory = None;
        let agent = agent::Agent::new(config, |sink| {
            let rt = MemoryRuntime::new(sink);
            memory = Some(rt.clone());
            rt
        });
        Self {
            runtime: memory.expect("runtime constructed"),
            agent: IsolatedAgent::spawn("with the memory runtime", agent_runtime(), agent),
        }
    }
}

impl std::ops::Deref for TestAgent {
    type Target = IsolatedAgent;

    fn deref(&self) -> &IsolatedAgent {
        &self.agent
    }
}

impl std::ops::DerefMut for TestAgent {
    fn deref_mut(&mut self) -> &mut IsolatedAgent {
        &mut self.agent
    }
}

/// Controller variables for a test: state in `state_dir`, own-PKI TLS files, fast heartbeats
/// (200 ms, dead after 1 s).
pub fn controller_env(
    state_dir: &Path,
    ca: &Path,
    server: &crate::pki::CertFiles,
) -> HashMap<String, String> {
    vars(&[
        ("STATE_DIR", state_dir.display().to_string()),
        ("TLS_CA_FILE", ca.display().to_string()),
        ("TLS_CERT_FILE", server.cert.display().to_string()),
        ("TLS_KEY_FILE", server.key.display().to_string()),
        ("AGENT_HEARTBEAT_INTERVAL", "200ms".into()),
        ("AGENT_HEARTBEAT_TIMEOUT", "1s".into()),
    ])
}

/// A GitHub simulator with organisation `acme` (repositories `app` and `web`) and a classic
/// token for it, plus the controller variables that point at it.
pub async fn simulated_github() -> (
    std::sync::Arc<crate::github_sim::GithubSim>,
    HashMap<String, String>,
) {
    let sim = crate::github_sim::GithubSim::start()
        .await
        .expect("simulator starts");
    sim.add_user("alice");
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", true);
    sim.add_repo("acme", "web", true);
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    let env = vars(&[
        ("GITHUB_API_URL", sim.api_url().to_owned()),
        ("REPO_OWNER", "acme".into()),
        ("GITHUB_TOKEN", token),
        ("ALL_REPOS", "true".into()),
        ("WEBHOOK_SECRET", TEST_WEBHOOK_SECRET.into()),
    ]);
    (std::sync::Arc::new(sim), env)
}

/// Points the simulator's organisation hook for `owner` at `controller`'s `/webhook`.
pub fn hook_to(
    sim: &crate::github_sim::GithubSim,
    owner: &str,
    controller: &TestController,
) -> u64 {
    hook_to_addr(sim, owner, controller.http_addr)
}

/// [`hook_to`] for a controller serving HTTP on `http_addr` (e.g. a `ControllerProcess`).
pub fn hook_to_addr(
    sim: &crate::github_sim::GithubSim,
    owner: &str,
    http_addr: std::net::SocketAddr,
) -> u64 {
    sim.add_hook(
        owner,
        None,
        &format!("http://{http_addr}/webhook"),
        Some(TEST_WEBHOOK_SECRET),
        "json",
        &["workflow_job", "workflow_run"],
    )
}

/// `GET path` on the controller's HTTP port, with the API token if configured; (status, JSON).
pub async fn get_json(controller: &TestController, path: &str) -> (u16, serde_json::Value) {
    call(controller, reqwest::Method::GET, path).await
}

/// `POST path` (empty body) on the controller's HTTP port, with the API token; (status, JSON).
pub async fn post_json(controller: &TestController, path: &str) -> (u16, serde_json::Value) {
    call(controller, reqwest::Method::POST, path).await
}

async fn call(
    controller: &TestController,
    method: reqwest::Method,
    path: &str,
) -> (u16, serde_json::Value) {
    let mut req =
        reqwest::Client::new().request(method, format!("http://{}{path}", controller.http_addr));
    if let Some(token) = &controller.config.api_token {
        req = req.bearer_auth(token.expose());
    }
    let resp = req.send().await.expect("controller answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// A controller with a test CA of its own (own-PKI TLS, fast heartbeats), and agents whose
/// client certificates that CA signs on demand.
pub struct Secured {
    pub dir: tempfile::TempDir,
    pub ca: crate::pki::TestCa,
    pub controller: TestController,
}

impl Secured {
    /// Starts the controller with [`controller_env`] plus `extra`.
    pub async fn start(extra: HashMap<String, String>) -> Self {
        init();
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = crate::pki::TestCa::new(&dir.path().join("pki"), "test CA");
        let server = ca.server();
        let mut env = controller_env(&dir.path().join("state"), &ca.ca_file(), &server);
        env.extend(extra);
        let controller = TestController::start(env).await;
        Self {
            dir,
            ca,
            controller,
        }
    }

    /// TLS files for an agent presenting `cert`, trusting this CA.
    pub fn tls(&self, cert: &crate::pki::CertFiles) -> AgentTls {
        AgentTls {
            ca: self.ca.ca_file(),
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        }
    }

    /// An agent named `name` (its certificate's CN) with `extra` variables.
    pub fn agent(&self, name: &str, extra: &[(&str, &str)]) -> TestAgent {
        agent_of(&self.ca, &self.controller.grpc_url(), name, extra)
    }
}

/// An agent named `name` (a client certificate of `ca` with that CN) dialing `grpc_url`.
pub fn agent_of(
    ca: &crate::pki::TestCa,
    grpc_url: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> TestAgent {
    let cert = ca.client(name, &[]);
    let tls = AgentTls {
        ca: ca.ca_file(),
        cert: cert.cert,
        key: cert.key,
    };
    TestAgent::start(grpc_url, &tls, extra)
}
