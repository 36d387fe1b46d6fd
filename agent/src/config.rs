//! The agent's configuration, parsed once from a map of environment variables.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use shared::arch::Arch;

/// File names `gha-agent join` writes into its directory, and `TLS_DIR` reads.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "agent.pem";
pub const KEY_FILE: &str = "agent-key.pem";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `CONTROLLER_URL`: `https://host:port` of the controller's gRPC endpoint, or several
    /// comma-separated (replicas of one controller: the agent finds the leader, see
    /// [`crate::targets`]). Never empty.
    pub controller_urls: Vec<String>,
    pub tls: TlsFiles,
    /// `AGENT_ARCH`, else the host's.
    pub arch: Arch,
    /// `MAX_RUNNERS`: runners this host may run at once.
    pub max_runners: u32,
    /// `LABELS`: extra labels this host satisfies.
    pub labels: Vec<String>,
    /// `RUNTIME`: `docker` (default) or `kubernetes`.
    pub runtime: String,
    /// `RECONNECT_MIN_BACKOFF` / `RECONNECT_MAX_BACKOFF`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub debug: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid agent configuration ({} problem(s)):",
            self.0.len()
        )?;
        for p in &self.0 {
            writeln!(f, "  {}: {}", p.variable, p.message)?;
        }
        Ok(())
    }
}

pub const DEFAULT_MAX_RUNNERS: u32 = 5;

impl AgentConfig {
    pub fn from_env(map: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut problem =
            |variable, message: String| problems.push(ConfigProblem { variable, message });

        let controller_urls: Vec<String> = match get("CONTROLLER_URL") {
            None => {
                problem(
                    "CONTROLLER_URL",
                    "is required (https://controller-host:9443, or several comma-separated)".into(),
                );
                Vec::new()
            }
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|url| {
                    if !url.starts_with("https://") {
                        problem(
                            "CONTROLLER_URL",
                            format!(
                                "{url:?} must start with https:// (agents only talk mutual TLS)"
                            ),
                        );
                    }
                    url.trim_end_matches('/').to_owned()
                })
                .collect(),
        };
        if controller_urls.is_empty() && get("CONTROLLER_URL").is_some() {
            problem("CONTROLLER_URL", "names no URL".into());
        }

        let dir = get("TLS_DIR").map(PathBuf::from);
        let mut file = |var: &'static str, default_name: &str| match (get(var), &dir) {
            (Some(path), _) => PathBuf::from(path),
            (None, Some(dir)) => dir.join(default_name),
            (None, None) => {
                problem(
                    var,
                    "is required (or set TLS_DIR to the directory `gha-agent join` wrote)".into(),
                );
                PathBuf::new()
            }
        };
        let tls = TlsFiles {
            ca_file: file("TLS_CA_FILE", CA_FILE),
            cert_file: file("TLS_CERT_FILE", CERT_FILE),
            key_file: file("TLS_KEY_FILE", KEY_FILE),
        };

        let arch = match get("AGENT_ARCH") {
            Some(v) => v.parse().unwrap_or_else(|e: shared::arch::UnknownArch| {
                problem("AGENT_ARCH", e.to_string());
                Arch::Amd64
            }),
            None => Arch::host().unwrap_or_else(|e| {
                problem("AGENT_ARCH", format!("the host's {e}; set AGENT_ARCH"));
                Arch::Amd64
            }),
        };
        let max_runners = match get("MAX_RUNNERS") {
            None => DEFAULT_MAX_RUNNERS,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    problem(
                        "MAX_RUNNERS",
                        format!("{v:?} is not a positive whole number"),
                    );
                    DEFAULT_MAX_RUNNERS
                }
            },
        };
        let labels = get("LABELS")
            .map(|v| {
                v.split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let runtime = get("RUNTIME").unwrap_or("docker").to_ascii_lowercase();
        let mut duration = |var: &'static str, default: Duration| match get(var) {
            None => default,
            Some(v) => match v
                .parse::<u64>()
                .map(Duration::from_secs)
                .or_else(|_| humantime::parse_duration(v))
            {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    problem(
                        var,
                        format!("{v:?} is not a positive duration (e.g. 500ms, 30s)"),
                    );
                    default
                }
            },
        };
        let reconnect_min = duration("RECONNECT_MIN_BACKOFF", Duration::from_millis(500));
        let reconnect_max = duration("RECONNECT_MAX_BACKOFF", Duration::from_secs(30));
        let debug = matches!(
            get("DEBUG").map(str::to_ascii_lowercase).as_deref(),
            Some("true" | "1" | "yes")
        );

        if problems.is_empty() {
            Ok(Self {
                controller_urls,
                tls,
                arch,
                max_runners,
                labels,
                runtime,
                reconnect_min,
                reconnect_max,
                debug,
            })
        } else {
            Err(ConfigErrors(problems))
        }
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
    fn tls_dir_fills_in_the_files() {
        let c = AgentConfig::from_env(&map(&[
            ("CONTROLLER_URL", "https://ctl:9443/"),
            ("TLS_DIR", "/etc/gha"),
            ("AGENT_ARCH", "aarch64"),
            ("LABELS", "gpu, big ,"),
        ]))
        .unwrap();
        assert_eq!(c.controller_urls, vec!["https://ctl:9443"]);
        assert_eq!(c.tls.cert_file, PathBuf::from("/etc/gha/agent.pem"));
        assert_eq!(c.arch, Arch::Arm64);
        assert_eq!(c.labels, vec!["gpu", "big"]);
        assert_eq!(c.max_runners, 5);
    }

    #[test]
    fn controller_url_may_list_replicas() {
        let c = AgentConfig::from_env(&map(&[
            ("CONTROLLER_URL", "https://ctl-0:9443/, https://ctl-1:9443,"),
            ("TLS_DIR", "/etc/gha"),
            ("AGENT_ARCH", "amd64"),
        ]))
        .unwrap();
        assert_eq!(
            c.controller_urls,
            vec!["https://ctl-0:9443", "https://ctl-1:9443"]
        );
        let err = AgentConfig::from_env(&map(&[
            ("CONTROLLER_URL", "https://ctl-0:9443,ctl-1:9443"),
            ("TLS_DIR", "/etc/gha"),
            ("AGENT_ARCH", "amd64"),
        ]))
        .unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.variable == "CONTROLLER_URL" && p.message.contains("\"ctl-1:9443\"")),
            "{err}"
        );
    }

    #[test]
    fn problems_name_their_variables() {
        let err = AgentConfig::from_env(&map(&[
            ("CONTROLLER_URL", "http://plain:80"),
            ("AGENT_ARCH", "sparc"),
            ("MAX_RUNNERS", "0"),
        ]))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable).collect();
        for v in [
            "CONTROLLER_URL",
            "TLS_CA_FILE",
            "TLS_CERT_FILE",
            "TLS_KEY_FILE",
            "AGENT_ARCH",
            "MAX_RUNNERS",
        ] {
            assert!(vars.contains(&v), "{v} missing from {err}");
        }
    }
}
