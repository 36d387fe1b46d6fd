//! `gha-controller`: parses the command line and configuration, installs logging and signal
//! handling, and hands over to the library.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use controller::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "gha-controller",
    version,
    about = "Autoscales ephemeral GitHub Actions runners from webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the default).
    Serve,
    /// Print the resolved configuration (secrets masked) and every problem.
    CheckConfig,
    /// The built-in PKI.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Agent enrollment.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a CA and the controller's server certificate in DIR.
    Init {
        #[arg(long, env = "TLS_DIR")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses agents use to reach the controller (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Mint a one-time join token for `gha-agent join`.
    JoinToken {
        /// How long the token stays valid (e.g. 15m, 1h, 2d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Fix the agent's name (its identity) instead of letting the agent choose.
        #[arg(long)]
        name: Option<String>,
    },
}

/// The configuration variables: a TOML file named by `CONFIG_FILE` (if any), overridden by a
/// `.env` file in the working directory, overridden by the process environment.
fn environment() -> anyhow::Result<HashMap<String, String>> {
    let mut overrides: HashMap<String, String> = HashMap::new();
    if let Ok(iter) = dotenvy::from_path_iter(".env") {
        overrides.extend(iter.flatten());
    }
    overrides.extend(std::env::vars());
    let mut vars = match overrides.get("CONFIG_FILE").filter(|f| !f.is_empty()) {
        Some(file) => controller::config::file::load(std::path::Path::new(file))?,
        None => HashMap::new(),
    };
    vars.extend(overrides);
    Ok(vars)
}

fn load_config() -> anyhow::Result<Config> {
    Config::from_env(&environment()?).map_err(|e| anyhow::anyhow!("{e}"))
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

async fn shutdown_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; runners keep running");
    token.cancel();
}

async fn serve() -> anyhow::Result<()> {
    let config = load_config()?;
    init_tracing(config.debug);
    let http = tokio::net::TcpListener::bind(("0.0.0.0", config.port))
        .await
        .with_context(|| format!("cannot listen on PORT {}", config.port))?;
    let grpc = tokio::net::TcpListener::bind(("0.0.0.0", config.grpc_port))
        .await
        .with_context(|| format!("cannot listen on GRPC_PORT {}", config.grpc_port))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    controller::run(&config, controller::Listeners { http, grpc }, shutdown).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::CheckConfig => match Config::from_env(&environment()?) {
            Ok(config) => {
                println!("{config:#?}");
                for note in config.notes() {
                    println!("note: {note}");
                }
                println!("configuration OK");
                Ok(())
            }
            Err(errors) => {
                eprint!("{errors}");
                std::process::exit(2);
            }
        },
        Command::Certs {
            command: CertsCommand::Init { dir, sans, force },
        } => {
            let made = controller::pki::init(&dir, &sans, force)?;
            println!("CA certificate:     {}", made.ca_cert.display());
            println!("CA key:             {}", made.ca_key.display());
            println!("server certificate: {}", made.server_cert.display());
            println!("server key:         {}", made.server_key.display());
            println!("CA fingerprint:     {}", made.ca_fingerprint);
            println!("\nStart the controller with TLS_DIR={}", dir.display());
            Ok(())
        }
        Command::Agents {
            command: AgentsCommand::JoinToken { ttl, name },
        } => {
            let config = load_config()?;
            controller::ensure_pki(&config)?;
            let name = name
                .map(|n| shared::ids::AgentName::parse(&n))
                .transpose()?;
            let minted = controller::join_tokens::mint(&config, ttl, name).await?;
            println!("{}", minted.token);
            eprintln!(
                "single use, valid for {}; on the agent host run:\n  gha-agent join --controller https://<controller>:{} --token <token> --dir <dir>",
                humantime::format_duration(ttl),
                config.grpc_port
            );
            Ok(())
        }
    }
}
