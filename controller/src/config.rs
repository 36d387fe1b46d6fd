//! The controller's configuration, parsed once from a map of environment variables.
//!
//! Parsing is a pure function of a string map (tests pass a map, `main` passes the process
//! environment merged with `.env`); every problem is collected and names its variable.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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

#[derive(Clone, PartialEq, Eq)]
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
    pub api_token: Option<String>,
    /// How often agents must send a heartbeat (`AGENT_HEARTBEAT_INTERVAL`, seconds or `10s`).
    pub heartbeat_interval: Duration,
    /// Silence after which an agent counts as dead (`AGENT_HEARTBEAT_TIMEOUT`).
    pub heartbeat_timeout: Duration,
    /// Marks every object this controller creates (`CONTROLLER_ID`).
    pub controller_id: String,
    /// `DEBUG=true` turns on debug logging.
    pub debug: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("port", &self.port)
            .field("grpc_port", &self.grpc_port)
            .field("tls", &self.tls)
            .field("state_dir", &self.state_dir)
            .field("api_token", &self.api_token.as_ref().map(|_| "<set>"))
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("controller_id", &self.controller_id)
            .field("debug", &self.debug)
            .finish()
    }
}

/// One configuration problem, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: &'static str,
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

/// Reads typed values out of the variable map, collecting problems.
pub(crate) struct Vars<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<ConfigProblem>,
}

impl<'a> Vars<'a> {
    pub(crate) fn new(vars: &'a HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
        }
    }

    /// The variable's value, with empty strings treated as unset.
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn problem(&mut self, variable: &'static str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable,
            message: message.into(),
        });
    }

    pub(crate) fn port(&mut self, name: &'static str, default: u16) -> u16 {
        match self.get(name) {
            None => default,
            Some(v) => match v.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    self.problem(name, format!("{v:?} is not a port number (0-65535)"));
                    default
                }
            },
        }
    }

    pub(crate) fn bool(&mut self, name: &'static str, default: bool) -> bool {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(v) => {
                self.problem(name, format!("{v:?} is not a boolean (true or false)"));
                default
            }
        }
    }

    /// A duration: plain seconds (`30`) or with a unit (`500ms`, `1m`).
    pub(crate) fn duration(&mut self, name: &'static str, default: Duration) -> Duration {
        match self.get(name) {
            None => default,
            Some(v) => match parse_duration(v) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.problem(
                        name,
                        format!(
                            "{v:?} is not a positive duration (seconds, or e.g. 500ms, 10s, 1m)"
                        ),
                    );
                    default
                }
            },
        }
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.problems))
        }
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}

impl Config {
    pub fn from_env(map: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
        let mut vars = Vars::new(map);
        let port = vars.port("PORT", DEFAULT_PORT);
        let grpc_port = vars.port("GRPC_PORT", DEFAULT_GRPC_PORT);
        let state_dir = PathBuf::from(vars.get("STATE_DIR").unwrap_or(DEFAULT_STATE_DIR));
        let tls = tls_config(&mut vars, &state_dir);
        let tls_sans = vars
            .get("TLS_SANS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let api_token = vars.get("API_TOKEN").map(str::to_owned);
        if let Some(token) = &api_token
            && token.len() < 16
        {
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

    #[test]
    fn defaults_follow_the_seed() {
        let c = Config::from_env(&map(&[])).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.grpc_port, 9443);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(
            c.tls.auto_init_dir,
            Some(PathBuf::from("/var/lib/gha-scaler/pki"))
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
        ]))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable).collect();
        for v in [
            "PORT",
            "GRPC_PORT",
            "TLS_CERT_FILE",
            "TLS_KEY_FILE",
            "DEBUG",
            "AGENT_HEARTBEAT_INTERVAL",
        ] {
            assert!(vars.contains(&v), "{v} missing from {err}");
        }
    }

    #[test]
    fn durations_take_units() {
        let c = Config::from_env(&map(&[("AGENT_HEARTBEAT_INTERVAL", "250ms")])).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(750));
    }

    #[test]
    fn the_api_token_is_never_printed() {
        let c = Config::from_env(&map(&[("API_TOKEN", "super-secret-token-123")])).unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
    }
}
