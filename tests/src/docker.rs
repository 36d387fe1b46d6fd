//! Helpers for the tests that run on the real Docker engine.
//!
//! - [`TestRun`]: a unique label value for everything one test creates, and a guard that removes
//!   every container, volume, network and image carrying it when dropped, even after a failure.
//! - [`TestRun::runner_image`]: the test runner image, made locally (nothing can be pulled): the
//!   static fake runner of `tests/runner-image/` (built once with `+crt-static`, cached by
//!   cargo) imported as the only file of an image tagged for this run.
//! - [`DockerAgent`]: a real agent with the Docker runtime on a tokio runtime of its own, so it
//!   can be killed like a process.
//! - [`SocketProxy`]: a Unix socket that forwards to the engine's, which a test stops and starts
//!   to make the engine unreachable for an agent.
//! - [`SimRunners`]: the GitHub simulator with an owner, a repository and a PAT, handing out
//!   registration material for runner specs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent::AgentStatus;
use agent::config::AgentConfig;
use agent::runtime::docker::DockerRuntime;
use agent::runtime::docker::config::DockerSettings;
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions,
};
use futures::StreamExt;
use shared::arch::Arch;
use shared::command::{CacheSettings, Registration, RunnerSpec};
use shared::ids::RunnerId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::github_sim::GithubSim;
use crate::harness::{AgentTls, vars};

/// The label that marks what one test created.
pub const TEST_RUN_LABEL: &str = "dev.gha-scaler.test-run";
/// Where the controller takes GitHub's webhooks.
pub const WEBHOOK_PATH: &str = "/webhook";
/// The repository of the test runner image; each run tags its own.
pub const RUNNER_IMAGE_REPO: &str = "gha-scaler-test-runner";
/// The engine's socket the tests use (`DOCKER_HOST` is not consulted: tests are explicit).
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// A client for the engine, API version negotiated.
pub async fn docker() -> Docker {
    Docker::connect_with_unix(DOCKER_SOCKET, 120, bollard::API_DEFAULT_VERSION)
        .expect("the Docker socket exists")
        .negotiate_version()
        .await
        .expect("the Docker engine answers")
}

fn label_filter(run: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{TEST_RUN_LABEL}={run}")])])
}

/// Everything one test creates carries `dev.gha-scaler.test-run=<id>`; dropping the guard
/// removes it all.
pub struct TestRun {
    pub id: String,
}

impl TestRun {
    pub fn new() -> Self {
        Self {
            id: format!("t{}", hex::encode(rand::random::<[u8; 5]>())),
        }
    }

    /// `key=value` for `RUNNER_CONTAINER_LABELS`.
    pub fn label_pair(&self) -> String {
        format!("{TEST_RUN_LABEL}={}", self.id)
    }

    /// The image tag of this run's runner image.
    pub fn image_tag(&self) -> String {
        format!("{RUNNER_IMAGE_REPO}:{}", self.id)
    }

    /// Builds (or reuses the cached binary of) the fake runner and imports an image of it for
    /// this run: `/home/runner/run.sh` in an otherwise empty root filesystem (`docker import`,
    /// about ten times faster than a `FROM scratch` build).
    pub async fn runner_image(&self) -> String {
        let binary = fake_runner_binary();
        let tag = self.image_tag();
        let docker = docker().await;
        let mut import = docker.create_image(
            Some(bollard::query_parameters::CreateImageOptions {
                from_src: Some("-".into()),
                repo: Some(RUNNER_IMAGE_REPO.into()),
                tag: Some(self.id.clone()),
                changes: vec![
                    format!(
                        "CMD [\"{}\"]",
                        agent::runtime::docker::spec::OFFICIAL_RUN_SH
                    ),
                    "WORKDIR /home/runner".into(),
                    format!("LABEL {TEST_RUN_LABEL}={}", self.id),
                ],
                ..Default::default()
            }),
            Some(bollard::body_full(root_filesystem(binary).into())),
            None,
        );
        while let Some(step) = import.next().await {
            let step = step.expect("the runner image is imported");
            if let Some(error) = step.error_detail {
                panic!("the runner image cannot be imported: {error:?}");
            }
        }
        tag
    }

    /// Containers of this run, as (name, state) pairs.
    pub async fn containers(&self) -> Vec<bollard::models::ContainerSummary> {
        docker()
            .await
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(&self.id)),
                ..Default::default()
            }))
            .await
            .expect("list containers")
    }

    /// Names of this run's volumes.
    pub async fn volumes(&self) -> Vec<String> {
        docker()
            .await
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(label_filter(&self.id)),
            }))
            .await
            .expect("list volumes")
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// Removes everything of this run now (also done on drop).
    pub async fn clean(&self) {
        clean(&self.id).await;
    }
}

impl Default for TestRun {
    fn default() -> Self {
        Self::new()
    }
}

async fn clean(run: &str) {
    let Ok(docker) = Docker::connect_with_unix(DOCKER_SOCKET, 60, bollard::API_DEFAULT_VERSION)
    else {
        return;
    };
    let Ok(docker) = docker.negotiate_version().await else {
        return;
    };
    let filters = label_filter(run);
    // A removal already in flight (an agent killed mid-request) keeps a container, and so its
    // volumes, around for a moment: remove until none is listed, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        if containers.is_empty() || Instant::now() > deadline {
            break;
        }
        for c in containers.into_iter().filter_map(|c| c.id) {
            let _ = docker
                .remove_container(
                    &c,
                    Some(RemoveContainerOptions {
                        v: true,
                        force: true,
                        link: false,
                    }),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(volumes) = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        }))
        .await
    {
        for v in volumes.volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                .await;
        }
    }
    if let Ok(networks) = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
    {
        for n in networks.into_iter().filter_map(|n| n.id) {
            let _ = docker.remove_network(&n).await;
        }
    }
    let _ = docker
        .remove_image(
            &format!("{RUNNER_IMAGE_REPO}:{run}"),
            Some(RemoveImageOptions {
                force: true,
                noprune: false,
                platforms: None,
            }),
            None,
        )
        .await;
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let run = self.id.clone();
        // A fresh runtime on a thread of its own: drop may run inside (or outside) a runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(clean(&run));
            }
        })
        .join();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The static fake runner, built once per test process (cargo keeps it fresh and serializes
/// concurrent builds by its own lock).
pub fn fake_runner_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("runner-image");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let started = Instant::now();
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(root.join("tests/runner-image/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the fake runner builds");
        tracing::info!(took = ?started.elapsed(), "fake runner binary ready");
        target.join("release/fake-runner")
    })
}

/// The runner image's root filesystem as a tar: `home/runner/run.sh`, the fake runner.
fn root_filesystem(binary: &Path) -> Vec<u8> {
    let program = std::fs::read(binary).expect("the fake runner binary");
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["home/", "home/runner/", "tmp/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(if dir == "tmp/" { 0o1777 } else { 0o755 });
        header.set_cksum();
        tar.append_data(&mut header, dir, std::io::empty())
            .expect("tar directory");
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(program.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "home/runner/run.sh", program.as_slice())
        .expect("tar entry");
    tar.into_inner().expect("tar archive")
}

/// A real agent with the Docker runtime, on a runtime of its own.
pub struct DockerAgent {
    pub name: String,
    pub status: watch::Receiver<AgentStatus>,
    pub drain: CancellationToken,
    shutdown: CancellationToken,
    tokio: Option<tokio::runtime::Runtime>,
    outcome: Option<tokio::task::JoinHandle<Result<(), agent::AgentError>>>,
}

impl DockerAgent {
    /// Starts an agent named `name` (its certificate's identity) with `extra` variables
    /// (`DOCKER_HOST`, `RUNNER_NETWORK`, …) on top of the test's defaults; the run's label is
    /// put on everything it creates.
    pub fn start(
        controller_url: &str,
        tls: &AgentTls,
        name: &str,
        run: &TestRun,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut env = vars(&[
            ("CONTROLLER_URL", controller_url.to_owned()),
            ("TLS_CA_FILE", tls.ca.display().to_string()),
            ("TLS_CERT_FILE", tls.cert.display().to_string()),
            ("TLS_KEY_FILE", tls.key.display().to_string()),
            ("AGENT_ARCH", "amd64".into()),
            ("RECONNECT_MIN_BACKOFF", "50ms".into()),
            ("RECONNECT_MAX_BACKOFF", "300ms".into()),
            ("DOCKER_HOST", format!("unix://{DOCKER_SOCKET}")),
            ("RUNNER_NETWORK", "host".into()),
            ("RUNNER_STOP_GRACE", "1s".into()),
            ("RUNNER_CONTAINER_LABELS", run.label_pair()),
            ("CACHE_VOLUME_PREFIX", format!("gha-test-{}", run.id)),
        ]);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let config = AgentConfig::from_env(&env).expect("valid agent config");
        let settings = DockerSettings::from_env(&env).expect("valid docker settings");
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("agent runtime");
        let agent = {
            let _inside = tokio.enter();
            agent::Agent::new(config, |sink| DockerRuntime::new(settings, name, sink))
        };
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

    /// Kills the agent like a process: every task and socket dropped at once. Its containers
    /// are left as they are.
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

impl Drop for DockerAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
}

/// A Unix socket forwarding every connection to the engine's socket; stopping it cuts every
/// connection at once (like an engine that went away) until it is started again.
pub struct SocketProxy {
    pub path: PathBuf,
    upstream: PathBuf,
    tokio: Option<tokio::runtime::Runtime>,
}

impl SocketProxy {
    /// A proxy listening on `path` for `upstream`, started.
    pub fn start(path: &Path, upstream: &Path) -> Self {
        let mut proxy = Self {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            tokio: None,
        };
        proxy.resume();
        proxy
    }

    /// `unix://<path>`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Stops forwarding: the socket file disappears and open connections break.
    pub fn pause(&mut self) {
        if let Some(rt) = self.tokio.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Starts forwarding again.
    pub fn resume(&mut self) {
        self.pause();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = {
            let _inside = tokio.enter();
            tokio::net::UnixListener::bind(&self.path).expect("proxy socket binds")
        };
        let upstream = self.upstream.clone();
        tokio.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        self.tokio = Some(tokio);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.pause();
    }
}

/// The GitHub simulator with organization `acme`, repository `acme/app` and an admin's PAT,
/// handing out runner registration material the way the controller will.
pub struct SimRunners {
    pub sim: GithubSim,
    /// The owner's PAT: it must never reach a runner container.
    pub pat: String,
    http: reqwest::Client,
}

impl SimRunners {
    /// On 127.0.0.1 (runners on the host network reach it).
    pub async fn start() -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// On `ip`, e.g. the gateway of a Docker network the test created.
    pub async fn start_on(ip: std::net::IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("simulator binds");
        let sim = GithubSim::serve(listener, "").expect("simulator starts");
        sim.add_org("acme", &["alice"], &[]);
        sim.add_repo("acme", "app", true);
        let pat = sim.classic_token("alice", &["repo", "admin:org"]);
        Self {
            sim,
            pat,
            http: reqwest::Client::new(),
        }
    }

    /// Queues a one-job run of `acme/app` whose job takes `duration` on its runner.
    pub fn queue(&self, labels: &[&str], duration: Duration) -> u64 {
        let (_, job) = self.sim.queue_job("acme", "app", labels);
        self.sim.set_job_duration(job, duration);
        job
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.http
            .post(format!("{}{path}", self.sim.api_url()))
            .bearer_auth(&self.pat)
            .json(&body)
            .send()
            .await
            .expect("simulator answers")
            .error_for_status()
            .expect("simulator accepts")
            .json()
            .await
            .expect("JSON answer")
    }

    /// A JIT config for a runner `name` with `labels` (what the controller asks GitHub for).
    pub async fn jit_config(&self, name: &str, labels: &[&str]) -> String {
        let answer = self
            .post(
                "/repos/acme/app/actions/runners/generate-jitconfig",
                serde_json::json!({"name": name, "runner_group_id": 1, "labels": labels}),
            )
            .await;
        answer["encoded_jit_config"]
            .as_str()
            .expect("encoded_jit_config")
            .to_owned()
    }

    /// A repository registration token (myoung34-style images).
    pub async fn registration_token(&self) -> String {
        let answer = self
            .post(
                "/repos/acme/app/actions/runners/registration-token",
                serde_json::json!({}),
            )
            .await;
        answer["token"].as_str().expect("token").to_owned()
    }

    /// `http://127.0.0.1:PORT/acme/app`, the repository URL runners register to.
    pub fn repo_url(&self) -> String {
        format!("http://{}/acme/app", self.sim.addr())
    }

    /// A runner spec for `image` with a JIT config from the simulator.
    pub async fn jit_spec(&self, id: &str, image: &str, labels: &[&str]) -> RunnerSpec {
        let name = format!("gha-{id}");
        let jit = self.jit_config(&name, labels).await;
        runner_spec(id, &name, image, Registration::JitConfig(jit), labels)
    }

    /// A runner spec for `image` with a registration token from the simulator.
    pub async fn token_spec(&self, id: &str, image: &str, labels: &[&str]) -> RunnerSpec {
        let token = self.registration_token().await;
        runner_spec(
            id,
            &format!("gha-{id}"),
            image,
            Registration::Token {
                token,
                url: self.repo_url(),
                runner_group: String::new(),
            },
            labels,
        )
    }
}

/// A spec with a one-hour timeout, no caches, for owner `acme` on amd64.
pub fn runner_spec(
    id: &str,
    name: &str,
    image: &str,
    registration: Registration,
    labels: &[&str],
) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).expect("runner id"),
        name: name.to_owned(),
        image: image.to_owned(),
        registration,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(3600),
        cache: CacheSettings::default(),
        arch: Arch::Amd64,
        owner: "acme".into(),
    }
}

/// Everything a Docker test needs: a controller (with its own controller id), the simulator,
/// the run's label guard and runner image, and the test's PKI.
pub struct DockerSetup {
    pub controller: crate::harness::TestController,
    pub sim: SimRunners,
    pub ca: crate::pki::TestCa,
    pub image: String,
    /// Dropped after the controller: removes what the test created.
    pub run: TestRun,
    pub dir: tempfile::TempDir,
}

impl DockerSetup {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra controller variables (`CONTROLLER_ID`, …).
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_inner(extra, false).await
    }

    /// The whole system for the scheduler's end-to-end tests (issue 4): a controller that
    /// uses the simulator as its GitHub (`GITHUB_API_URL`, owner `acme` with the simulator's
    /// PAT, all repositories), runs the test runner image (`RUNNER_IMAGE`) with `max_runners`
    /// runners at most, and an organization hook from the simulator to its `/webhook`
    /// ([`WEBHOOK_PATH`]) for `workflow_job` and `workflow_run`, signed with
    /// [`crate::harness::TEST_WEBHOOK_SECRET`]. `extra` adds or overrides controller variables
    /// (`RUNNER_REGISTRATION=token`, …).
    pub async fn start_e2e(max_runners: u32, extra: &[(&str, &str)]) -> Self {
        let max = max_runners.to_string();
        let mut vars: Vec<(&str, &str)> = vec![("MAX_RUNNERS", max.as_str())];
        vars.extend_from_slice(extra);
        Self::start_inner(&vars, true).await
    }

    async fn start_inner(extra: &[(&str, &str)], wired: bool) -> Self {
        crate::harness::init();
        let run = TestRun::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = crate::pki::TestCa::new(&dir.path().join("pki"), "test CA");
        let server = ca.server();
        let image = run.runner_image().await;
        let sim = SimRunners::start().await;
        let mut env =
            crate::harness::controller_env(&dir.path().join("state"), &ca.ca_file(), &server);
        env.insert("CONTROLLER_ID".into(), format!("ctl-{}", run.id));
        if wired {
            for (k, v) in [
                ("REPO_OWNER", "acme".to_owned()),
                ("ALL_REPOS", "true".to_owned()),
                ("GITHUB_TOKEN", sim.pat.clone()),
                (
                    "WEBHOOK_SECRET",
                    crate::harness::TEST_WEBHOOK_SECRET.to_owned(),
                ),
                ("GITHUB_API_URL", sim.sim.api_url().to_owned()),
                ("RUNNER_IMAGE", image.clone()),
            ] {
                env.insert(k.into(), v);
            }
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let controller = crate::harness::TestController::start(env).await;
        if wired {
            sim.sim.add_hook(
                "acme",
                None,
                &format!("http://{}{WEBHOOK_PATH}", controller.http_addr),
                Some(crate::harness::TEST_WEBHOOK_SECRET),
                "json",
                &["workflow_job", "workflow_run"],
            );
        }
        Self {
            controller,
            sim,
            ca,
            image,
            run,
            dir,
        }
    }

    /// Queues one single-job run per entry of `labels` (cycled `count` times), each job taking
    /// `duration` on its runner; returns the job ids.
    pub fn queue_mixed(&self, count: usize, labels: &[&[&str]], duration: Duration) -> Vec<u64> {
        (0..count)
            .map(|i| self.sim.queue(labels[i % labels.len()], duration))
            .collect()
    }

    /// Waits until every job in `jobs` is completed in the simulator.
    pub async fn wait_jobs_completed(&self, jobs: &[u64], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pending: Vec<u64> = jobs
                .iter()
                .copied()
                .filter(|j| {
                    self.sim
                        .sim
                        .job(*j)
                        .is_none_or(|job| job.status != "completed")
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jobs not completed after {timeout:?}: {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// TLS files for an agent named `name`.
    pub fn tls(&self, name: &str) -> AgentTls {
        let cert = self.ca.client(name, &[]);
        AgentTls {
            ca: self.ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        }
    }

    /// A Docker agent named `name` for this controller.
    pub fn agent(&self, name: &str, extra: &[(&str, &str)]) -> DockerAgent {
        DockerAgent::start(
            &self.controller.grpc_url(),
            &self.tls(name),
            name,
            &self.run,
            extra,
        )
    }

    /// Sends a command to agent `name` through the controller.
    pub fn send(&self, agent: &str, command: shared::command::AgentCommand) {
        let name = shared::ids::AgentName::parse(agent).expect("agent name");
        self.controller
            .registry
            .send(&name, command)
            .expect("command queued for the agent");
    }

    /// Starts `spec` on agent `name`.
    pub fn start_runner(&self, agent: &str, spec: RunnerSpec) {
        self.send(
            agent,
            shared::command::AgentCommand::StartRunner(Box::new(spec)),
        );
    }

    /// The controller's view of runner `id` on agent `agent`.
    pub async fn runner(&self, agent: &str, id: &str) -> Option<serde_json::Value> {
        self.controller.agent(agent).await.and_then(|a| {
            a["runners"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["id"] == id).cloned())
        })
    }

    /// Waits until the controller sees runner `id` in `phase`; returns its view.
    pub async fn wait_runner(
        &self,
        agent: &str,
        id: &str,
        phase: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.runner(agent, id).await;
            if let Some(r) = seen.as_ref().filter(|r| r["phase"] == phase) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for runner {id} on {agent} to be {phase}; \
                 last seen: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no container of this run is left.
    pub async fn wait_no_containers(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.run.containers().await;
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containers left behind after {timeout:?}: {:?}",
                left.iter()
                    .map(|c| (&c.names, &c.state))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One container of the run as it was when it started.
#[derive(Debug, Clone)]
pub struct StartedContainer {
    pub name: String,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: HashMap<String, String>,
    pub host_config: Option<bollard::models::HostConfig>,
    pub mounts: Vec<bollard::models::MountPoint>,
}

#[derive(Default)]
struct CensusState {
    alive: std::collections::HashSet<String>,
    max_alive: usize,
    started: Vec<StartedContainer>,
}

/// Follows the run's containers through the engine's events: how many were alive at most at
/// any moment, and each one's configuration at start (inspected then, before it is removed).
pub struct Census {
    state: std::sync::Arc<std::sync::Mutex<CensusState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Census {
    /// Starts counting from now (events are replayed from this instant, so none is missed).
    pub async fn start(run: &TestRun) -> Self {
        let docker = docker().await;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            .saturating_sub(1);
        let mut filters = label_filter(&run.id);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["start".into(), "die".into()]);
        let state = std::sync::Arc::new(std::sync::Mutex::new(CensusState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = docker.events(Some(bollard::query_parameters::EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(filters),
            }));
            while let Some(Ok(event)) = events.next().await {
                let Some(id) = event.actor.and_then(|a| a.id) else {
                    continue;
                };
                match event.action.as_deref() {
                    Some("start") => {
                        let inspected = docker.inspect_container(&id, None).await.ok();
                        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                        st.alive.insert(id.clone());
                        st.max_alive = st.max_alive.max(st.alive.len());
                        if let Some(c) = inspected {
                            let config = c.config.unwrap_or_default();
                            st.started.push(StartedContainer {
                                name: c.name.unwrap_or_default(),
                                env: config.env.unwrap_or_default(),
                                cmd: config
                                    .entrypoint
                                    .unwrap_or_default()
                                    .into_iter()
                                    .chain(config.cmd.unwrap_or_default())
                                    .chain(c.args.unwrap_or_default())
                                    .collect(),
                                labels: config.labels.unwrap_or_default(),
                                host_config: c.host_config,
                                mounts: c.mounts.unwrap_or_default(),
                            });
                        }
                    }
                    Some("die") => {
                        shared
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .alive
                            .remove(&id);
                    }
                    _ => {}
                }
            }
        });
        Self { state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CensusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most containers of the run alive at once so far.
    pub fn max_alive(&self) -> usize {
        self.lock().max_alive
    }

    /// Containers alive now.
    pub fn alive(&self) -> usize {
        self.lock().alive.len()
    }

    /// Every container that started, in order.
    pub fn started(&self) -> Vec<StartedContainer> {
        self.lock().started.clone()
    }

    /// Panics if `secret` appears in any started container's environment, command or labels.
    pub fn assert_never_given(&self, secret: &str) {
        let started = self.started();
        assert!(!started.is_empty(), "no container was inspected");
        for c in started {
            let everything = c
                .env
                .iter()
                .chain(c.cmd.iter())
                .chain(c.labels.values())
                .any(|v| v.contains(secret));
            assert!(!everything, "container {} was given the secret", c.name);
        }
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bridge network labelled for the run; returns (name, gateway address).
pub async fn test_network(run: &TestRun) -> (String, std::net::IpAddr) {
    let docker = docker().await;
    let name = format!("gha-test-{}", run.id);
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(TEST_RUN_LABEL.to_owned(), run.id.clone())])),
            ..Default::default()
        })
        .await
        .expect("network created");
    let inspected = docker
        .inspect_network(&name, None)
        .await
        .expect("network inspected");
    let gateway = inspected
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway))
        .expect("the network has a gateway");
    (name, gateway.parse().expect("gateway address"))
}
