//! The Docker runtime's settings, parsed once from the agent's variable map (a pure function,
//! like [`crate::config::AgentConfig::from_env`]); problems name their variable.
//!
//! - `DOCKER_HOST` (`unix:///var/run/docker.sock`): the engine, `unix://PATH` or
//!   `tcp://HOST:PORT`.
//! - `RUNNER_NETWORK` (the engine's default bridge), `RUNNER_CPUS` (`2`, at most the engine's
//!   CPUs), `RUNNER_MEMORY` (`7g`) and `RUNNER_PIDS_LIMIT` (`4096`), each `unlimited` to lift it:
//!   where runners attach and what each may use (GitHub's standard Linux runner has 2 CPUs and
//!   7 GB).
//! - `RUNNER_SANDBOX` (`strict`): see [`crate::runtime::sandbox`].
//! - `CACHE_VOLUME_SHARING` (`exclusive`: one runner at a time per cache volume; `shared`: every
//!   runner of an owner and architecture mounts the same volumes), `CACHE_VOLUME_SCOPE`
//!   (`repository`; `owner` to share caches between an owner's repositories, see
//!   [`crate::runtime::cache_scope`]) and `CACHE_VOLUME_PREFIX`.
//! - `RUNNER_DOCKER_SOCKET` (`false`): mount the host's Docker socket into runners; **unsafe**,
//!   it is root on the host for any job.
//! - `RUNNER_INIT` (`true`), `RUNNER_STOP_GRACE` (`10s`), `STRAY_GRACE` (`5m`).
//! - `RUNNER_CONTAINER_LABELS` / `RUNNER_ENV`: extra `key=value,…` labels on everything we
//!   create, and variables for every runner (credentials refused).
//! - `REGISTRY_MIRROR` (none): Docker Hub images are pulled through this mirror (see
//!   [`super::mirror`]).
//! - `IMAGE_PULL_ATTEMPTS` (`3`), `IMAGE_PULL_BACKOFF` (`5s`, doubled after each failure),
//!   `IMAGE_PULL_TIMEOUT` (`10m` per attempt), `IMAGE_PULL_CONCURRENCY` (`2`): how the runner
//!   images the controller names are pre-pulled (see [`super::prepull`]).
//! - `IMAGE_PLATFORM_CHECK` (`true`): refuse an image not built for the runner's architecture
//!   (see [`super::platform`]); `false` only for an engine that runs other architectures' images
//!   as its own (a demo or test fleet that declares an `AGENT_ARCH` its engine does not have).
//!
//! The operator's guide is `deploy/docker/README.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::mirror::RegistryMirror;
use crate::config::{ConfigErrors, ConfigProblem};
use crate::runtime::cache_scope::{self, CacheScope};
use crate::runtime::sandbox::{self, Sandbox};

/// `RUNNER_CPUS`, `RUNNER_MEMORY` and `RUNNER_PIDS_LIMIT` unless set (GitHub's standard Linux
/// runner has 2 CPUs and 7 GB; 4096 tasks is far above a build's needs and far below a fork
/// bomb's).
pub const DEFAULT_NANO_CPUS: i64 = 2_000_000_000;
pub const DEFAULT_MEMORY_BYTES: i64 = 7 << 30;
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;
/// The value that lifts a limit.
const UNLIMITED: &str = "unlimited";

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(PathBuf),
    /// `host:port`, plain HTTP (put TLS-protected engines behind a local socket).
    Tcp(String),
}

impl DockerHost {
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(path) = value.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{value:?} names no socket path"));
            }
            Ok(DockerHost::Unix(PathBuf::from(path)))
        } else if let Some(addr) = value
            .strip_prefix("tcp://")
            .or_else(|| value.strip_prefix("http://"))
        {
            Ok(DockerHost::Tcp(addr.trim_end_matches('/').to_owned()))
        } else {
            Err(format!(
                "{value:?} is not unix:///path/to/docker.sock or tcp://host:port"
            ))
        }
    }

    /// The URL form, for logs and bollard.
    pub fn url(&self) -> String {
        match self {
            DockerHost::Unix(path) => format!("unix://{}", path.display()),
            DockerHost::Tcp(addr) => format!("tcp://{addr}"),
        }
    }
}

/// Whether concurrent runners may share a cache volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Each cache volume is mounted by at most one runner at a time (a pool of numbered slots).
    Exclusive,
    /// Every runner of an owner and architecture mounts the same volumes (the operator's choice).
    Shared,
}

/// How images are pulled ahead of need: attempts, back-off, a bound per attempt, and how many
/// images at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullPolicy {
    /// `IMAGE_PULL_ATTEMPTS`: tries per image before it is reported failed.
    pub attempts: u32,
    /// `IMAGE_PULL_BACKOFF`: the wait after the first failure, doubled after each next one.
    pub backoff: Duration,
    /// `IMAGE_PULL_TIMEOUT`: one attempt longer than this is abandoned.
    pub timeout: Duration,
    /// `IMAGE_PULL_CONCURRENCY`: images pulled at once.
    pub concurrency: usize,
}

impl Default for PullPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(600),
            concurrency: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    pub host: DockerHost,
    pub network: Option<String>,
    /// In units of 10⁻⁹ CPUs (Docker's `NanoCpus`).
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    /// The most processes and threads one runner may have (`PidsLimit`).
    pub pids_limit: Option<i64>,
    pub sandbox: Sandbox,
    pub cache_sharing: CacheSharing,
    /// Whose caches are whose (`CACHE_VOLUME_SCOPE`).
    pub cache_scope: CacheScope,
    pub cache_prefix: String,
    pub mount_docker_socket: bool,
    pub init: bool,
    pub stop_grace: Duration,
    pub stray_grace: Duration,
    pub extra_labels: BTreeMap<String, String>,
    /// Variables every runner gets (the spec's own win over these).
    pub extra_env: BTreeMap<String, String>,
    /// `REGISTRY_MIRROR`.
    pub registry_mirror: Option<RegistryMirror>,
    /// `IMAGE_PLATFORM_CHECK`: images are checked against the runner's architecture.
    pub platform_check: bool,
    pub pull: PullPolicy,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            host: DockerHost::Unix(PathBuf::from("/var/run/docker.sock")),
            network: None,
            nano_cpus: Some(DEFAULT_NANO_CPUS),
            memory_bytes: Some(DEFAULT_MEMORY_BYTES),
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            sandbox: Sandbox::Strict,
            cache_sharing: CacheSharing::Exclusive,
            cache_scope: CacheScope::Repository,
            cache_prefix: "gha-cache".into(),
            mount_docker_socket: false,
            init: true,
            stop_grace: Duration::from_secs(10),
            stray_grace: Duration::from_secs(300),
            extra_labels: BTreeMap::new(),
            extra_env: BTreeMap::new(),
            registry_mirror: None,
            platform_check: true,
            pull: PullPolicy::default(),
        }
    }
}

/// `4g`, `512m`, `1024k`, `100000` (bytes), case-insensitive, optional `b`/`ib` suffix.
pub fn parse_memory(value: &str) -> Option<i64> {
    let v = value.trim().to_ascii_lowercase();
    let v = v
        .strip_suffix("ib")
        .or_else(|| v.strip_suffix('b'))
        .unwrap_or(&v);
    let (digits, factor) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1i64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        't' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    let n: f64 = digits.trim().parse().ok()?;
    let bytes = n * factor as f64;
    (bytes >= 1.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_duration(value: &str) -> Option<Duration> {
    value
        .parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(value))
        .ok()
}

impl DockerSettings {
    pub fn from_env(map: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut problem =
            |variable, message: String| problems.push(ConfigProblem { variable, message });
        let mut s = DockerSettings::default();

        if let Some(v) = get("DOCKER_HOST") {
            match DockerHost::parse(v) {
                Ok(host) => s.host = host,
                Err(e) => problem("DOCKER_HOST", e),
            }
        }
        s.network = get("RUNNER_NETWORK").map(str::to_owned);
        let unlimited = |v: &str| v.eq_ignore_ascii_case(UNLIMITED);
        if let Some(v) = get("RUNNER_CPUS") {
            match v.parse::<f64>() {
                _ if unlimited(v) => s.nano_cpus = None,
                Ok(cpus) if cpus > 0.0 && cpus < 100_000.0 => {
                    s.nano_cpus = Some((cpus * 1e9) as i64)
                }
                _ => problem(
                    "RUNNER_CPUS",
                    format!("{v:?} is not a positive number of CPUs"),
                ),
            }
        }
        if let Some(v) = get("RUNNER_MEMORY") {
            match parse_memory(v) {
                _ if unlimited(v) => s.memory_bytes = None,
                Some(bytes) if bytes >= 6 << 20 => s.memory_bytes = Some(bytes),
                Some(_) => problem(
                    "RUNNER_MEMORY",
                    format!("{v:?} is below Docker's minimum of 6m"),
                ),
                None => problem(
                    "RUNNER_MEMORY",
                    format!("{v:?} is not a size (e.g. 4g, 512m)"),
                ),
            }
        }
        if let Some(v) = get("RUNNER_PIDS_LIMIT") {
            match v.parse::<i64>() {
                _ if unlimited(v) => s.pids_limit = None,
                Ok(n) if n >= 16 => s.pids_limit = Some(n),
                _ => problem(
                    "RUNNER_PIDS_LIMIT",
                    format!("{v:?} is not a number of processes of at least 16, or unlimited"),
                ),
            }
        }
        match Sandbox::parse(get(sandbox::VARIABLE)) {
            Ok(mode) => s.sandbox = mode,
            Err(e) => problem(sandbox::VARIABLE, e),
        }
        match get("CACHE_VOLUME_SHARING")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("exclusive") => {}
            Some("shared") => s.cache_sharing = CacheSharing::Shared,
            Some(other) => problem(
                "CACHE_VOLUME_SHARING",
                format!("{other:?} is neither exclusive nor shared"),
            ),
        }
        match CacheScope::parse(get(cache_scope::VARIABLE)) {
            Ok(scope) => s.cache_scope = scope,
            Err(e) => problem(cache_scope::VARIABLE, e),
        }
        if let Some(v) = get("CACHE_VOLUME_PREFIX") {
            if v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                s.cache_prefix = v.to_owned();
            } else {
                problem(
                    "CACHE_VOLUME_PREFIX",
                    format!("{v:?} is not a valid start of a Docker volume name"),
                );
            }
        }
        for (var, field) in [
            ("RUNNER_DOCKER_SOCKET", &mut s.mount_docker_socket),
            ("RUNNER_INIT", &mut s.init),
            ("IMAGE_PLATFORM_CHECK", &mut s.platform_check),
        ] {
            if let Some(v) = get(var) {
                match parse_bool(v) {
                    Some(b) => *field = b,
                    None => problem(var, format!("{v:?} is not true or false")),
                }
            }
        }
        if let Some(v) = get("REGISTRY_MIRROR") {
            match RegistryMirror::parse(v) {
                Ok(mirror) => s.registry_mirror = Some(mirror),
                Err(e) => problem("REGISTRY_MIRROR", e),
            }
        }
        let mut concurrency = s.pull.concurrency as u32;
        for (var, field, most) in [
            ("IMAGE_PULL_ATTEMPTS", &mut s.pull.attempts, 100),
            ("IMAGE_PULL_CONCURRENCY", &mut concurrency, 16),
        ] {
            let Some(v) = get(var) else { continue };
            match v.parse::<u32>() {
                Ok(n) if (1..=most).contains(&n) => *field = n,
                _ => problem(var, format!("{v:?} is not a whole number from 1 to {most}")),
            }
        }
        s.pull.concurrency = concurrency as usize;
        for (var, field) in [
            ("RUNNER_STOP_GRACE", &mut s.stop_grace),
            ("STRAY_GRACE", &mut s.stray_grace),
            ("IMAGE_PULL_BACKOFF", &mut s.pull.backoff),
            ("IMAGE_PULL_TIMEOUT", &mut s.pull.timeout),
        ] {
            if let Some(v) = get(var) {
                match parse_duration(v) {
                    Some(d) => *field = d,
                    None => problem(var, format!("{v:?} is not a duration (e.g. 10s, 5m)")),
                }
            }
        }
        for (var, target) in [
            ("RUNNER_CONTAINER_LABELS", &mut s.extra_labels),
            ("RUNNER_ENV", &mut s.extra_env),
        ] {
            let Some(v) = get(var) else { continue };
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some((k, val)) if !k.trim().is_empty() => {
                        target.insert(k.trim().to_owned(), val.trim().to_owned());
                    }
                    _ => problem(var, format!("{pair:?} is not key=value")),
                }
            }
        }
        if let Some(key) = s
            .extra_env
            .iter()
            .find(|(k, v)| !super::spec::allowed_env(k, v))
            .map(|(k, _)| k.clone())
        {
            problem(
                "RUNNER_ENV",
                format!(
                    "{key} would give every runner a GitHub credential; runners only get \
                     their own registration"
                ),
            );
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_and_the_mirror_parse_and_bad_values_name_their_variable() {
        let s = DockerSettings::from_env(&map(&[
            ("REGISTRY_MIRROR", "mirror.example.com:5000"),
            ("IMAGE_PULL_ATTEMPTS", "5"),
            ("IMAGE_PULL_BACKOFF", "250ms"),
            ("IMAGE_PULL_TIMEOUT", "2m"),
            ("IMAGE_PULL_CONCURRENCY", "4"),
            ("IMAGE_PLATFORM_CHECK", "false"),
        ]))
        .unwrap();
        assert!(!s.platform_check);
        assert!(
            DockerSettings::default().platform_check,
            "checked unless turned off"
        );
        assert_eq!(
            s.registry_mirror
                .as_ref()
                .and_then(|m| m.rewrite("ubuntu"))
                .as_deref(),
            Some("mirror.example.com:5000/library/ubuntu")
        );
        assert_eq!(
            s.pull,
            PullPolicy {
                attempts: 5,
                backoff: Duration::from_millis(250),
                timeout: Duration::from_secs(120),
                concurrency: 4,
            }
        );
        assert_eq!(DockerSettings::default().pull, PullPolicy::default());
        for (var, value) in [
            ("REGISTRY_MIRROR", "http://mirror"),
            ("IMAGE_PULL_ATTEMPTS", "0"),
            ("IMAGE_PULL_CONCURRENCY", "100"),
            ("IMAGE_PULL_TIMEOUT", "soon"),
        ] {
            let errors = DockerSettings::from_env(&map(&[(var, value)])).unwrap_err();
            assert!(errors.to_string().contains(var), "{var}: {errors}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_safe() {
        let s = DockerSettings::from_env(&HashMap::new()).unwrap();
        assert_eq!(s.host.url(), DEFAULT_DOCKER_HOST);
        assert!(
            !s.mount_docker_socket,
            "the host socket is never mounted by default"
        );
        assert_eq!(s.cache_sharing, CacheSharing::Exclusive);
        assert_eq!(s.cache_scope, CacheScope::Repository);
        assert!(s.init);
        assert_eq!(s.sandbox, Sandbox::Strict);
        assert_eq!(s.nano_cpus, Some(2_000_000_000));
        assert_eq!(s.memory_bytes, Some(7 << 30));
        assert_eq!(s.pids_limit, Some(4096));
    }

    #[test]
    fn limits_can_be_lifted() {
        let s = DockerSettings::from_env(&map(&[
            ("RUNNER_CPUS", "unlimited"),
            ("RUNNER_MEMORY", "Unlimited"),
            ("RUNNER_PIDS_LIMIT", "unlimited"),
        ]))
        .unwrap();
        assert_eq!(
            (s.nano_cpus, s.memory_bytes, s.pids_limit),
            (None, None, None)
        );
    }

    #[test]
    fn every_variable_is_parsed() {
        let s = DockerSettings::from_env(&map(&[
            ("DOCKER_HOST", "tcp://10.0.0.1:2375"),
            ("RUNNER_NETWORK", "ci"),
            ("RUNNER_CPUS", "1.5"),
            ("RUNNER_MEMORY", "2g"),
            ("CACHE_VOLUME_SHARING", "Shared"),
            ("CACHE_VOLUME_SCOPE", "owner"),
            ("CACHE_VOLUME_PREFIX", "ci-cache"),
            ("RUNNER_DOCKER_SOCKET", "true"),
            ("RUNNER_INIT", "false"),
            ("RUNNER_STOP_GRACE", "1s"),
            ("STRAY_GRACE", "30"),
            ("RUNNER_CONTAINER_LABELS", "team=ci, env = test"),
            ("RUNNER_ENV", "DOCKER_HOST=tcp://dind:2375"),
            ("RUNNER_PIDS_LIMIT", "512"),
            ("RUNNER_SANDBOX", "privileged"),
        ]))
        .unwrap();
        assert_eq!(s.pids_limit, Some(512));
        assert_eq!(s.sandbox, Sandbox::Privileged);
        assert_eq!(s.host, DockerHost::Tcp("10.0.0.1:2375".into()));
        assert_eq!(s.network.as_deref(), Some("ci"));
        assert_eq!(s.nano_cpus, Some(1_500_000_000));
        assert_eq!(s.memory_bytes, Some(2 << 30));
        assert_eq!(s.cache_sharing, CacheSharing::Shared);
        assert_eq!(s.cache_scope, CacheScope::Owner);
        assert_eq!(s.cache_prefix, "ci-cache");
        assert!(s.mount_docker_socket);
        assert!(!s.init);
        assert_eq!(s.stop_grace, Duration::from_secs(1));
        assert_eq!(s.stray_grace, Duration::from_secs(30));
        assert_eq!(s.extra_labels.get("env").map(String::as_str), Some("test"));
        assert_eq!(
            s.extra_env.get("DOCKER_HOST").map(String::as_str),
            Some("tcp://dind:2375")
        );
    }

    #[test]
    fn problems_name_their_variables() {
        let err = DockerSettings::from_env(&map(&[
            ("DOCKER_HOST", "ssh://box"),
            ("RUNNER_CPUS", "-1"),
            ("RUNNER_MEMORY", "lots"),
            ("CACHE_VOLUME_SHARING", "sometimes"),
            ("CACHE_VOLUME_SCOPE", "everyone"),
            ("RUNNER_DOCKER_SOCKET", "perhaps"),
            ("STRAY_GRACE", "soon"),
            ("RUNNER_PIDS_LIMIT", "3"),
            ("RUNNER_SANDBOX", "off"),
            ("RUNNER_CONTAINER_LABELS", "novalue"),
            ("RUNNER_ENV", "ACCESS_TOKEN=ghp_x"),
        ]))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            vec![
                "DOCKER_HOST",
                "RUNNER_CPUS",
                "RUNNER_MEMORY",
                "RUNNER_PIDS_LIMIT",
                "RUNNER_SANDBOX",
                "CACHE_VOLUME_SHARING",
                "CACHE_VOLUME_SCOPE",
                "RUNNER_DOCKER_SOCKET",
                "STRAY_GRACE",
                "RUNNER_CONTAINER_LABELS",
                "RUNNER_ENV"
            ]
        );
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512m"), Some(512 << 20));
        assert_eq!(parse_memory("1.5G"), Some(3 << 29));
        assert_eq!(parse_memory("1GiB"), Some(1 << 30));
        assert_eq!(parse_memory("1048576"), Some(1 << 20));
        assert_eq!(parse_memory("x"), None);
    }
}
