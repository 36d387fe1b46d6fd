//! The controller's configuration, parsed once from a map of environment variables.
//!
//! Parsing is a pure function of a string map (tests pass a map, `main` passes the process
//! environment merged with `.env`); every problem is collected and names its variable.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod database;
pub mod describe;
pub mod file;
pub mod ha;
pub mod owners;
pub mod schedule;
mod vars;
pub mod warm;

pub use self::owners::{OwnerAuth, OwnerConfig, Secret};
use self::vars::Vars;
use shared::command::{ImageFlavor, ImageLaunch};

/// Where the gRPC endpoint's TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA's key, needed only to sign agents' certificates at enrollment (built-in PKI).
    pub ca_key_file: Option<PathBuf>,
    /// The files live in the built-in PKI directory and are created at start if missing.
    pub auto_init_dir: Option<PathBuf>,
}

/// How runners prove themselves to GitHub (`RUNNER_REGISTRATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationMode {
    /// A just-in-time config per runner (official runner image); the default.
    Jit,
    /// A registration token (myoung34-style images).
    Token,
}

/// What every runner gets unless its owner says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerDefaults {
    /// `RUNNER_IMAGE`.
    pub image: String,
    /// `RUNNER_IMAGE_FLAVOR` and `RUNNER_COMMAND`: how the agent starts `image`.
    pub launch: ImageLaunch,
    /// `RUNNER_TIMEOUT`: a runner older than this is stopped.
    pub timeout: Duration,
    /// `CACHE_VOLUMES`.
    pub cache_volumes: bool,
    /// `KUBERNETES_PVCS`.
    pub kubernetes_pvcs: bool,
    /// `LABELS`: labels every runner carries.
    pub labels: Vec<String>,
    pub registration: RegistrationMode,
    /// `RUNNER_IDLE_GRACE`: an idle runner with no demand it could serve is stopped after this.
    pub idle_grace: Duration,
    /// `WARM_RUNNER_MAX_AGE`: a warm (idle, kept) runner older than this is replaced, so a
    /// long-idle registration never goes stale.
    pub warm_max_age: Duration,
    /// `STRAY_GRACE`: a runner an agent reports that this controller does not know (or knows
    /// as finished) is stopped once it has been seen for this long.
    pub stray_grace: Duration,
}

/// The HTTP edge's limits (see [`crate::http::edge::serve`] and the webhook intake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_HEADER_TIMEOUT`: a connection that has not sent a full request head by then is
    /// closed (slowloris).
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT`: a webhook body not received completely by then is answered 408.
    pub body_timeout: Duration,
    /// `WEBHOOK_MAX_BODY`: the largest webhook body accepted (bytes; `512KiB`, `1MiB` work).
    pub webhook_max_body: usize,
    /// `WEBHOOK_CONCURRENCY`: deliveries handled at once; beyond, `/webhook` answers 503.
    pub webhook_concurrency: usize,
    /// `HTTP_MAX_CONNECTIONS`: open HTTP connections; beyond, new ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            webhook_max_body: DEFAULT_WEBHOOK_MAX_BODY,
            webhook_concurrency: 64,
            max_connections: 1024,
        }
    }
}

/// The default `WEBHOOK_MAX_BODY`: 1 MiB. GitHub caps payloads at 25 MB, but the events we act
/// on are far smaller: the largest of GitHub's published workflow payloads
/// (`workflow_run.in_progress.wrapped.json`) is 23.7 KB, so this leaves 40x headroom for long
/// commit messages and form encoding while a flood of huge bodies costs little memory.
pub const DEFAULT_WEBHOOK_MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HTTP port for webhooks and the REST API (`PORT`).
    pub port: u16,
    /// gRPC port for agents (`GRPC_PORT`).
    pub grpc_port: u16,
    pub tls: TlsConfig,
    /// Extra subject alternative names for an auto-created server certificate (`TLS_SANS`).
    pub tls_sans: Vec<String>,
    /// Durable state (`STATE_DIR`).
    pub state_dir: PathBuf,
    /// `DATABASE_URL`: the PostgreSQL store and agent directory instead of SQLite in `STATE_DIR`.
    pub database_url: Option<database::DatabaseUrl>,
    /// Leader election among replicas on one PostgreSQL (`REPLICA_ID`, `ADVERTISE_GRPC_URL`,
    /// `LEADER_LEASE`).
    pub ha: ha::HaConfig,
    /// Bearer token for `/api/v1` (`API_TOKEN`); also shows `/status` in full.
    pub api_token: Option<Secret>,
    /// Read-only bearer token that shows `/status` in full (`STATUS_TOKEN`).
    pub status_token: Option<Secret>,
    /// Bearer token `/metrics` requires when set (`METRICS_TOKEN`).
    pub metrics_token: Option<Secret>,
    /// `RETENTION`: delivery ids, completed jobs and finished runners are forgotten after this.
    pub retention: Duration,
    pub http: HttpLimits,
    /// How often agents must send a heartbeat (`AGENT_HEARTBEAT_INTERVAL`, seconds or `10s`).
    pub heartbeat_interval: Duration,
    /// Silence after which an agent counts as dead (`AGENT_HEARTBEAT_TIMEOUT`).
    pub heartbeat_timeout: Duration,
    /// Marks every object this controller creates (`CONTROLLER_ID`).
    pub controller_id: String,
    /// `DEBUG=true` turns on debug logging.
    pub debug: bool,
    /// The owners served, in configuration order.
    pub owners: Vec<OwnerConfig>,
    pub runners: RunnerDefaults,
    /// `GITHUB_API_URL`: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub github_api_url: String,
    /// `ALLOW_UNSIGNED_WEBHOOKS=true`: accept webhooks of owners without a secret.
    pub allow_unsigned_webhooks: bool,
    /// `WEBHOOK_URL`: the public URL of `/webhook`, for automatic webhook setup.
    pub webhook_url: Option<String>,
    /// `RECONCILE_INTERVAL`: how often queued runs are listed through the REST API to recover
    /// lost webhooks (`0` turns it off).
    pub reconcile_interval: Option<Duration>,
    /// `API_BACKGROUND_SHARE`: percent (0–100, default 30) of each GitHub quota window that
    /// background work (reconciler, stale-job checks, sweeps, webhook setup) may spend.
    pub api_background_share: u8,
    pub containment: Containment,
    /// Settings that do not stop the start but are probably a mistake (a removed Go-tool
    /// variable, say); `check-config` prints them and `serve` logs them.
    pub warnings: Vec<ConfigProblem>,
}

/// How failures are contained and leftovers cleaned up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containment {
    /// `BACKOFF_INITIAL`: the first wait after a failed start (doubled per failure in a row).
    pub backoff_initial: Duration,
    /// `BACKOFF_MAX`: the longest wait after failed starts.
    pub backoff_max: Duration,
    /// `CIRCUIT_PROBE_INTERVAL`: after an error retrying cannot fix (GitHub 401/403/404/422),
    /// the owner's registrations wait this long before one probe.
    pub circuit_probe: Duration,
    /// `RUNNER_BOOT_WINDOW`: a runner that ends on its own without a job sooner than this crashed.
    pub boot_window: Duration,
    /// `STALE_JOB_AGE`: a job queued longer than this is re-checked at GitHub (again every this long).
    pub stale_job_age: Duration,
    /// `OFFLINE_RUNNER_GRACE`: an offline registration of ours with no live runner is deleted
    /// after this; also how often registrations are swept.
    pub offline_runner_grace: Duration,
    /// `REDELIVERY_INTERVAL`: how often the recent deliveries of our webhooks are read to
    /// redeliver the failed ones (`0` turns it off).
    pub redelivery_interval: Option<Duration>,
    /// `RUNNER_REGISTER_TIMEOUT`: a runner whose container runs but that has not come online at
    /// GitHub within this is stopped and its registration deleted.
    pub register_timeout: Duration,
}

impl Config {
    /// The owner called `name`, compared case-insensitively.
    pub fn owner(&self, name: &str) -> Option<&OwnerConfig> {
        let wanted = shared::owner::Owner::new(name);
        self.owners.iter().find(|o| o.owner() == wanted)
    }

    /// Groups of owners (two or more) that verify webhooks with one and the same secret, e.g.
    /// because their own `OWNER_<NAME>_WEBHOOK_SECRET` is unset and they fall back to
    /// `WEBHOOK_SECRET`. A delivery signed with such a secret cannot be told apart by owner.
    pub fn shared_webhook_secrets(&self) -> Vec<Vec<String>> {
        let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
        for o in &self.owners {
            let Some(secret) = &o.webhook_secret else {
                continue;
            };
            match groups.iter_mut().find(|(s, _)| *s == secret.expose()) {
                Some((_, names)) => names.push(o.name.clone()),
                None => groups.push((secret.expose(), vec![o.name.clone()])),
            }
        }
        groups
            .into_iter()
            .map(|(_, names)| names)
            .filter(|names| names.len() > 1)
            .collect()
    }
}

/// One configuration problem, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: String,
    pub message: String,
}

/// Every problem found; start-up refuses with all of them listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  {}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_GRPC_PORT: u16 = 9443;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gha-scaler";

pub const DEFAULT_RUNNER_IMAGE: &str = "myoung34/github-runner:ubuntu-noble";
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

impl Config {
    /// What `check-config` should tell about a valid configuration: settings that are ignored
    /// or can only be checked against GitHub (check-config makes no GitHub calls).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for o in &self.owners {
            let var = format!("{}RUNNER_GROUP", owners::env_prefix(&o.name));
            match (&o.runner_group, o.all_repos && o.repo_name.is_none()) {
                (Some(group), false) => notes.push(format!(
                    "{var} (or RUNNER_GROUP) = {group:?} is ignored for owner {}: it registers \
                     repository-level runners, and repositories have only the default group",
                    o.name
                )),
                (Some(group), true) => notes.push(format!(
                    "{var} (or RUNNER_GROUP) = {group:?}: checked at start-up against GET \
                     /orgs/{}/actions/runner-groups (an unknown name is logged and shown on every \
                     waiting job, never replaced by group 1); ignored if {} is a user account",
                    o.name, o.name
                )),
                (None, true) => notes.push(format!(
                    "owner {}: organization runners if GET /users/{} says Organization, \
                     repository runners if it is a user account (decided at start-up)",
                    o.name, o.name
                )),
                (None, false) => {}
            }
        }
        let dotcom = url::Url::parse(&self.github_api_url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.eq_ignore_ascii_case("api.github.com"))
            })
            .unwrap_or(false);
        if !dotcom && self.runners.registration == RegistrationMode::Jit {
            notes.push(format!(
                "GITHUB_API_URL={} is not github.com: JIT runners need GitHub Enterprise Server 3.10+; \
                 on a 404 from generate-jitconfig the controller switches to registration tokens \
                 (shown in /status under registration); set RUNNER_REGISTRATION=token to choose that now",
                self.github_api_url
            ));
        }
        notes
    }

    pub fn from_env(map: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
        let mut vars = Vars::new(map);
        let port = vars.port("PORT", DEFAULT_PORT);
        let grpc_port = vars.port("GRPC_PORT", DEFAULT_GRPC_PORT);
        if port == grpc_port && port != 0 {
            vars.problem(
                "GRPC_PORT",
                format!(
                    "is {grpc_port}, the same as PORT: webhooks (HTTP) and agents (gRPC) need                      two ports (defaults PORT={DEFAULT_PORT}, GRPC_PORT={DEFAULT_GRPC_PORT})"
                ),
            );
        }
        removed_variables(&mut vars);
        let state_dir = PathBuf::from(vars.get("STATE_DIR").unwrap_or(DEFAULT_STATE_DIR));
        let database_url = match vars.get("DATABASE_URL") {
            None => None,
            Some(value) => match database::DatabaseUrl::parse(value) {
                Ok(url) => Some(url),
                Err(problem) => {
                    vars.problem("DATABASE_URL", problem);
                    None
                }
            },
        };
        let ha = ha::parse(&mut vars);
        let tls = tls_config(&mut vars, &state_dir);
        let mut tls_sans = vars.list("TLS_SANS");
        let api_token = token(&mut vars, "API_TOKEN");
        let status_token = token(&mut vars, "STATUS_TOKEN");
        let metrics_token = token(&mut vars, "METRICS_TOKEN");
        let retention = vars.duration("RETENTION", Duration::from_secs(7 * 24 * 3600));
        if retention < Duration::from_secs(3 * 24 * 3600) {
            // GitHub redelivers deliveries of the past 3 days; a shorter memory would let a
            // redelivery count twice.
            vars.problem(
                "RETENTION",
                "must be at least 3 days (72h): GitHub can redeliver a webhook up to 3 days later",
            );
        }
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            header_timeout: vars.duration("HTTP_HEADER_TIMEOUT", defaults.header_timeout),
            body_timeout: vars.duration("HTTP_BODY_TIMEOUT", defaults.body_timeout),
            webhook_max_body: vars.bytes("WEBHOOK_MAX_BODY", defaults.webhook_max_body),
            webhook_concurrency: vars.count("WEBHOOK_CONCURRENCY", defaults.webhook_concurrency),
            max_connections: vars.count("HTTP_MAX_CONNECTIONS", defaults.max_connections),
        };
        let heartbeat_interval = vars.duration("AGENT_HEARTBEAT_INTERVAL", Duration::from_secs(10));
        let heartbeat_timeout = vars.duration("AGENT_HEARTBEAT_TIMEOUT", heartbeat_interval * 3);
        if heartbeat_timeout <= heartbeat_interval {
            vars.problem(
                "AGENT_HEARTBEAT_TIMEOUT",
                "must be longer than AGENT_HEARTBEAT_INTERVAL (3x is a good choice)",
            );
        }
        let controller_id = vars.get("CONTROLLER_ID").unwrap_or("gha-scaler").to_owned();
        let debug = vars.bool("DEBUG", false);
        // The seed chose the runtime on the controller; here each agent brings its own.
        if let Some(runtime) = vars.get("RUNTIME")
            && !matches!(
                runtime.to_ascii_lowercase().as_str(),
                "docker" | "kubernetes"
            )
        {
            vars.problem(
                "RUNTIME",
                format!("{runtime:?} is not docker or kubernetes"),
            );
        }
        let allow_unsigned_webhooks = vars.bool("ALLOW_UNSIGNED_WEBHOOKS", false);
        let owners = owners::parse(&mut vars, allow_unsigned_webhooks);
        let registration = match vars
            .get("RUNNER_REGISTRATION")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("jit") => RegistrationMode::Jit,
            Some("token") => RegistrationMode::Token,
            Some(other) => {
                vars.problem(
                    "RUNNER_REGISTRATION",
                    format!("{other:?} is not jit or token"),
                );
                RegistrationMode::Jit
            }
        };
        let launch = image_launch(&mut vars, registration);
        let image = vars
            .get("RUNNER_IMAGE")
            .unwrap_or(DEFAULT_RUNNER_IMAGE)
            .to_owned();
        if let Err(bad) = shared::image::pinned_digest(&image) {
            vars.problem("RUNNER_IMAGE", bad.to_string());
        }
        let runners = RunnerDefaults {
            launch,
            image,
            timeout: vars.duration("RUNNER_TIMEOUT", Duration::from_secs(3600)),
            cache_volumes: vars.bool("CACHE_VOLUMES", true),
            kubernetes_pvcs: vars.bool("KUBERNETES_PVCS", false),
            labels: vars.list("LABELS"),
            registration,
            idle_grace: vars.duration("RUNNER_IDLE_GRACE", Duration::from_secs(300)),
            warm_max_age: vars.duration("WARM_RUNNER_MAX_AGE", Duration::from_secs(3600)),
            stray_grace: vars.duration("STRAY_GRACE", Duration::from_secs(120)),
        };
        let github_api_url = vars
            .get("GITHUB_API_URL")
            .unwrap_or(DEFAULT_GITHUB_API_URL)
            .trim_end_matches('/')
            .to_owned();
        if !(github_api_url.starts_with("https://") || github_api_url.starts_with("http://")) {
            vars.problem(
                "GITHUB_API_URL",
                format!("{github_api_url:?} is not an http(s) URL"),
            );
        }
        let webhook_url = vars.get("WEBHOOK_URL").map(str::to_owned);
        if let Some(url) = &webhook_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            vars.problem("WEBHOOK_URL", format!("{url:?} is not an http(s) URL"));
        }
        // The host GitHub reaches the controller by is a name agents are likely to use too.
        if let Some(host) = webhook_url.as_deref().and_then(webhook_host)
            && !tls_sans.iter().any(|s| s.eq_ignore_ascii_case(&host))
        {
            tls_sans.push(host);
        }
        let reconcile_interval = match vars.get("RECONCILE_INTERVAL") {
            Some("0" | "off" | "false") => None,
            _ => Some(vars.duration("RECONCILE_INTERVAL", Duration::from_secs(300))),
        };
        let api_background_share = match vars.get("API_BACKGROUND_SHARE") {
            None => 30,
            Some(v) => match v.trim_end_matches('%').trim().parse::<u8>() {
                Ok(n) if n <= 100 => n,
                _ => {
                    vars.problem(
                        "API_BACKGROUND_SHARE",
                        format!("{v:?} is not a percentage from 0 to 100"),
                    );
                    30
                }
            },
        };
        let containment = Containment {
            backoff_initial: vars.duration("BACKOFF_INITIAL", Duration::from_secs(10)),
            backoff_max: vars.duration("BACKOFF_MAX", Duration::from_secs(300)),
            circuit_probe: vars.duration("CIRCUIT_PROBE_INTERVAL", Duration::from_secs(300)),
            boot_window: vars.duration("RUNNER_BOOT_WINDOW", Duration::from_secs(120)),
            stale_job_age: vars.duration("STALE_JOB_AGE", Duration::from_secs(600)),
            offline_runner_grace: vars.duration("OFFLINE_RUNNER_GRACE", Duration::from_secs(600)),
            redelivery_interval: match vars.get("REDELIVERY_INTERVAL") {
                Some("0" | "off" | "false") => None,
                _ => Some(vars.duration("REDELIVERY_INTERVAL", Duration::from_secs(120))),
            },
            register_timeout: vars.duration("RUNNER_REGISTER_TIMEOUT", Duration::from_secs(600)),
        };
        if containment.backoff_initial > containment.backoff_max {
            vars.problem(
                "BACKOFF_INITIAL",
                format!(
                    "{:?} is longer than BACKOFF_MAX ({:?})",
                    containment.backoff_initial, containment.backoff_max
                ),
            );
        }
        let warnings = vars.take_warnings();
        vars.finish(Config {
            warnings,
            port,
            grpc_port,
            tls,
            tls_sans,
            state_dir,
            database_url,
            ha,
            api_token,
            status_token,
            metrics_token,
            retention,
            http,
            heartbeat_interval,
            heartbeat_timeout,
            controller_id,
            debug,
            owners,
            runners,
            github_api_url,
            allow_unsigned_webhooks,
            webhook_url,
            reconcile_interval,
            api_background_share,
            containment,
        })
    }
}

/// Variables of the Go tool this replaces that mean nothing here: a warning each, naming what
/// replaces it (the seed README's "Migration Steps" removed `MIN_RUNNERS`).
const REMOVED_VARIABLES: &[(&str, &str)] = &[(
    "MIN_RUNNERS",
    "is not read: the Go tool removed it when scaling became webhook-driven, and so does \
     gha-scaler; a runner starts per queued job (limit it with MAX_RUNNERS) and RECONCILE_INTERVAL \
     recovers jobs whose webhook was lost; to keep idle runners ready, use MIN_IDLE_RUNNERS",
)];

fn removed_variables(vars: &mut Vars<'_>) {
    for (name, why) in REMOVED_VARIABLES {
        if vars.get(name).is_some() {
            vars.warn(*name, *why);
        }
    }
}

/// The host of `WEBHOOK_URL` (a DNS name or an IP address without brackets).
fn webhook_host(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    match url.host()? {
        url::Host::Domain(d) => Some(d.to_ascii_lowercase()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// `RUNNER_IMAGE_FLAVOR` (`auto`) and `RUNNER_COMMAND` (a JSON array of strings, or words
/// separated by spaces). A command is what starts a custom image, so it is refused with an
/// explicit other flavor (`auto` with a command means `custom`); the official image has no
/// entry script that reads a registration token.
fn image_launch(vars: &mut Vars<'_>, registration: RegistrationMode) -> ImageLaunch {
    let mut flavor = match vars.get("RUNNER_IMAGE_FLAVOR") {
        None => ImageFlavor::Auto,
        Some(v) => ImageFlavor::parse(v).unwrap_or_else(|| {
            vars.problem(
                "RUNNER_IMAGE_FLAVOR",
                format!("{v:?} is not auto, official, myoung34 or custom"),
            );
            ImageFlavor::Auto
        }),
    };
    let command = match vars.get("RUNNER_COMMAND") {
        None => Vec::new(),
        Some(v) => match parse_command(v) {
            Ok(c) => c,
            Err(why) => {
                vars.problem("RUNNER_COMMAND", why);
                Vec::new()
            }
        },
    };
    match (flavor, command.is_empty()) {
        (ImageFlavor::Auto, false) => flavor = ImageFlavor::Custom,
        (ImageFlavor::Custom, true) => vars.problem(
            "RUNNER_COMMAND",
            "is required with RUNNER_IMAGE_FLAVOR=custom (the program that starts the runner)",
        ),
        (ImageFlavor::Official | ImageFlavor::Myoung34, false) => vars.problem(
            "RUNNER_COMMAND",
            format!(
                "is only for RUNNER_IMAGE_FLAVOR=custom; the {flavor} image is started the way \
                 it is built"
            ),
        ),
        _ => {}
    }
    if flavor == ImageFlavor::Official && registration == RegistrationMode::Token {
        vars.problem(
            "RUNNER_REGISTRATION",
            "token cannot start the official runner image (it has no entry script that reads \
             a registration token); use jit",
        );
    }
    ImageLaunch { flavor, command }
}

/// `["/opt/runner/start", "--once"]` or `/opt/runner/start --once`.
pub fn parse_command(value: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> = if value.trim_start().starts_with('[') {
        serde_json::from_str(value)
            .map_err(|e| format!("{value:?} is not a JSON array of strings: {e}"))?
    } else {
        value.split_whitespace().map(str::to_owned).collect()
    };
    match words.first() {
        Some(program) if !program.trim().is_empty() => Ok(words),
        _ => Err(format!("{value:?} names no program")),
    }
}

/// A bearer token variable: at least 16 characters when set.
fn token(vars: &mut Vars<'_>, name: &'static str) -> Option<Secret> {
    let token = vars.get(name).map(Secret::new);
    if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        vars.problem(
            name,
            "is shorter than 16 characters; use a long random value",
        );
    }
    token
}

/// `TLS_CA_FILE`/`TLS_CERT_FILE`/`TLS_KEY_FILE` (own PKI), else the files of `TLS_DIR`,
/// else the built-in PKI under `STATE_DIR/pki`, created at first start.
fn tls_config(vars: &mut Vars<'_>, state_dir: &std::path::Path) -> TlsConfig {
    let explicit = [
        ("TLS_CA_FILE", vars.get("TLS_CA_FILE")),
        ("TLS_CERT_FILE", vars.get("TLS_CERT_FILE")),
        ("TLS_KEY_FILE", vars.get("TLS_KEY_FILE")),
    ];
    let ca_key_file = vars.get("TLS_CA_KEY_FILE").map(PathBuf::from);
    if explicit.iter().any(|(_, v)| v.is_some()) {
        for (name, value) in explicit {
            if value.is_none() {
                vars.problem(
                    name,
                    "must be set together with TLS_CA_FILE, TLS_CERT_FILE and TLS_KEY_FILE",
                );
            }
        }
        return TlsConfig {
            ca_file: explicit[0].1.unwrap_or_default().into(),
            cert_file: explicit[1].1.unwrap_or_default().into(),
            key_file: explicit[2].1.unwrap_or_default().into(),
            ca_key_file,
            auto_init_dir: None,
        };
    }
    let (dir, auto) = match vars.get("TLS_DIR") {
        Some(dir) => (PathBuf::from(dir), false),
        None => (state_dir.join("pki"), true),
    };
    use crate::pki::{CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE};
    TlsConfig {
        ca_file: dir.join(CA_CERT_FILE),
        cert_file: dir.join(SERVER_CERT_FILE),
        key_file: dir.join(SERVER_KEY_FILE),
        ca_key_file: ca_key_file.or_else(|| Some(dir.join(CA_KEY_FILE))),
        auto_init_dir: auto.then_some(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The seed README's single-repository `.env`.
    const SEED_SINGLE: &[(&str, &str)] = &[
        ("GITHUB_TOKEN", "ghp_abc"),
        ("REPO_OWNER", "octo"),
        ("REPO_NAME", "hello"),
        ("WEBHOOK_SECRET", "s3cret"),
        ("MAX_RUNNERS", "5"),
        ("PORT", "8080"),
        ("DEBUG", "false"),
    ];

    fn with(base: &[(&str, &str)], extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m = map(base);
        m.extend(map(extra));
        m
    }

    #[test]
    fn check_config_says_where_runner_group_is_ignored_and_how_ghes_is_handled() {
        let c = Config::from_env(&map(&[
            ("OWNERS", "acme,bob"),
            ("GITHUB_TOKEN", "t"),
            ("WEBHOOK_SECRET", "s"),
            ("OWNER_ACME_ALL_REPOS", "true"),
            ("OWNER_ACME_RUNNER_GROUP", "linux-pool"),
            ("OWNER_BOB_REPO_NAME", "tool"),
            ("OWNER_BOB_RUNNER_GROUP", "7"),
            ("GITHUB_API_URL", "https://ghe.example.com/api/v3"),
        ]))
        .unwrap();
        let notes = c.notes().join("\n");
        assert!(
            notes.contains("OWNER_BOB_RUNNER_GROUP (or RUNNER_GROUP) = \"7\" is ignored"),
            "{notes}"
        );
        assert!(
            notes.contains(
                "OWNER_ACME_RUNNER_GROUP (or RUNNER_GROUP) = \"linux-pool\": checked at start-up"
            ),
            "{notes}"
        );
        assert!(notes.contains("RUNNER_REGISTRATION=token"), "{notes}");
    }

    #[test]
    fn the_seed_single_repository_env_starts_unchanged() {
        let c = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.grpc_port, 9443);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(
            c.tls.auto_init_dir,
            Some(PathBuf::from("/var/lib/gha-scaler/pki"))
        );
        assert_eq!(c.runners.image, "myoung34/github-runner:ubuntu-noble");
        assert_eq!(c.runners.timeout, Duration::from_secs(3600));
        assert!(c.runners.cache_volumes);
        assert!(!c.runners.kubernetes_pvcs);
        assert_eq!(c.github_api_url, "https://api.github.com");
        let o = c.owner("OCTO").unwrap();
        assert_eq!(o.auth, OwnerAuth::Token(Secret::new("ghp_abc")));
        assert!(o.serves_repo("Hello") && !o.serves_repo("other"));
        assert_eq!(o.max_runners, 5);
    }

    #[test]
    fn runner_image_flavor_and_command() {
        let c = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert_eq!(c.runners.image, DEFAULT_RUNNER_IMAGE);
        assert_eq!(c.runners.launch, ImageLaunch::default(), "auto, no command");

        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[("RUNNER_COMMAND", r#"["/opt/runner/start", "--once"]"#)],
        ))
        .unwrap();
        assert_eq!(
            c.runners.launch,
            ImageLaunch {
                flavor: ImageFlavor::Custom,
                command: vec!["/opt/runner/start".into(), "--once".into()],
            },
            "a command with auto means a custom image"
        );
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("RUNNER_IMAGE_FLAVOR", "MyOung34"),
                ("RUNNER_REGISTRATION", "token"),
            ],
        ))
        .unwrap();
        assert_eq!(c.runners.launch.flavor, ImageFlavor::Myoung34);
        let pinned = format!("ghcr.io/actions/actions-runner@sha256:{}", "ab".repeat(32));
        let c = Config::from_env(&with(SEED_SINGLE, &[("RUNNER_IMAGE", pinned.as_str())])).unwrap();
        assert_eq!(c.runners.image, pinned, "a digest pin is kept as it is");

        for (extra, variable, says) in [
            (
                &[("RUNNER_IMAGE_FLAVOR", "ubuntu")][..],
                "RUNNER_IMAGE_FLAVOR",
                "not auto, official, myoung34 or custom",
            ),
            (
                &[("RUNNER_IMAGE_FLAVOR", "custom")][..],
                "RUNNER_COMMAND",
                "required",
            ),
            (
                &[
                    ("RUNNER_IMAGE_FLAVOR", "official"),
                    ("RUNNER_COMMAND", "/run.sh"),
                ][..],
                "RUNNER_COMMAND",
                "only for RUNNER_IMAGE_FLAVOR=custom",
            ),
            (
                &[("RUNNER_COMMAND", "[1, 2]")][..],
                "RUNNER_COMMAND",
                "JSON array",
            ),
            (
                &[
                    ("RUNNER_IMAGE_FLAVOR", "official"),
                    ("RUNNER_REGISTRATION", "token"),
                ][..],
                "RUNNER_REGISTRATION",
                "use jit",
            ),
            (
                &[("RUNNER_IMAGE", "ghcr.io/actions/actions-runner@sha256:abc")][..],
                "RUNNER_IMAGE",
                "malformed digest",
            ),
        ] {
            let err = Config::from_env(&with(SEED_SINGLE, extra)).unwrap_err();
            assert!(
                err.0
                    .iter()
                    .any(|p| p.variable == variable && p.message.contains(says)),
                "{extra:?}: {err}"
            );
        }
    }

    #[test]
    fn the_seed_multi_owner_env_starts_unchanged() {
        let c = Config::from_env(&map(&[
            ("OWNERS", "mycompany,personal,client-org"),
            ("OWNER_MYCOMPANY_GITHUB_TOKEN", "ghp_company"),
            ("OWNER_MYCOMPANY_ALL_REPOS", "true"),
            ("OWNER_MYCOMPANY_WEBHOOK_SECRET", "company_secret"),
            ("OWNER_MYCOMPANY_MAX_RUNNERS", "15"),
            ("OWNER_MYCOMPANY_LABELS", "company,production"),
            ("OWNER_PERSONAL_GITHUB_TOKEN", "ghp_personal"),
            ("OWNER_PERSONAL_REPO_NAME", "my-project"),
            ("OWNER_PERSONAL_WEBHOOK_SECRET", "personal_secret"),
            ("OWNER_PERSONAL_MAX_RUNNERS", "5"),
            ("OWNER_CLIENT_ORG_GITHUB_TOKEN", "ghp_client"),
            ("OWNER_CLIENT_ORG_ALL_REPOS", "true"),
            ("OWNER_CLIENT_ORG_WEBHOOK_SECRET", "client_secret"),
        ]))
        .unwrap();
        assert_eq!(c.owners.len(), 3);
        let company = c.owner("mycompany").unwrap();
        assert_eq!(company.max_runners, 15);
        assert_eq!(company.labels, vec!["company", "production"]);
        let client = c.owner("Client-Org").unwrap();
        assert!(client.all_repos);
        assert_eq!(client.max_runners, 5, "default MAX_RUNNERS");
        assert_eq!(client.webhook_secret, Some(Secret::new("client_secret")));
    }

    #[test]
    fn a_missing_webhook_secret_is_refused_unless_explicitly_allowed() {
        let base = [
            ("GITHUB_TOKEN", "t"),
            ("REPO_OWNER", "octo"),
            ("ALL_REPOS", "true"),
        ];
        let err = Config::from_env(&map(&base)).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.variable == "WEBHOOK_SECRET"
                    && p.message.contains("ALLOW_UNSIGNED_WEBHOOKS")),
            "a legacy REPO_OWNER set-up is told the variable it uses: {err}"
        );
        let c = Config::from_env(&with(&base, &[("ALLOW_UNSIGNED_WEBHOOKS", "true")])).unwrap();
        assert!(c.allow_unsigned_webhooks);
        assert_eq!(c.owners[0].webhook_secret, None);
    }

    #[test]
    fn app_auth_is_parsed_per_owner() {
        let c = Config::from_env(&map(&[
            ("OWNERS", "acme"),
            ("OWNER_ACME_APP_ID", "1234"),
            ("OWNER_ACME_APP_PRIVATE_KEY_FILE", "/keys/acme.pem"),
            ("OWNER_ACME_ALL_REPOS", "true"),
            ("OWNER_ACME_RUNNER_GROUP", "linux-pool"),
            ("WEBHOOK_SECRET", "shared"),
        ]))
        .unwrap();
        let acme = c.owner("acme").unwrap();
        assert_eq!(
            acme.auth,
            OwnerAuth::App {
                app_id: "1234".into(),
                private_key_file: PathBuf::from("/keys/acme.pem"),
                installation_id: None
            }
        );
        assert_eq!(acme.runner_group.as_deref(), Some("linux-pool"));
        assert_eq!(
            acme.webhook_secret,
            Some(Secret::new("shared")),
            "falls back to WEBHOOK_SECRET"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_variable() {
        let err = Config::from_env(&map(&[
            ("PORT", "eighty"),
            ("GRPC_PORT", "70000"),
            ("TLS_CA_FILE", "/ca.pem"),
            ("DEBUG", "maybe"),
            ("AGENT_HEARTBEAT_INTERVAL", "0"),
            ("OWNERS", "a,b"),
            ("OWNER_A_GITHUB_TOKEN", "t"),
            ("OWNER_A_MAX_RUNNERS", "-1"),
            ("RUNNER_REGISTRATION", "magic"),
        ]))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        for v in [
            "PORT",
            "GRPC_PORT",
            "TLS_CERT_FILE",
            "TLS_KEY_FILE",
            "DEBUG",
            "AGENT_HEARTBEAT_INTERVAL",
            "OWNER_A_MAX_RUNNERS",
            "OWNER_A_REPO_NAME",
            "OWNER_A_WEBHOOK_SECRET",
            "OWNER_B_GITHUB_TOKEN",
            "RUNNER_REGISTRATION",
        ] {
            assert!(vars.contains(&v), "{v} missing from {err}");
        }
    }

    #[test]
    fn a_token_and_an_app_for_one_owner_is_ambiguous_and_the_secret_stays_hidden() {
        let err = Config::from_env(&map(&[
            ("REPO_OWNER", "acme"),
            ("ALL_REPOS", "true"),
            ("WEBHOOK_SECRET", "w"),
            ("OWNER_ACME_GITHUB_TOKEN", "ghp_secret_value"),
            ("OWNER_ACME_APP_ID", "1"),
            ("OWNER_ACME_APP_PRIVATE_KEY_FILE", "/k.pem"),
        ]))
        .unwrap_err();
        assert!(
            err.0.iter().any(
                |p| p.variable == "OWNER_ACME_GITHUB_TOKEN" && p.message.contains("choose one")
            )
        );
        assert!(!err.to_string().contains("ghp_secret_value"));
        // A global GITHUB_TOKEN beside an owner's App is not ambiguous: the App is that owner's.
        let ok = Config::from_env(&map(&[
            ("REPO_OWNER", "acme"),
            ("ALL_REPOS", "true"),
            ("WEBHOOK_SECRET", "w"),
            ("GITHUB_TOKEN", "ghp_default"),
            ("OWNER_ACME_APP_ID", "1"),
            ("OWNER_ACME_APP_PRIVATE_KEY_FILE", "/k.pem"),
        ]))
        .unwrap();
        assert!(matches!(ok.owners[0].auth, OwnerAuth::App { .. }));
    }

    #[test]
    fn owners_sharing_one_webhook_secret_are_found() {
        let c = Config::from_env(&map(&[
            ("OWNERS", "a,b,c"),
            ("GITHUB_TOKEN", "t"),
            ("ALL_REPOS", "true"),
            ("WEBHOOK_SECRET", "shared"),
            ("OWNER_C_WEBHOOK_SECRET", "own"),
        ]))
        .unwrap();
        assert_eq!(c.shared_webhook_secrets(), vec![vec!["a", "b"]]);
        let single = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert!(single.shared_webhook_secrets().is_empty());
    }

    #[test]
    fn edge_limits_and_tokens_have_defaults_and_are_validated() {
        let c = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert_eq!(c.http, HttpLimits::default());
        assert_eq!(c.http.webhook_max_body, 1024 * 1024);
        assert_eq!(c.retention, Duration::from_secs(7 * 86_400));
        assert!(c.status_token.is_none() && c.metrics_token.is_none());
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("WEBHOOK_MAX_BODY", "512KiB"),
                ("WEBHOOK_CONCURRENCY", "8"),
                ("HTTP_HEADER_TIMEOUT", "2s"),
                ("RETENTION", "30d"),
                ("STATUS_TOKEN", "read-only-status-token"),
            ],
        ))
        .unwrap();
        assert_eq!(c.http.webhook_max_body, 512 * 1024);
        assert_eq!(c.http.webhook_concurrency, 8);
        assert_eq!(c.http.header_timeout, Duration::from_secs(2));
        assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
        let err = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("WEBHOOK_MAX_BODY", "huge"),
                ("WEBHOOK_CONCURRENCY", "0"),
                ("RETENTION", "1h"),
                ("METRICS_TOKEN", "short"),
            ],
        ))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        for v in [
            "WEBHOOK_MAX_BODY",
            "WEBHOOK_CONCURRENCY",
            "RETENTION",
            "METRICS_TOKEN",
        ] {
            assert!(vars.contains(&v), "{v} missing from {err}");
        }
    }

    #[test]
    fn database_url_selects_postgres_and_a_bad_one_is_a_problem_naming_it() {
        let c = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert_eq!(c.database_url, None, "SQLite in STATE_DIR by default");
        assert!(c.table().contains("SQLite in"));
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[("DATABASE_URL", "postgres://gha:pw-secret@db:5432/gha")],
        ))
        .unwrap();
        let url = c.database_url.as_ref().expect("PostgreSQL selected");
        assert_eq!(url.redacted(), "postgres://gha:****@db:5432/gha");
        assert!(!c.table().contains("pw-secret"), "{}", c.table());
        let err = Config::from_env(&with(
            SEED_SINGLE,
            &[("DATABASE_URL", "sqlite:///var/lib/gha.db")],
        ))
        .unwrap_err();
        assert!(err.0.iter().any(|p| p.variable == "DATABASE_URL"), "{err}");
    }

    #[test]
    fn replica_settings_have_defaults_and_bad_values_name_their_variable() {
        let c = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert_eq!(c.ha.lease, ha::DEFAULT_LEADER_LEASE);
        assert_eq!((c.ha.replica_id, c.ha.advertise_grpc_url), (None, None));
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("REPLICA_ID", "controller-0"),
                ("ADVERTISE_GRPC_URL", "https://controller-0.gha:9443/"),
                ("LEADER_LEASE", "5s"),
            ],
        ))
        .unwrap();
        assert_eq!(c.ha.replica_id.as_deref(), Some("controller-0"));
        assert_eq!(
            c.ha.advertise_grpc_url.as_deref(),
            Some("https://controller-0.gha:9443")
        );
        assert_eq!(c.ha.lease, Duration::from_secs(5));
        let err = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("ADVERTISE_GRPC_URL", "controller-0:9443"),
                ("LEADER_LEASE", "100ms"),
            ],
        ))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable.as_str()).collect();
        assert!(vars.contains(&"ADVERTISE_GRPC_URL"), "{err}");
        assert!(vars.contains(&"LEADER_LEASE"), "{err}");
    }

    #[test]
    fn no_owner_at_all_is_a_problem_naming_repo_owner() {
        let err = Config::from_env(&map(&[])).unwrap_err();
        assert!(err.0.iter().any(|p| p.variable == "REPO_OWNER"));
    }

    #[test]
    fn durations_take_units() {
        let c =
            Config::from_env(&with(SEED_SINGLE, &[("AGENT_HEARTBEAT_INTERVAL", "250ms")])).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(750));
    }

    #[test]
    fn the_background_share_is_a_percentage() {
        let c = Config::from_env(&with(SEED_SINGLE, &[])).unwrap();
        assert_eq!(c.api_background_share, 30);
        for (v, want) in [("0", 0), ("100", 100), ("45%", 45)] {
            let c = Config::from_env(&with(SEED_SINGLE, &[("API_BACKGROUND_SHARE", v)])).unwrap();
            assert_eq!(c.api_background_share, want, "{v}");
        }
        for bad in ["101", "-1", "thirty", "0.5"] {
            let err = Config::from_env(&with(SEED_SINGLE, &[("API_BACKGROUND_SHARE", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("API_BACKGROUND_SHARE"), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[("API_TOKEN", "super-secret-token-123")],
        ))
        .unwrap();
        let printed = format!("{c:?}");
        for secret in ["super-secret", "ghp_abc", "s3cret"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
    }

    fn problem<'a>(err: &'a ConfigErrors, variable: &str) -> Option<&'a ConfigProblem> {
        err.0.iter().find(|p| p.variable == variable)
    }

    #[test]
    fn a_legacy_set_up_is_told_the_variables_it_wrote() {
        let err = Config::from_env(&with(SEED_SINGLE, &[("MAX_RUNNERS", "many")])).unwrap_err();
        assert!(problem(&err, "MAX_RUNNERS").is_some(), "{err}");
        assert!(!err.to_string().contains("OWNER_OCTO_"), "{err}");
        let err =
            Config::from_env(&map(&[("REPO_OWNER", "octo"), ("WEBHOOK_SECRET", "s")])).unwrap_err();
        let creds = problem(&err, "GITHUB_TOKEN").expect("credentials named");
        assert!(!creds.message.contains("OWNER_OCTO_"), "{err}");
        assert!(problem(&err, "REPO_NAME").is_some(), "{err}");
        // With OWNERS, the per-owner names are the ones to use.
        let err =
            Config::from_env(&map(&[("OWNERS", "octo"), ("WEBHOOK_SECRET", "s")])).unwrap_err();
        assert!(problem(&err, "OWNER_OCTO_GITHUB_TOKEN").is_some(), "{err}");
    }

    #[test]
    fn the_example_placeholders_are_refused_with_a_hint() {
        let err = Config::from_env(&map(&[
            ("GITHUB_TOKEN", "your_github_personal_access_token"),
            ("REPO_OWNER", "your_github_username"),
            ("REPO_NAME", "your_repository_name"),
            ("WEBHOOK_SECRET", "your_webhook_secret_optional"),
        ]))
        .unwrap_err();
        let owner = problem(&err, "REPO_OWNER").expect("REPO_OWNER named");
        assert!(owner.message.contains("placeholder"), "{err}");
        assert!(owner.message.contains("GitHub login"), "{err}");
        let err = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("GITHUB_TOKEN", "your_github_personal_access_token"),
                ("WEBHOOK_SECRET", "your_webhook_secret_optional"),
            ],
        ))
        .unwrap_err();
        for v in ["GITHUB_TOKEN", "WEBHOOK_SECRET"] {
            assert!(
                problem(&err, v).is_some_and(|p| p.message.contains("placeholder")),
                "{v}: {err}"
            );
        }
    }

    #[test]
    fn conflicting_settings_are_reported() {
        let err = Config::from_env(&with(SEED_SINGLE, &[("ALL_REPOS", "true")])).unwrap_err();
        let p = problem(&err, "REPO_NAME").expect("REPO_NAME named");
        assert!(p.message.contains("ALL_REPOS=true"), "{err}");

        let err = Config::from_env(&with(
            SEED_SINGLE,
            &[("OWNERS", "octo,other"), ("OWNER_OTHER_ALL_REPOS", "true")],
        ))
        .unwrap_err();
        assert!(
            problem(&err, "REPO_OWNER").is_some_and(|p| p.message.contains("OWNERS")),
            "{err}"
        );

        let err = Config::from_env(&with(SEED_SINGLE, &[("GRPC_PORT", "8080")])).unwrap_err();
        assert!(
            problem(&err, "GRPC_PORT").is_some_and(|p| p.message.contains("same as PORT")),
            "{err}"
        );

        // An owner's own REPO_NAME overrides a shared ALL_REPOS=true: not a conflict.
        let c = Config::from_env(&map(&[
            ("OWNERS", "acme,bob"),
            ("GITHUB_TOKEN", "t"),
            ("WEBHOOK_SECRET", "s"),
            ("ALL_REPOS", "true"),
            ("OWNER_BOB_REPO_NAME", "tool"),
        ]))
        .unwrap();
        let bob = c.owner("bob").unwrap();
        assert!(bob.serves_repo("tool") && !bob.serves_repo("other"));
        assert!(c.owner("acme").unwrap().serves_repo("anything"));
    }

    #[test]
    fn removed_go_tool_variables_are_warned_about() {
        let c = Config::from_env(&with(SEED_SINGLE, &[("MIN_RUNNERS", "1")])).unwrap();
        let w = c
            .warnings
            .iter()
            .find(|w| w.variable == "MIN_RUNNERS")
            .expect("a warning");
        assert!(w.message.contains("MAX_RUNNERS"), "{w:?}");
        assert!(
            Config::from_env(&map(SEED_SINGLE))
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn the_webhook_url_host_is_a_server_certificate_name() {
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[
                ("WEBHOOK_URL", "https://ci.example.com:8443/webhook"),
                ("TLS_SANS", "10.0.0.5"),
            ],
        ))
        .unwrap();
        assert_eq!(c.tls_sans, vec!["10.0.0.5", "ci.example.com"]);
        let c = Config::from_env(&with(
            SEED_SINGLE,
            &[("WEBHOOK_URL", "http://[fd00::1]/webhook")],
        ))
        .unwrap();
        assert_eq!(c.tls_sans, vec!["fd00::1"]);
    }

    #[test]
    fn warm_pools_are_read_per_owner_and_checked_against_the_limit() {
        let c = Config::from_env(&map(&[
            ("OWNERS", "acme,bob"),
            ("GITHUB_TOKEN", "t"),
            ("WEBHOOK_SECRET", "s"),
            ("ALL_REPOS", "true"),
            ("MIN_IDLE_RUNNERS", "1"),
            ("OWNER_ACME_MIN_IDLE_RUNNERS", "2,gpu+x64=1"),
            ("OWNER_ACME_MIN_IDLE_SCHEDULE", "* 8-17 * * mon-fri"),
            ("WARM_RUNNER_MAX_AGE", "30m"),
        ]))
        .unwrap();
        let acme = c.owner("acme").unwrap();
        assert_eq!(acme.warm.total(), 3);
        assert_eq!(acme.warm.pools[1].labels, vec!["gpu", "x64"]);
        assert_eq!(
            acme.warm
                .schedule
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("* 8-17 * * mon-fri")
        );
        let bob = c.owner("bob").unwrap();
        assert_eq!(bob.warm.total(), 1, "the unprefixed default");
        assert_eq!(bob.warm.schedule, None);
        assert_eq!(c.runners.warm_max_age, Duration::from_secs(1800));
        let defaults = Config::from_env(&map(SEED_SINGLE)).unwrap();
        assert_eq!(defaults.owners[0].warm, warm::OwnerWarm::default());
        assert_eq!(defaults.runners.warm_max_age, Duration::from_secs(3600));

        for (extra, variable, says) in [
            (
                ("MIN_IDLE_RUNNERS", "6"),
                "MIN_IDLE_RUNNERS",
                "more than its MAX_RUNNERS of 5",
            ),
            (
                ("MIN_IDLE_RUNNERS", "lots"),
                "MIN_IDLE_RUNNERS",
                "not a count",
            ),
            (
                ("MIN_IDLE_SCHEDULE", "9 to 5"),
                "MIN_IDLE_SCHEDULE",
                "a schedule has 5",
            ),
            (
                ("WARM_RUNNER_MAX_AGE", "soon"),
                "WARM_RUNNER_MAX_AGE",
                "not a positive duration",
            ),
        ] {
            let err = Config::from_env(&with(SEED_SINGLE, &[extra])).unwrap_err();
            let p = problem(&err, variable).unwrap_or_else(|| panic!("{extra:?}: {err}"));
            assert!(p.message.contains(says), "{extra:?}: {p:?}");
        }
        let err = Config::from_env(&map(&[
            ("OWNERS", "acme"),
            ("GITHUB_TOKEN", "t"),
            ("WEBHOOK_SECRET", "s"),
            ("ALL_REPOS", "true"),
            ("OWNER_ACME_MAX_RUNNERS", "2"),
            ("OWNER_ACME_MIN_IDLE_RUNNERS", "x64=2,arm64=1"),
        ]))
        .unwrap_err();
        let p = problem(&err, "OWNER_ACME_MIN_IDLE_RUNNERS").expect("names the owner's variable");
        assert!(p.message.contains("OWNER_ACME_MAX_RUNNERS of 2"), "{p:?}");
    }
}
