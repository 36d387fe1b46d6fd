//! `github-sim`: the GitHub simulator as a process, for manual runs and benchmarks.
//!
//! It creates one organization with an owner, its repositories and (optionally) an organization
//! webhook, prints one JSON line with the API URL and the owner's classic token, then serves until
//! Ctrl-C. Jobs are queued with `POST /_sim/jobs {"owner","repo","labels"}`; fake runners use
//! `/_sim/runners/…` (see the `tests::github_sim` docs).

use clap::Parser;
use tests::github_sim::GithubSim;

#[derive(Debug, Parser)]
#[command(about = "A GitHub REST + webhook simulator for gha-scaler tests")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Serve the API under this prefix (`/api/v3` for GitHub Enterprise Server).
    #[arg(long, default_value = "")]
    prefix: String,
    /// The organization to create.
    #[arg(long, default_value = "acme")]
    org: String,
    /// Its owner (a user).
    #[arg(long, default_value = "admin")]
    owner: String,
    /// Repositories of the organization (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "app")]
    repos: Vec<String>,
    /// An organization webhook URL for `workflow_job` and `workflow_run`.
    #[arg(long)]
    hook_url: Option<String>,
    /// The hook's secret.
    #[arg(long, env = "GITHUB_SIM_HOOK_SECRET")]
    hook_secret: Option<String>,
    /// The owner's classic PAT, chosen here (`ghp_` + 36 letters or digits) so that a `.env`
    /// written before the simulator starts can name it; otherwise a random one is printed.
    #[arg(long, env = "GITHUB_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The hook's content type (`json` or `form`).
    #[arg(long, default_value = "json")]
    content_type: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let sim = GithubSim::serve(listener, &args.prefix)?;
    sim.add_org(&args.org, &[&args.owner], &[]);
    for repo in &args.repos {
        sim.add_repo(&args.org, repo, true);
    }
    let scopes = ["repo", "admin:org", "admin:org_hook"];
    let token = match &args.token {
        Some(token) => {
            sim.classic_token_with_value(token, &args.owner, &scopes)
                .map_err(anyhow::Error::msg)?;
            token.clone()
        }
        None => sim.classic_token(&args.owner, &scopes),
    };
    let hook_id = args.hook_url.as_deref().map(|url| {
        sim.add_hook(
            &args.org,
            None,
            url,
            args.hook_secret.as_deref(),
            &args.content_type,
            &["workflow_job", "workflow_run"],
        )
    });
    let ready = serde_json::json!({
        "api_url": sim.api_url(),
        "control_url": format!("http://{}/_sim", sim.addr()),
        "org": args.org,
        "owner": args.owner,
        "token": token,
        "hook_id": hook_id,
    });
    // The one line a driving script reads: where the simulator is and how to call it.
    println!("{ready}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
