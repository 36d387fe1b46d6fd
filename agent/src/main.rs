//! `gha-agent`: parses the command line and configuration, installs logging and signals, and
//! hands over to the library.

use std::collections::HashMap;
use std::path::PathBuf;

use agent::config::AgentConfig;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
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

async fn run() -> anyhow::Result<()> {
    let env = environment();
    let config = AgentConfig::from_env(&env).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(config.debug);
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    match config.runtime.as_str() {
        #[cfg(all(feature = "memory-runtime", debug_assertions))]
        "memory" => {
            tracing::warn!("RUNTIME=memory: runners are only simulated (development build)");
            let agent = agent::Agent::new(config, agent::runtime::memory::MemoryRuntime::new);
            agent.run(shutdown).await?;
            Ok(())
        }
        "kubernetes" => {
            use agent::runtime::kubernetes::{KubernetesRuntime, settings::KubernetesSettings};
            let settings =
                KubernetesSettings::from_env(&env).map_err(|e| anyhow::anyhow!("{e}"))?;
            let client = agent::runtime::kubernetes::client::client(&env)
                .await
                .map_err(|e| {
                    anyhow::Error::new(e).context("RUNTIME=kubernetes: no Kubernetes client")
                })?;
            // Pods are labelled with the name the controller knows us by: our certificate's.
            let cert = shared::tls::read_certs(&config.tls.cert_file)?;
            let name = shared::tls::identity_from_cert(cert.first().ok_or_else(|| {
                anyhow::anyhow!("{}: no certificate", config.tls.cert_file.display())
            })?)?;
            let child = shutdown.child_token();
            let agent = agent::Agent::new(config, |sink| {
                KubernetesRuntime::new(client, settings, name.as_str(), sink, child)
            });
            agent.run(shutdown).await?;
            Ok(())
        }
        "docker" => anyhow::bail!(
            "RUNTIME={}: this build of gha-agent has no {} runtime yet",
            config.runtime,
            config.runtime
        ),
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
