//! `gha-controller`: parses the command line and configuration, installs logging and signal
//! handling, and hands over to the library.

use shared::error::chain as error_chain;
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
    about = "Autoscales ephemeral GitHub Actions runners from webhooks",
    after_help = controller::config::describe::env_help()
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
    /// Connected agents (a table; `--json` for the API's answer), or agent enrollment.
    Agents {
        #[command(subcommand)]
        command: Option<AgentsCommand>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The controller's status over the HTTP API (exit 5 when degraded).
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Jobs waiting or running, each with why.
    Jobs {
        /// Only this owner's jobs.
        #[arg(long)]
        owner: Option<String>,
        /// `queued` or `in_progress`.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One job: where it is and, if it waits, why.
    Job {
        id: String,
        /// The owner, when several owners have a job of this id.
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drain an agent: it takes no new runners; its current ones finish.
    Drain {
        agent: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How the operator commands reach the controller.
#[derive(clap::Args)]
struct ClientArgs {
    /// The controller's HTTP address.
    #[arg(
        long,
        env = "GHA_CONTROLLER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// A file holding the API token [default: the API_TOKEN variable].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs one operator command and exits with its code ([`controller::cli::Exit`]).
async fn client(args: ClientArgs, request: controller::cli::Request) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --token-file {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("API_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    let conn = controller::cli::Connection {
        url: args.url,
        token,
    };
    let exit = controller::cli::run(
        &conn,
        &request,
        args.json,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await;
    std::process::exit(exit as i32)
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
    /// Make a new server certificate from the same CA, with more names (agents keep working:
    /// they trust the CA). Restart the controller to serve it.
    Reissue {
        /// The PKI directory [default: TLS_DIR, else STATE_DIR/pki].
        #[arg(long, env = "TLS_DIR")]
        dir: Option<PathBuf>,
        /// A DNS name or IP address agents use to reach the controller (repeatable); added to
        /// the certificate's current names.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Drop the current names (keep only localhost, 127.0.0.1, ::1 and --san).
        #[arg(long)]
        replace: bool,
    },
}

/// What an agent may serve: the operator's decision, not the agent's.
#[derive(clap::Args)]
struct PolicyArgs {
    /// Owners the agent may serve (comma-separated); default: every owner when the controller
    /// serves exactly one, else required (or --all-owners).
    #[arg(long, value_delimiter = ',')]
    owners: Vec<String>,
    /// Let the agent serve every configured owner.
    #[arg(long)]
    all_owners: bool,
    /// Extra labels the agent may offer (comma-separated); others it reports are dropped.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Runners at once the agent may run (it may report fewer) [default: 5].
    #[arg(long)]
    max_runners: Option<u32>,
    /// Life of the agent's certificates; the agent renews at 2/3 of it [default: 30d].
    #[arg(long, value_parser = humantime::parse_duration)]
    cert_validity: Option<Duration>,
}

impl PolicyArgs {
    fn request(self) -> controller::agent_policy::PolicyRequest {
        controller::agent_policy::PolicyRequest {
            owners: self.owners,
            all_owners: self.all_owners,
            labels: self.labels,
            max_runners: self.max_runners,
            cert_validity: self.cert_validity,
        }
    }
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Mint a one-time join token for `gha-agent join`, bound to one agent name.
    JoinToken {
        /// How long the token stays valid (e.g. 15m, 1h, 2d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The agent's name (its identity); default: a generated one, printed.
        #[arg(long)]
        name: Option<String>,
        /// Give the name to a new agent although one is enrolled under it (the old
        /// certificate is refused from then on).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Revoke an agent: its certificate is refused from now on, across restarts.
    Revoke { name: String },
    /// Set what an agent may serve (also one with a certificate from your own CA).
    Policy {
        name: String,
        #[command(flatten)]
        policy: PolicyArgs,
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

fn init_tracing(debug: bool, format: controller::logging::LogFormat) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a terminal: a journal, a file or `docker logs` gets plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        controller::logging::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        controller::logging::LogFormat::Pretty => builder.with_ansi(terminal).init(),
    }
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
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let format = controller::logging::parse(
        environment()?.get("LOG_FORMAT").map(String::as_str),
        terminal,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    init_tracing(config.debug, format);
    for w in &config.warnings {
        tracing::warn!(variable = %w.variable, "{}", w.message);
    }
    let http = tokio::net::TcpListener::bind(("0.0.0.0", config.port))
        .await
        .with_context(|| format!("cannot listen on PORT {}", config.port))?;
    let grpc = tokio::net::TcpListener::bind(("0.0.0.0", config.grpc_port))
        .await
        .with_context(|| format!("cannot listen on GRPC_PORT {}", config.grpc_port))?;
    // compose: a one-time join token for the local agent, on a volume only the two share.
    if let Some(agent) = controller::bootstrap::BootstrapAgent::from_env(&environment()?)? {
        controller::ensure_pki(&config)?;
        match controller::bootstrap::ensure(&config, &agent).await? {
            controller::bootstrap::Outcome::Written => tracing::info!(
                agent = %agent.name, file = %agent.file.display(),
                "wrote a one-time join token for the local agent"
            ),
            controller::bootstrap::Outcome::AlreadyEnrolled => tracing::info!(
                agent = %agent.name,
                "the local agent is enrolled already; no bootstrap token written"
            ),
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    controller::run(&config, controller::Listeners { http, grpc }, shutdown).await?;
    Ok(())
}

fn describe(policy: &controller::agent_policy::AgentPolicy) -> String {
    let owners = match &policy.owners {
        None => "every owner".to_owned(),
        Some(o) => format!(
            "owners {}",
            o.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")
        ),
    };
    let labels = if policy.labels.is_empty() {
        "no extra labels".to_owned()
    } else {
        format!(
            "labels {}",
            policy.labels.iter().cloned().collect::<Vec<_>>().join(",")
        )
    };
    format!(
        "{owners}, {labels}, at most {} runners, certificates for {}",
        policy.max_runners,
        humantime::format_duration(policy.cert_validity())
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::CheckConfig => match Config::from_env(&environment()?) {
            Ok(config) => {
                print!("{}", config.table());
                for warning in &config.warnings {
                    println!("warning: {}: {}", warning.variable, warning.message);
                }
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
        Command::Certs {
            command: CertsCommand::Reissue { dir, sans, replace },
        } => {
            let dir = match dir {
                Some(dir) => dir,
                None => {
                    let vars = environment()?;
                    let state = vars
                        .get("STATE_DIR")
                        .filter(|s| !s.trim().is_empty())
                        .map(PathBuf::from)
                        .unwrap_or_else(|| PathBuf::from(controller::config::DEFAULT_STATE_DIR));
                    state.join("pki")
                }
            };
            let made = controller::pki::reissue(&dir, &sans, replace)
                .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))?;
            println!("server certificate: {}", made.server_cert.display());
            println!("names:              {}", made.names.join(", "));
            println!("CA fingerprint:     {} (unchanged)", made.ca_fingerprint);
            println!("\nRestart the controller to serve it; agents need nothing.");
            Ok(())
        }
        Command::Agents {
            command:
                Some(AgentsCommand::JoinToken {
                    ttl,
                    name,
                    replace,
                    policy,
                }),
            ..
        } => {
            let config = load_config()?;
            controller::ensure_pki(&config)?;
            let name = name
                .map(|n| shared::ids::AgentName::parse(&n))
                .transpose()?;
            let options = controller::join_tokens::MintOptions {
                ttl,
                name,
                replace,
                policy: policy.request(),
            };
            let minted = controller::join_tokens::mint(&config, options).await?;
            println!("{}", minted.token);
            eprintln!(
                "for agent {}, single use, valid for {}; it may serve {}; on the agent host run:\n  gha-agent join --controller https://<controller>:{} --token <token> --dir <dir>",
                minted.agent_name,
                humantime::format_duration(ttl),
                describe(&minted.policy),
                config.grpc_port
            );
            Ok(())
        }
        Command::Agents {
            command: Some(AgentsCommand::Revoke { name }),
            ..
        } => {
            let config = load_config()?;
            let name = shared::ids::AgentName::parse(&name)?;
            let enrolled = controller::join_tokens::revoke(&config, &name).await?;
            println!(
                "agent {name} revoked{}; a running controller ends its session within seconds",
                if enrolled {
                    ""
                } else {
                    " (it was not enrolled with a join token; its name is refused all the same)"
                }
            );
            Ok(())
        }
        Command::Agents {
            command: Some(AgentsCommand::Policy { name, policy }),
            ..
        } => {
            let config = load_config()?;
            let name = shared::ids::AgentName::parse(&name)?;
            let policy =
                controller::join_tokens::set_policy(&config, &name, &policy.request()).await?;
            println!(
                "agent {name} may serve {} (applied when it next connects)",
                describe(&policy)
            );
            Ok(())
        }
        Command::Agents {
            command: None,
            client: args,
        } => client(args, controller::cli::Request::Agents).await,
        Command::Status { client: args } => client(args, controller::cli::Request::Status).await,
        Command::Jobs {
            owner,
            state,
            client: args,
        } => client(args, controller::cli::Request::Jobs { owner, state }).await,
        Command::Job {
            id,
            owner,
            client: args,
        } => client(args, controller::cli::Request::Job { id, owner }).await,
        Command::Drain {
            agent,
            client: args,
        } => client(args, controller::cli::Request::Drain { agent }).await,
    }
}
