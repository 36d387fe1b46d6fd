//! `gha-agent`: parses the command line and configuration, installs logging and signals, and
//! hands over to the library.

use std::collections::HashMap;
use std::path::PathBuf;

use agent::config::AgentConfig;
use agent::runtime::docker::DockerRuntime;
use agent::runtime::docker::config::DockerSettings;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Where the agent listens for `gha-agent drain` unless `CONTROL_SOCKET` says otherwise.
const DEFAULT_CONTROL_SOCKET: &str = "/run/gha-agent/control.sock";

#[derive(Parser)]
#[command(
    name = "gha-agent",
    version,
    about = "Runs ephemeral GitHub Actions runners for a gha-scaler controller"
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
    /// finishes. Waits for that and shows the progress (runners are never stopped).
    Drain {
        /// The running agent's control socket.
        #[arg(long, env = "CONTROL_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Return as soon as the agent has accepted the request.
        #[arg(long)]
        no_wait: bool,
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
    // try_init: an agent that enrolls at start has installed it already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
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
    vars: &HashMap<String, String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let socket = vars
        .get("CONTROL_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET));
    let done = CancellationToken::new();
    let server = match agent::control::bind(&socket).await {
        Ok(listener) => {
            tracing::info!(socket = %socket.display(), "control socket ready (gha-agent drain)");
            Some(tokio::spawn(agent::control::serve(
                listener,
                agent.drain_token(),
                agent.status(),
                done.clone(),
            )))
        }
        Err(e) => {
            tracing::warn!(
                error = %agent::connection::error_chain(&e),
                "gha-agent drain will not reach this agent; set CONTROL_SOCKET to a writable path"
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
    let _ = std::fs::remove_file(&socket);
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
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    match config.runtime.as_str() {
        #[cfg(all(feature = "memory-runtime", debug_assertions))]
        "memory" => {
            tracing::warn!("RUNTIME=memory: runners are only simulated (development build)");
            let agent = agent::Agent::new(config, agent::runtime::memory::MemoryRuntime::new);
            run_agent(agent, &vars, shutdown).await
        }
        "docker" => {
            let settings = DockerSettings::from_env(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = agent_name(&config)?;
            tracing::info!(docker = %settings.host.url(), agent = %name, "Docker runtime");
            let agent = agent::Agent::new(config, |sink| DockerRuntime::new(settings, &name, sink));
            run_agent(agent, &vars, shutdown).await
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
            // Pods are labelled with the name the controller knows us by: our certificate's.
            let name = agent_name(&config)?;
            let child = shutdown.child_token();
            let agent = agent::Agent::new(config, |sink| {
                KubernetesRuntime::new(client, settings, name.as_str(), sink, child)
            });
            run_agent(agent, &vars, shutdown).await
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
        Command::Drain { socket, no_wait } => {
            agent::control::request_drain(&socket, !no_wait, |line| println!("{line}"))
                .await
                .map_err(|e| anyhow::anyhow!("{}", agent::connection::error_chain(&e)))
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
