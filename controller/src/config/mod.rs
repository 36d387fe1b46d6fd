//! The controller's configuration, parsed once from a map of environment variables.
//!
//! Parsing is a pure function of a string map (tests pass a map, `main` passes the process
//! environment merged with `.env`); every problem is collected and names its variable.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod file;
pub mod owners;
mod vars;

pub use self::owners::{OwnerAuth, OwnerConfig, Secret};
use self::vars::Vars;

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
    /// `STRAY_GRACE`: a runner an agent reports that this controller does not know (or knows
    /// as finished) is stopped once it has been seen for this long.
    pub stray_grace: Duration,
}

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
    /// Bearer token for `/api/v1` (`API_TOKEN`).
    pub api_token: Option<Secret>,
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
}

impl Config {
    /// The owner called `name`, compared case-insensitively.
    pub fn owner(&self, name: &str) -> Option<&OwnerConfig> {
        self.owners
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
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
        let state_dir = PathBuf::from(vars.get("STATE_DIR").unwrap_or(DEFAULT_STATE_DIR));
        let tls = tls_config(&mut vars, &state_dir);
        let tls_sans = vars.list("TLS_SANS");
        let api_token = vars.get("API_TOKEN").map(Secret::new);
        if api_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            vars.problem(
                "API_TOKEN",
                "is shorter than 16 characters; use a long random value",
            );
        }
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
        let runners = RunnerDefaults {
            image: vars
                .get("RUNNER_IMAGE")
                .unwrap_or(DEFAULT_RUNNER_IMAGE)
                .to_owned(),
            timeout: vars.duration("RUNNER_TIMEOUT", Duration::from_secs(3600)),
            cache_volumes: vars.bool("CACHE_VOLUMES", true),
            kubernetes_pvcs: vars.bool("KUBERNETES_PVCS", false),
            labels: vars.list("LABELS"),
            registration,
            idle_grace: vars.duration("RUNNER_IDLE_GRACE", Duration::from_secs(300)),
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
        let reconcile_interval = match vars.get("RECONCILE_INTERVAL") {
            Some("0" | "off" | "false") => None,
            _ => Some(vars.duration("RECONCILE_INTERVAL", Duration::from_secs(300))),
        };
        vars.finish(Config {
            port,
            grpc_port,
            tls,
            tls_sans,
            state_dir,
            api_token,
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
        })
    }
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
                .any(|p| p.variable == "OWNER_OCTO_WEBHOOK_SECRET"
                    && p.message.contains("ALLOW_UNSIGNED_WEBHOOKS"))
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
}
