//! `gha-agent`: parses the command line and configuration, installs logging and signals, and
//! hands over to the library.

use std::collections::HashMap;
use std::path::PathBuf;

use agent::config::AgentConfig;
use agent::runtime::docker::DockerRuntime;
use agent::runtime::docker::config::DockerSettings;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// The control socket's name in the agent's directory (its `TLS_DIR`, or the directory of its
/// `TLS_CERT_FILE`) unless `CONTROL_SOCKET` says otherwise: one per agent, so agents side by side
/// never share one.
const CONTROL_SOCKET_NAME: &str = "control.sock";

/// Every variable the agent reads: name, default and meaning (for `--help`).
const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "CONTROLLER_URL",
        "-",
        "https://host:port of the controller's gRPC endpoint (required)",
    ),
    (
        "TLS_DIR",
        "-",
        "directory of ca.pem, agent.pem, agent-key.pem (what `join` wrote)",
    ),
    (
        "TLS_CA_FILE / TLS_CERT_FILE / TLS_KEY_FILE",
        "TLS_DIR/...",
        "the files one by one",
    ),
    (
        "CONTROL_SOCKET",
        "TLS_DIR/control.sock",
        "where `gha-agent drain`/`undrain` reach it",
    ),
    ("RUNTIME", "docker", "docker or kubernetes"),
    ("MAX_RUNNERS", "5", "runners at once on this host"),
    ("LABELS", "-", "extra labels this host offers"),
    ("AGENT_ARCH", "the host's", "amd64 or arm64"),
    ("AGENT_NAME", "the host name", "name asked for at `join`"),
    (
        "RECONNECT_MIN_BACKOFF / RECONNECT_MAX_BACKOFF",
        "500ms / 30s",
        "reconnect back-off",
    ),
    ("DEBUG", "false", "debug logging (RUST_LOG overrides)"),
    (
        "DOCKER_HOST",
        "unix:///var/run/docker.sock",
        "the engine (docker runtime)",
    ),
    (
        "RUNNER_NETWORK",
        "the default bridge",
        "network runners attach to",
    ),
    (
        "RUNNER_CPUS / RUNNER_MEMORY",
        "unlimited",
        "per-runner limits",
    ),
    (
        "CACHE_VOLUME_SHARING",
        "exclusive",
        "exclusive or shared cache volumes",
    ),
    (
        "CACHE_VOLUME_PREFIX",
        "gha-cache",
        "cache volume name prefix",
    ),
    (
        "RUNNER_DOCKER_SOCKET",
        "false",
        "mount the host's Docker socket (unsafe)",
    ),
    (
        "RUNNER_INIT",
        "true",
        "an init process in runner containers",
    ),
    ("RUNNER_STOP_GRACE", "10s", "SIGTERM to SIGKILL on stop"),
    (
        "STRAY_GRACE",
        "5m",
        "age before another controller's container is removed",
    ),
    (
        "RUNNER_CONTAINER_LABELS / RUNNER_ENV",
        "-",
        "extra labels and variables (key=value,...)",
    ),
    (
        "CONTROLLER_ID",
        "gha-scaler",
        "the controller's id (labels on what runners use)",
    ),
    (
        "INSTALLATION_ID",
        "the CA's fingerprint",
        "ownership label of runner containers",
    ),
    (
        "JOIN_TOKEN / JOIN_TOKEN_FILE",
        "-",
        "enroll at the first start when TLS_DIR holds no identity yet",
    ),
    (
        "RUNNER_SANDBOX",
        "strict",
        "strict, none or privileged (Docker-in-Docker): how runners are confined",
    ),
    (
        "RUNNER_CPUS / RUNNER_MEMORY / RUNNER_PIDS_LIMIT",
        "2 / 7g / 4096",
        "limits of each Docker runner (`unlimited` lifts one)",
    ),
    (
        "CACHE_VOLUME_SCOPE",
        "repository",
        "`owner` shares cache volumes across an owner's repositories",
    ),
    (
        "REGISTRY_MIRROR",
        "-",
        "host[:port][/path]: Docker Hub images are pulled through this mirror",
    ),
    (
        "IMAGE_PULL_ATTEMPTS / IMAGE_PULL_BACKOFF",
        "3 / 5s",
        "pre-pull tries per runner image, wait after the first failure (doubling)",
    ),
    (
        "IMAGE_PULL_TIMEOUT / IMAGE_PULL_CONCURRENCY",
        "10m / 2",
        "bound of one pull attempt, images pulled at once",
    ),
    (
        "IMAGE_PLATFORM_CHECK",
        "true",
        "refuse runner images not built for the runner's architecture",
    ),
    (
        "KUBERNETES_NAMESPACE",
        "the pod's",
        "namespace of runner pods (kubernetes runtime)",
    ),
    (
        "KUBERNETES_* (see deploy/kubernetes)",
        "-",
        "requests, limits, selectors, tolerations, PVCs",
    ),
];

fn env_help() -> String {
    let width = VARIABLES.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    let mut out =
        String::from("Environment variables (also read from ./.env; default in brackets):\n");
    for (name, default, meaning) in VARIABLES {
        out.push_str(&format!("  {name:<width$}  {meaning} [{default}]\n"));
    }
    out
}

/// Which agent `drain`/`undrain` talk to.
#[derive(clap::Args)]
struct Target {
    /// The running agent's control socket.
    #[arg(long, env = "CONTROL_SOCKET")]
    socket: Option<PathBuf>,
    /// The agent's directory (its TLS_DIR): the socket is control.sock in it.
    #[arg(long, env = "TLS_DIR")]
    dir: Option<PathBuf>,
}

impl Target {
    fn socket(self) -> anyhow::Result<PathBuf> {
        match (self.socket, self.dir) {
            (Some(socket), _) => Ok(socket),
            (None, Some(dir)) => Ok(dir.join(CONTROL_SOCKET_NAME)),
            (None, None) => match std::env::var_os("TLS_CERT_FILE") {
                Some(cert) => Ok(agent_dir(std::path::Path::new(&cert)).join(CONTROL_SOCKET_NAME)),
                None => anyhow::bail!(
                    "which agent? pass --dir DIR (the agent's TLS_DIR) or --socket PATH (its CONTROL_SOCKET)"
                ),
            },
        }
    }
}

/// The directory an agent keeps its identity in: that of its certificate.
fn agent_dir(cert_file: &std::path::Path) -> PathBuf {
    match cert_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[derive(Parser)]
#[command(
    name = "gha-agent",
    version,
    about = "Runs ephemeral GitHub Actions runners for a gha-scaler controller",
    after_help = env_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the controller and run runners when told (the default).
    Run,
    /// Ask the running agent to drain: it accepts no new runners and exits when its last runner
    /// finishes. Waits for that and shows the progress (runners are never stopped). The agent
    /// stays drained across restarts until `gha-agent undrain`.
    Drain {
        #[command(flatten)]
        target: Target,
        /// Return as soon as the agent has accepted the request.
        #[arg(long)]
        no_wait: bool,
    },
    /// The running agent's state: connection, runners, last error (from its control socket).
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Let a drained agent accept runners again (also after it was restarted drained).
    Undrain {
        #[command(flatten)]
        target: Target,
    },
    /// Enroll with a one-time join token: writes ca.pem, agent.pem and agent-key.pem into DIR.
    Join {
        /// The controller's gRPC URL, https://host:port.
        #[arg(long, env = "CONTROLLER_URL")]
        controller: String,
        /// The token from `gha-controller agents join-token`.
        #[arg(long, env = "JOIN_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, env = "TLS_DIR")]
        dir: PathBuf,
        /// SHA-256 of the controller's CA certificate, when the token pins none.
        #[arg(long)]
        ca_fingerprint: Option<String>,
        /// Trust this CA certificate file instead of a fingerprint.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// The agent name to ask for (default: the host name).
        #[arg(long, env = "AGENT_NAME")]
        name: Option<String>,
        /// Replace an existing identity in DIR.
        #[arg(long)]
        force: bool,
    },
}

fn environment() -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    if let Ok(iter) = dotenvy::from_path_iter(".env") {
        vars.extend(iter.flatten());
    }
    vars.extend(std::env::vars());
    vars
}

fn init_tracing(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // bollard logs request bodies at debug level, and a container's body holds its JIT config
    // or registration token: never below info, whatever RUST_LOG says.
    let filter = match "bollard=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // Colour codes only for a terminal: a journal, a file or `docker logs` gets plain text.
    // try_init: an agent that enrolls at start has installed it already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init();
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gha-agent".to_owned())
}

async fn shutdown_signal(token: CancellationToken) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        tracing::error!("cannot listen for SIGTERM");
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("agent stopping; runners keep running");
    token.cancel();
}

/// Runs `agent` with the control socket (`gha-agent drain`) beside it.
async fn run_agent<R: agent::runtime::RunnerRuntime>(
    agent: agent::Agent<R>,
    dir: PathBuf,
    vars: &HashMap<String, String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let socket = vars
        .get("CONTROL_SOCKET")
        .filter(|s| !s.trim().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join(CONTROL_SOCKET_NAME));
    let marker = dir.join(agent::control::DRAIN_MARKER);
    let hold = agent.drain_hold();
    if marker.exists() {
        tracing::warn!(marker = %marker.display(),
            "this agent was drained before it stopped: it accepts no runners until `gha-agent undrain`");
        hold.send_replace(true);
    }
    let done = CancellationToken::new();
    let mut bound = false;
    let server = match agent::control::bind(&socket).await {
        Ok(listener) => {
            bound = true;
            tracing::info!(socket = %socket.display(), "control socket ready (gha-agent drain)");
            let controls = agent::control::Controls {
                drain: agent.drain_token(),
                hold: Some(hold),
                marker: Some(marker),
            };
            Some(tokio::spawn(agent::control::serve_controls(
                listener,
                controls,
                agent.status(),
                done.clone(),
            )))
        }
        Err(e @ agent::control::ControlError::InUse { .. }) => {
            tracing::warn!(error = %e, "gha-agent drain will not reach this agent");
            None
        }
        Err(e) => {
            tracing::warn!(
                error = %agent::connection::error_chain(&e),
                "gha-agent drain will not reach this agent; set CONTROL_SOCKET to a path it may create"
            );
            None
        }
    };
    let outcome = agent.run(shutdown).await;
    // Lets a waiting `gha-agent drain` hear `drained` before the process goes.
    done.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    // Never remove a socket another agent serves.
    if bound {
        let _ = std::fs::remove_file(&socket);
    }
    outcome?;
    Ok(())
}

/// The agent's name: the identity its certificate carries (what the controller knows it by).
fn agent_name(config: &AgentConfig) -> anyhow::Result<String> {
    let certs = shared::tls::read_certs(&config.tls.cert_file)
        .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))?;
    let first = certs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate", config.tls.cert_file.display()))?;
    let name = shared::tls::identity_from_cert(first)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.tls.cert_file.display()))?;
    Ok(name.to_string())
}

async fn run() -> anyhow::Result<()> {
    let vars = environment();
    // JOIN_TOKEN / JOIN_TOKEN_FILE with no identity yet in TLS_DIR: enroll first (compose).
    let exists = |p: &std::path::Path| p.exists();
    if let Some(plan) = agent::bootstrap::plan(&vars, exists, &host_name())
        .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))?
    {
        init_tracing(vars.get("DEBUG").is_some_and(|d| d.trim() == "true"));
        let joined = agent::bootstrap::run(&plan)
            .await
            .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))?;
        tracing::info!(agent = %joined.agent_name, dir = %joined.dir.display(), "enrolled");
    }
    let config = AgentConfig::from_env(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(config.debug);
    let dir = agent_dir(&config.tls.cert_file);
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    match config.runtime.as_str() {
        #[cfg(all(feature = "memory-runtime", debug_assertions))]
        "memory" => {
            tracing::warn!("RUNTIME=memory: runners are only simulated (development build)");
            let agent = agent::Agent::new(config, agent::runtime::memory::MemoryRuntime::new);
            run_agent(agent, dir.clone(), &vars, shutdown).await
        }
        "docker" => {
            let settings = DockerSettings::from_env(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = agent_name(&config)?;
            tracing::info!(docker = %settings.host.url(), agent = %name, "Docker runtime");
            let installation = agent::runtime::docker::labels::installation_id(
                vars.get("INSTALLATION_ID").map(String::as_str),
                &config.tls.ca_file,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(%installation, "runner containers are labelled with this installation");
            let agent = agent::Agent::new(config, |sink| {
                DockerRuntime::for_installation(settings, &name, Some(installation), sink)
            });
            run_agent(agent, dir.clone(), &vars, shutdown).await
        }
        "kubernetes" => {
            use agent::runtime::kubernetes::{KubernetesRuntime, settings::KubernetesSettings};
            let settings =
                KubernetesSettings::from_env(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
            let client = agent::runtime::kubernetes::client::client(&vars)
                .await
                .map_err(|e| {
                    anyhow::Error::new(e).context("RUNTIME=kubernetes: no Kubernetes client")
                })?;
            // Pods are labelled with the name the controller knows us by: our certificate's,
            // and with our installation (as the Docker runtime's containers are).
            let name = agent_name(&config)?;
            let installation = agent::runtime::docker::labels::installation_id(
                vars.get("INSTALLATION_ID").map(String::as_str),
                &config.tls.ca_file,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(%installation, "runner pods are labelled with this installation");
            let child = shutdown.child_token();
            let agent = agent::Agent::new(config, |sink| {
                KubernetesRuntime::for_installation(
                    client,
                    settings,
                    name.as_str(),
                    Some(installation),
                    sink,
                    child,
                )
            });
            run_agent(agent, dir.clone(), &vars, shutdown).await
        }
        other => {
            anyhow::bail!("RUNTIME: unknown runtime {other:?} (expected docker or kubernetes)")
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run().await,
        Command::Drain { target, no_wait } => {
            let socket = target.socket()?;
            agent::control::request_drain(&socket, !no_wait, |line| println!("{line}"))
                .await
                .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))
        }
        Command::Status { target } => {
            let socket = target.socket()?;
            let answer = agent::control::request_status(&socket)
                .await
                .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))?;
            print!("{answer}");
            Ok(())
        }
        Command::Undrain { target } => {
            let socket = target.socket()?;
            let answer = agent::control::request_undrain(&socket)
                .await
                .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))?;
            println!("{answer}");
            Ok(())
        }
        Command::Join {
            controller,
            token,
            dir,
            ca_fingerprint,
            ca_file,
            name,
            force,
        } => {
            init_tracing(false);
            let joined = agent::join::join(&agent::join::JoinOptions {
                controller_url: controller.clone(),
                token,
                dir,
                ca_fingerprint,
                ca_file,
                name: name.unwrap_or_else(host_name),
                force,
            })
            .await?;
            println!(
                "enrolled as {}; credentials in {}",
                joined.agent_name,
                joined.dir.display()
            );
            println!(
                "run the agent with:\n  CONTROLLER_URL={controller} TLS_DIR={} gha-agent",
                joined.dir.display()
            );
            Ok(())
        }
    }
}
