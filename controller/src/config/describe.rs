//! How the configuration is shown to people: the variables `--help` lists (with their
//! defaults) and the table `check-config` prints (secrets masked).
//!
//! Kept beside the parser so a new variable is documented where it is read; the README's
//! tables say the same in more words.

use std::fmt::Write as _;
use std::time::Duration;

use super::owners::env_prefix;
use super::{Config, OwnerAuth, RegistrationMode, Secret};

/// Every variable the controller reads: name, default (`-` for none) and meaning.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "GITHUB_TOKEN",
        "-",
        "personal access token (per owner: OWNER_<NAME>_GITHUB_TOKEN)",
    ),
    (
        "REPO_OWNER",
        "-",
        "the one owner (user or organisation login); or OWNERS",
    ),
    (
        "OWNERS",
        "-",
        "several owners, comma-separated, with OWNER_<NAME>_* variables",
    ),
    ("REPO_NAME", "-", "serve this repository of the owner..."),
    ("ALL_REPOS", "false", "...or every repository of the owner"),
    (
        "WEBHOOK_SECRET",
        "-",
        "webhook secret (required unless ALLOW_UNSIGNED_WEBHOOKS=true)",
    ),
    ("MAX_RUNNERS", "5", "runners at once per owner"),
    (
        "MIN_IDLE_RUNNERS",
        "0",
        "idle runners kept ready per owner (2, or pools: 2,gpu+x64=1), within MAX_RUNNERS",
    ),
    (
        "MIN_IDLE_SCHEDULE",
        "-",
        "cron (UTC) for when warm runners are kept, e.g. \"* 8-17 * * 1-5\"",
    ),
    (
        "WARM_RUNNER_MAX_AGE",
        "1h",
        "a warm runner older than this is replaced",
    ),
    (
        "RUNNER_TIMEOUT",
        "3600",
        "seconds (or 1h) before a runner is stopped",
    ),
    ("PORT", "8080", "HTTP port: /webhook, /status, /api/v1"),
    ("GRPC_PORT", "9443", "mutual-TLS gRPC port for agents"),
    ("DEBUG", "false", "debug logging (RUST_LOG overrides)"),
    (
        "LOG_FORMAT",
        "pretty on a terminal, else json",
        "log lines as json (one object per line) or pretty text",
    ),
    (
        "RUNNER_IMAGE",
        "myoung34/github-runner:ubuntu-noble",
        "runner image",
    ),
    (
        "RUNNER_IMAGE_FLAVOR",
        "auto",
        "auto, official, myoung34 or custom",
    ),
    ("RUNNER_COMMAND", "-", "what starts a custom image"),
    ("RUNNER_REGISTRATION", "jit", "jit or token"),
    (
        "CACHE_VOLUMES",
        "true",
        "tool-cache volumes per owner and arch",
    ),
    (
        "KUBERNETES_PVCS",
        "false",
        "PersistentVolumeClaims for caches on Kubernetes",
    ),
    (
        "LABELS",
        "-",
        "extra labels on every runner (per owner: OWNER_<NAME>_LABELS)",
    ),
    (
        "RUNNER_GROUP",
        "default group",
        "organisation runner group (id or name)",
    ),
    (
        "APP_ID / APP_PRIVATE_KEY_FILE",
        "-",
        "a GitHub App instead of a token",
    ),
    ("APP_INSTALLATION_ID", "looked up", "the App's installation"),
    (
        "GITHUB_API_URL",
        "https://api.github.com",
        "https://HOST/api/v3 for GHES",
    ),
    (
        "WEBHOOK_URL",
        "-",
        "public URL of /webhook: automatic webhook setup",
    ),
    (
        "API_TOKEN",
        "-",
        "bearer token for /api/v1 (16+ characters)",
    ),
    (
        "STATUS_TOKEN",
        "-",
        "read-only bearer token for the full /status",
    ),
    (
        "METRICS_TOKEN",
        "-",
        "bearer token /metrics requires when set",
    ),
    (
        "STATE_DIR",
        "/var/lib/gha-scaler",
        "database and built-in PKI",
    ),
    (
        "DATABASE_URL",
        "SQLite in STATE_DIR",
        "postgres://USER:PASSWORD@HOST:PORT/DB: the PostgreSQL store and agent directory",
    ),
    (
        "REPLICA_ID",
        "host-pid-random",
        "this replica's name in the leader lease (PostgreSQL)",
    ),
    (
        "ADVERTISE_GRPC_URL",
        "-",
        "https:// URL agents dial this replica at; standbys point agents to the leader's",
    ),
    (
        "LEADER_LEASE",
        "15s",
        "leader lease (PostgreSQL): a failover takes about this long",
    ),
    (
        "TLS_DIR",
        "STATE_DIR/pki",
        "directory of ca.pem, controller.pem and keys",
    ),
    (
        "TLS_CA_FILE / TLS_CERT_FILE / TLS_KEY_FILE",
        "built-in PKI",
        "your own PKI",
    ),
    (
        "TLS_CA_KEY_FILE",
        "TLS_DIR/ca-key.pem",
        "CA key for join tokens",
    ),
    (
        "TLS_SANS",
        "WEBHOOK_URL's host",
        "more names/IPs agents use to reach the controller",
    ),
    (
        "CONFIG_FILE",
        "-",
        "a TOML file with the same names (environment wins)",
    ),
    (
        "RUNNER_IDLE_GRACE",
        "300s",
        "idle runners with no demand are stopped after this",
    ),
    (
        "STRAY_GRACE",
        "120s",
        "runners the controller does not know are stopped after this",
    ),
    (
        "RECONCILE_INTERVAL",
        "300s",
        "REST sweep for lost webhooks (0 = off)",
    ),
    (
        "RETENTION",
        "7d",
        "delivery ids, finished jobs and finished runners are kept this long",
    ),
    ("AGENT_HEARTBEAT_INTERVAL", "10s", "agent liveness"),
    (
        "AGENT_HEARTBEAT_TIMEOUT",
        "3 x interval",
        "silence before an agent counts as gone",
    ),
    (
        "CONTROLLER_ID",
        "gha-scaler",
        "marks objects this controller creates",
    ),
    (
        "BACKOFF_INITIAL / BACKOFF_MAX",
        "10s / 300s",
        "back-off after a failed start",
    ),
    (
        "CIRCUIT_PROBE_INTERVAL",
        "300s",
        "probe after a GitHub 401/403/404/422",
    ),
    (
        "RUNNER_BOOT_WINDOW",
        "120s",
        "a runner ending sooner without a job crashed",
    ),
    (
        "STALE_JOB_AGE",
        "600s",
        "queued jobs older than this are re-checked",
    ),
    (
        "OFFLINE_RUNNER_GRACE",
        "600s",
        "offline registrations of ours are deleted after this",
    ),
    (
        "RUNNER_REGISTER_TIMEOUT",
        "600s",
        "a running runner not online at GitHub by then is stopped",
    ),
    (
        "REDELIVERY_INTERVAL",
        "120s",
        "failed deliveries of our hooks are redelivered (0 = off)",
    ),
    (
        "AGENT_BOOTSTRAP_TOKEN_FILE / AGENT_BOOTSTRAP_NAME",
        "- / local",
        "write a one-time join token for a local agent (compose)",
    ),
    (
        "API_BACKGROUND_SHARE",
        "30",
        "percent of each GitHub quota window background work may use",
    ),
    (
        "HTTP_HEADER_TIMEOUT / HTTP_BODY_TIMEOUT",
        "10s / 10s",
        "slow clients are cut off",
    ),
    ("HTTP_MAX_CONNECTIONS", "1024", "HTTP connections at once"),
    ("WEBHOOK_MAX_BODY", "1MiB", "largest webhook body"),
    (
        "WEBHOOK_CONCURRENCY",
        "64",
        "deliveries handled at once (beyond: 503)",
    ),
    (
        "ALLOW_UNSIGNED_WEBHOOKS",
        "false",
        "accept webhooks of owners without a secret",
    ),
];

/// The `--help` section listing [`VARIABLES`].
pub fn env_help() -> String {
    render(
        "Environment variables (also read from ./.env; default in brackets):",
        VARIABLES
            .iter()
            .map(|(n, d, m)| (n.to_string(), format!("{m} [{d}]"))),
    )
}

fn render(title: &str, rows: impl IntoIterator<Item = (String, String)>) -> String {
    let rows: Vec<_> = rows.into_iter().collect();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("{title}\n");
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<width$}  {v}");
    }
    out
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn masked(secret: &Option<Secret>) -> String {
    match secret {
        Some(_) => "******** (set)".into(),
        None => "(not set)".into(),
    }
}

fn yes(b: bool) -> String {
    b.to_string()
}

impl Config {
    /// The resolved configuration as `VARIABLE  value` rows, secrets masked.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("PORT".into(), self.port.to_string()),
            ("GRPC_PORT".into(), self.grpc_port.to_string()),
            ("STATE_DIR".into(), self.state_dir.display().to_string()),
            (
                "DATABASE_URL".into(),
                match &self.database_url {
                    Some(url) => format!("PostgreSQL {}", url.redacted()),
                    None => format!(
                        "(not set): SQLite in {}",
                        self.state_dir.join(crate::store::DB_FILE).display()
                    ),
                },
            ),
            (
                "TLS".into(),
                match &self.tls.auto_init_dir {
                    Some(dir) => format!("built-in PKI in {} (created if missing)", dir.display()),
                    None => format!(
                        "CA {}, certificate {}, key {}",
                        self.tls.ca_file.display(),
                        self.tls.cert_file.display(),
                        self.tls.key_file.display()
                    ),
                },
            ),
            (
                "TLS_SANS".into(),
                format!(
                    "localhost, 127.0.0.1, ::1{}{}",
                    self.tls_sans
                        .iter()
                        .map(|s| format!(", {s}"))
                        .collect::<String>(),
                    if self.tls_sans.is_empty() {
                        " (an agent on another host needs the name it dials here: set TLS_SANS)"
                    } else {
                        ""
                    }
                ),
            ),
            ("GITHUB_API_URL".into(), self.github_api_url.clone()),
            (
                "WEBHOOK_URL".into(),
                self.webhook_url
                    .clone()
                    .unwrap_or_else(|| "(not set: webhooks are not set up automatically)".into()),
            ),
            ("API_TOKEN".into(), masked(&self.api_token)),
            ("STATUS_TOKEN".into(), masked(&self.status_token)),
            ("METRICS_TOKEN".into(), masked(&self.metrics_token)),
            (
                "ALLOW_UNSIGNED_WEBHOOKS".into(),
                yes(self.allow_unsigned_webhooks),
            ),
            ("RUNNER_IMAGE".into(), self.runners.image.clone()),
            (
                "RUNNER_IMAGE_FLAVOR".into(),
                self.runners.launch.flavor.to_string(),
            ),
            (
                "RUNNER_REGISTRATION".into(),
                match self.runners.registration {
                    RegistrationMode::Jit => "jit".into(),
                    RegistrationMode::Token => "token".into(),
                },
            ),
            ("RUNNER_TIMEOUT".into(), secs(self.runners.timeout)),
            ("RUNNER_IDLE_GRACE".into(), secs(self.runners.idle_grace)),
            ("STRAY_GRACE".into(), secs(self.runners.stray_grace)),
            (
                "WARM_RUNNER_MAX_AGE".into(),
                secs(self.runners.warm_max_age),
            ),
            ("CACHE_VOLUMES".into(), yes(self.runners.cache_volumes)),
            ("KUBERNETES_PVCS".into(), yes(self.runners.kubernetes_pvcs)),
            ("LABELS".into(), self.runners.labels.join(",")),
            (
                "RECONCILE_INTERVAL".into(),
                self.reconcile_interval
                    .map(secs)
                    .unwrap_or_else(|| "off".into()),
            ),
            (
                "LEADER_LEASE".into(),
                match &self.database_url {
                    Some(_) => secs(self.ha.lease),
                    None => "(one replica: SQLite, always the leader)".into(),
                },
            ),
            (
                "ADVERTISE_GRPC_URL".into(),
                self.ha
                    .advertise_grpc_url
                    .clone()
                    .unwrap_or_else(|| "(not set)".into()),
            ),
            ("RETENTION".into(), secs(self.retention)),
            (
                "AGENT_HEARTBEAT".into(),
                format!(
                    "every {}, gone after {}",
                    secs(self.heartbeat_interval),
                    secs(self.heartbeat_timeout)
                ),
            ),
            ("CONTROLLER_ID".into(), self.controller_id.clone()),
            ("DEBUG".into(), yes(self.debug)),
        ];
        for o in &self.owners {
            let p = env_prefix(&o.name);
            let auth = match &o.auth {
                OwnerAuth::Token(_) => "token ******** (set)".to_owned(),
                OwnerAuth::App {
                    app_id,
                    private_key_file,
                    installation_id,
                } => format!(
                    "GitHub App {app_id}, key {}, installation {}",
                    private_key_file.display(),
                    installation_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "looked up".into())
                ),
            };
            rows.push((format!("owner {}", o.name), String::new()));
            rows.push((format!("  {p}AUTH"), auth));
            rows.push((
                format!("  {p}REPOS"),
                match (&o.repo_name, o.all_repos) {
                    (_, true) => "all repositories (ALL_REPOS=true)".into(),
                    (Some(r), false) => format!("{}/{r} only", o.name),
                    (None, false) => "none".into(),
                },
            ));
            rows.push((format!("  {p}MAX_RUNNERS"), o.max_runners.to_string()));
            if !o.warm.pools.is_empty() {
                let pools: Vec<String> = o
                    .warm
                    .pools
                    .iter()
                    .map(|p| match p.labels.as_slice() {
                        [] => p.min_idle.to_string(),
                        labels => format!("{}={}", labels.join("+"), p.min_idle),
                    })
                    .collect();
                rows.push((format!("  {p}MIN_IDLE_RUNNERS"), pools.join(",")));
                if let Some(s) = &o.warm.schedule {
                    rows.push((format!("  {p}MIN_IDLE_SCHEDULE"), format!("{s} (UTC)")));
                }
            }
            rows.push((format!("  {p}WEBHOOK_SECRET"), masked(&o.webhook_secret)));
            rows.push((format!("  {p}LABELS"), o.labels.join(",")));
            if let Some(g) = &o.runner_group {
                rows.push((format!("  {p}RUNNER_GROUP"), g.clone()));
            }
        }
        render("Resolved configuration:", rows)
    }
}
