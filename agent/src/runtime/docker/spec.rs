//! From a [`RunnerSpec`] to a container: a pure mapping, unit-tested without an engine.
//!
//! - **Registration by image layout.** Entry point, command and registration variables come
//!   from the [`Plan`] that [`crate::runtime::launch`] decided for the image (official:
//!   `/home/runner/run.sh` with `ACTIONS_RUNNER_INPUT_JITCONFIG`; myoung34: its entry script
//!   with `RUNNER_TOKEN`, `REPO_URL`, …, or its `run.sh` with a JIT config; custom:
//!   `RUNNER_COMMAND`). The owner's PAT is never given: the controller never sends it, and
//!   variables that would carry one are dropped here as well.
//! - **Cache volumes** (`CacheSettings.enabled`): named volumes per owner and repository (or per
//!   owner, `CACHE_VOLUME_SCOPE=owner`), architecture and cache name; exclusive volumes get a
//!   slot number so that concurrent runners never share one.
//! - **Labels** on everything ([`super::labels`]), so ownership is found by label.
//! - **Sandbox** ([`crate::runtime::sandbox`], `RUNNER_SANDBOX`): by default
//!   `no-new-privileges`, capabilities dropped but for the few a runner needs, a PID limit and
//!   CPU (at most the engine's) and memory limits.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, RestartPolicy};
use bollard::models::{RestartPolicyNameEnum, VolumeCreateRequest};
use shared::command::RunnerSpec;

use super::config::DockerSettings;
use super::labels;
use crate::runtime::launch::Plan;
use crate::runtime::sandbox::{KEPT_CAPABILITIES, Sandbox};

/// The cache used when a runner asks for caching without naming volumes.
pub const DEFAULT_CACHE: (&str, &str) = ("toolcache", "/opt/hostedtoolcache");
/// Where the Docker socket is mounted in a runner that asks for it (unsafe, see the README).
pub const SOCKET_IN_RUNNER: &str = "/var/run/docker.sock";

/// Variables that would carry a long-lived credential (myoung34's `ACCESS_TOKEN` is a PAT);
/// never passed to a runner, whoever asks.
const FORBIDDEN_ENV: [&str; 7] = [
    "ACCESS_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_PAT",
    "APP_ID",
    "APP_PRIVATE_KEY",
    "APP_LOGIN",
];
/// Value prefixes of GitHub personal access and OAuth tokens.
const TOKEN_PREFIXES: [&str; 4] = ["ghp_", "github_pat_", "gho_", "ghu_"];

/// One cache volume a runner mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMount {
    /// The cache's name (`toolcache`).
    pub cache: String,
    pub volume: String,
    pub path: String,
}

/// What the runtime decided around the spec: who creates the container and until when it runs.
#[derive(Debug, Clone)]
pub struct Placement {
    pub agent: String,
    pub controller: String,
    /// When the runner is stopped, in milliseconds since the Unix epoch.
    pub deadline_ms: i64,
    pub caches: Vec<CacheMount>,
    /// The engine's CPUs in units of 10⁻⁹ (it refuses a larger `NanoCpus`), when known.
    pub engine_nano_cpus: Option<i64>,
}

/// The caches a spec asks for: (cache name, mount path).
pub fn requested_caches(spec: &RunnerSpec) -> Vec<(String, String)> {
    if !spec.cache.enabled {
        return Vec::new();
    }
    if spec.cache.volumes.is_empty() {
        return vec![(DEFAULT_CACHE.0.to_owned(), DEFAULT_CACHE.1.to_owned())];
    }
    spec.cache
        .volumes
        .iter()
        .map(|(name, path)| (name.clone(), path.clone()))
        .collect()
}

/// Keeps only `[a-z0-9_.-]`, so cache names are safe in volume names.
fn clean(part: &str) -> String {
    part.to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `<prefix>-<whose>-<arch>-<cache>[-<slot>]`, where `whose` is
/// [`CacheScope::key`](crate::runtime::cache_scope::CacheScope::key): `owner.repository`
/// (`gha-cache-acme.app-amd64-toolcache-0`) or `owner` (`gha-cache-acme-amd64-toolcache-0`).
pub fn volume_name(
    prefix: &str,
    whose: &str,
    spec: &RunnerSpec,
    cache: &str,
    slot: Option<u32>,
) -> String {
    let base = format!("{prefix}-{whose}-{}-{}", spec.arch.as_str(), clean(cache));
    match slot {
        Some(n) => format!("{base}-{n}"),
        None => base,
    }
}

/// The labels every object of this runner carries.
pub fn base_labels(
    spec: &RunnerSpec,
    settings: &DockerSettings,
    placement: &Placement,
) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = settings
        .extra_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    l.insert(labels::CONTROLLER.into(), placement.controller.clone());
    l.insert(labels::AGENT.into(), placement.agent.clone());
    l.insert(labels::OWNER.into(), spec.owner.clone());
    l.insert(labels::ARCH.into(), spec.arch.as_str().into());
    l
}

/// The volume to create for one cache mount.
pub fn volume_request(
    spec: &RunnerSpec,
    settings: &DockerSettings,
    placement: &Placement,
    mount: &CacheMount,
) -> VolumeCreateRequest {
    let mut l = base_labels(spec, settings, placement);
    l.insert(labels::CACHE.into(), mount.cache.clone());
    VolumeCreateRequest {
        name: Some(mount.volume.clone()),
        labels: Some(l),
        ..Default::default()
    }
}

/// Whether a variable may be passed to a runner.
pub fn allowed_env(key: &str, value: &str) -> bool {
    !FORBIDDEN_ENV.iter().any(|f| f.eq_ignore_ascii_case(key))
        && !TOKEN_PREFIXES.iter().any(|p| value.trim().starts_with(p))
}

/// The whole container: image, name, environment, command, labels, mounts and limits.
/// Returns the body and the keys of variables from the spec that were dropped.
pub fn container_body(
    spec: &RunnerSpec,
    settings: &DockerSettings,
    placement: &Placement,
    plan: &Plan,
) -> (ContainerCreateBody, Vec<String>) {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut dropped = Vec::new();
    for (k, v) in settings.extra_env.iter().chain(&spec.env) {
        if allowed_env(k, v) {
            env.insert(k.clone(), v.clone());
        } else {
            dropped.push(k.clone());
        }
    }
    for cache in &placement.caches {
        if cache.cache == DEFAULT_CACHE.0 && cache.path == DEFAULT_CACHE.1 {
            env.entry("RUNNER_TOOL_CACHE".into())
                .or_insert_with(|| cache.path.clone());
            env.entry("AGENT_TOOLSDIRECTORY".into())
                .or_insert_with(|| cache.path.clone());
        }
    }
    // Registration variables win over anything the spec's env says.
    env.extend(plan.env.iter().cloned());

    let mut l = base_labels(spec, settings, placement);
    l.insert(labels::RUNNER_ID.into(), spec.id.to_string());
    l.insert(labels::RUNNER_NAME.into(), spec.name.clone());
    l.insert(labels::DEADLINE.into(), placement.deadline_ms.to_string());
    if !placement.caches.is_empty() {
        let volumes: Vec<&str> = placement.caches.iter().map(|c| c.volume.as_str()).collect();
        l.insert(labels::CACHE_VOLUMES.into(), volumes.join(","));
    }

    let mut mounts: Vec<Mount> = placement
        .caches
        .iter()
        .map(|c| Mount {
            target: Some(c.path.clone()),
            source: Some(c.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Default::default()
        })
        .collect();
    if settings.mount_docker_socket
        && let super::config::DockerHost::Unix(path) = &settings.host
    {
        mounts.push(Mount {
            target: Some(SOCKET_IN_RUNNER.into()),
            source: Some(path.display().to_string()),
            typ: Some(MountType::BIND),
            ..Default::default()
        });
    }

    let nano_cpus = match (settings.nano_cpus, placement.engine_nano_cpus) {
        (Some(want), Some(engine)) if engine > 0 => Some(want.min(engine)),
        (want, _) => want,
    };
    let (security_opt, cap_drop, cap_add, privileged) = match settings.sandbox {
        Sandbox::Strict => (
            Some(vec!["no-new-privileges:true".to_owned()]),
            Some(vec!["ALL".to_owned()]),
            Some(
                KEPT_CAPABILITIES
                    .iter()
                    .map(|c| format!("CAP_{c}"))
                    .collect(),
            ),
            None,
        ),
        Sandbox::None => (None, None, None, None),
        Sandbox::Privileged => (None, None, None, Some(true)),
    };
    let host_config = HostConfig {
        network_mode: settings.network.clone(),
        nano_cpus,
        memory: settings.memory_bytes,
        // No swap beyond the memory limit (the engine's default would double it).
        memory_swap: settings.memory_bytes,
        pids_limit: settings.pids_limit,
        security_opt,
        cap_drop,
        cap_add,
        privileged,
        mounts: (!mounts.is_empty()).then_some(mounts),
        init: Some(settings.init),
        // We remove containers ourselves, after their exit code is reported.
        auto_remove: Some(false),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: Some(spec.name.chars().take(63).collect()),
        env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        entrypoint: plan.entrypoint.clone(),
        cmd: plan.cmd.clone(),
        labels: Some(l),
        host_config: Some(host_config),
        ..Default::default()
    };
    (body, dropped)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::arch::Arch;
    use shared::command::{CacheSettings, Registration};
    use shared::ids::RunnerId;

    use super::*;
    use crate::runtime::launch::{self, Layout};

    fn spec(registration: Registration) -> RunnerSpec {
        RunnerSpec {
            id: RunnerId::parse("r-1").unwrap(),
            name: "gha-acme-r-1".into(),
            image: "myoung34/github-runner:ubuntu-noble".into(),
            launch: Default::default(),
            registration,
            labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
            env: BTreeMap::from([
                ("FOO".into(), "bar".into()),
                ("ACCESS_TOKEN".into(), "ghp_secret".into()),
                ("INNOCENT".into(), "github_pat_123".into()),
            ]),
            timeout: Duration::from_secs(60),
            cache: CacheSettings::default(),
            arch: Arch::Amd64,
            owner: "Acme".into(),
            repository: Some("app".into()),
        }
    }

    fn placement(caches: Vec<CacheMount>) -> Placement {
        Placement {
            agent: "host-1".into(),
            controller: "ctl".into(),
            deadline_ms: 1_000,
            caches,
            engine_nano_cpus: None,
        }
    }

    fn env_of(body: &ContainerCreateBody) -> BTreeMap<String, String> {
        body.env
            .as_ref()
            .unwrap()
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn body(s: &RunnerSpec, layout: Layout) -> ContainerCreateBody {
        let plan = launch::plan(layout, s).unwrap();
        container_body(s, &DockerSettings::default(), &placement(vec![]), &plan).0
    }

    #[test]
    fn the_plan_decides_entry_point_command_and_registration() {
        let s = spec(Registration::JitConfig("base64jit".into()));
        let official = body(&s, Layout::Official);
        assert_eq!(
            official.entrypoint,
            Some(vec![launch::OFFICIAL_RUN_SH.to_owned()])
        );
        assert_eq!(official.cmd, Some(vec![]));
        let env = env_of(&official);
        assert_eq!(env["ACTIONS_RUNNER_INPUT_JITCONFIG"], "base64jit");
        assert!(!env.contains_key("RUNNER_TOKEN"));
        let jit_myoung34 = body(&s, Layout::Myoung34);
        assert_eq!(
            jit_myoung34.entrypoint,
            Some(vec![launch::MYOUNG34_RUN_SH.to_owned()])
        );

        let t = spec(Registration::Token {
            token: "AABBCC".into(),
            url: "https://github.com/acme/app".into(),
            runner_group: String::new(),
        });
        let token = body(&t, Layout::Myoung34);
        assert_eq!(
            (token.entrypoint.as_ref(), token.cmd.as_ref()),
            (None, None),
            "the image's entry script does the registration"
        );
        let env = env_of(&token);
        assert_eq!(env["RUNNER_TOKEN"], "AABBCC");
        assert_eq!(env["REPO_URL"], "https://github.com/acme/app");
        assert!(!env.contains_key("ACTIONS_RUNNER_INPUT_JITCONFIG"));
    }

    #[test]
    fn credentials_from_the_spec_env_are_dropped() {
        let s = spec(Registration::JitConfig("j".into()));
        let plan = launch::plan(Layout::Official, &s).unwrap();
        let (body, dropped) =
            container_body(&s, &DockerSettings::default(), &placement(vec![]), &plan);
        let env = env_of(&body);
        assert_eq!(env["FOO"], "bar");
        assert!(!env.contains_key("ACCESS_TOKEN"));
        assert!(!env.contains_key("INNOCENT"));
        assert_eq!(dropped, vec!["ACCESS_TOKEN", "INNOCENT"]);
        assert!(!env.values().any(|v| v.starts_with("ghp_")));
    }

    #[test]
    fn labels_limits_network_and_mounts() {
        let s = spec(Registration::JitConfig("j".into()));
        let settings = DockerSettings {
            extra_env: BTreeMap::from([
                ("DOCKER_HOST".into(), "tcp://dind:2375".into()),
                ("FOO".into(), "from the agent".into()),
            ]),
            network: Some("ci".into()),
            nano_cpus: Some(2_000_000_000),
            memory_bytes: Some(1 << 30),
            mount_docker_socket: true,
            extra_labels: BTreeMap::from([("team".into(), "ci".into())]),
            ..Default::default()
        };
        let cache = CacheMount {
            cache: "toolcache".into(),
            volume: "gha-cache-acme-amd64-toolcache-0".into(),
            path: "/opt/hostedtoolcache".into(),
        };
        let plan = launch::plan(Layout::Official, &s).unwrap();
        let (body, _) = container_body(&s, &settings, &placement(vec![cache]), &plan);
        let l = body.labels.as_ref().unwrap();
        assert_eq!(l[labels::MANAGED_BY], "gha-scaler");
        assert_eq!(l[labels::AGENT], "host-1");
        assert_eq!(l[labels::CONTROLLER], "ctl");
        assert_eq!(l[labels::OWNER], "Acme");
        assert_eq!(l[labels::RUNNER_ID], "r-1");
        assert_eq!(l[labels::DEADLINE], "1000");
        assert_eq!(l[labels::CACHE_VOLUMES], "gha-cache-acme-amd64-toolcache-0");
        assert_eq!(l["team"], "ci");
        let hc = body.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("ci"));
        assert_eq!(hc.nano_cpus, Some(2_000_000_000));
        assert_eq!(hc.memory, Some(1 << 30));
        let mounts = hc.mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[1].source.as_deref(),
            Some("/var/run/docker.sock"),
            "socket mounted only because asked for"
        );
        let env = env_of(&body);
        assert_eq!(env["RUNNER_TOOL_CACHE"], "/opt/hostedtoolcache");
        assert_eq!(env["DOCKER_HOST"], "tcp://dind:2375");
        assert_eq!(
            env["FOO"], "bar",
            "the spec's variables win over the agent's"
        );
    }

    #[test]
    fn runners_are_sandboxed_by_default() {
        let s = spec(Registration::JitConfig("j".into()));
        let plan = launch::plan(Layout::Official, &s).unwrap();
        let settings = DockerSettings::default();
        let (body, _) = container_body(&s, &settings, &placement(vec![]), &plan);
        let hc = body.host_config.unwrap();
        assert_eq!(
            hc.security_opt,
            Some(vec!["no-new-privileges:true".to_owned()])
        );
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        let kept = hc.cap_add.unwrap();
        assert!(kept.contains(&"CAP_SETUID".to_owned()));
        assert!(
            !kept
                .iter()
                .any(|c| c.contains("NET_RAW") || c.contains("SYS_ADMIN"))
        );
        assert_eq!(hc.privileged, None);
        assert_eq!(hc.pids_limit, Some(4096));
        assert_eq!(hc.nano_cpus, Some(2_000_000_000));
        assert_eq!(hc.memory, Some(7 << 30));
        assert_eq!(hc.memory_swap, Some(7 << 30));

        // More CPUs than the engine has would be refused: the limit is the engine's count.
        let mut one_cpu = placement(vec![]);
        one_cpu.engine_nano_cpus = Some(1_000_000_000);
        let (body, _) = container_body(&s, &settings, &one_cpu, &plan);
        assert_eq!(body.host_config.unwrap().nano_cpus, Some(1_000_000_000));
    }

    #[test]
    fn the_sandbox_can_be_opted_out_of() {
        let s = spec(Registration::JitConfig("j".into()));
        let plan = launch::plan(Layout::Official, &s).unwrap();
        let mut settings = DockerSettings {
            sandbox: Sandbox::None,
            ..Default::default()
        };
        let (body, _) = container_body(&s, &settings, &placement(vec![]), &plan);
        let hc = body.host_config.unwrap();
        assert_eq!(
            (hc.security_opt, hc.cap_drop, hc.cap_add),
            (None, None, None)
        );
        assert_eq!(hc.pids_limit, Some(4096), "limits stay");
        settings.sandbox = Sandbox::Privileged;
        let (body, _) = container_body(&s, &settings, &placement(vec![]), &plan);
        assert_eq!(body.host_config.unwrap().privileged, Some(true));
    }

    #[test]
    fn cache_volumes_are_per_owner_repository_arch_and_slot() {
        let mut s = spec(Registration::JitConfig("j".into()));
        assert!(requested_caches(&s).is_empty());
        s.cache.enabled = true;
        assert_eq!(
            requested_caches(&s),
            vec![("toolcache".to_owned(), "/opt/hostedtoolcache".to_owned())]
        );
        assert_eq!(
            volume_name("gha-cache", "acme.app", &s, "toolcache", Some(2)),
            "gha-cache-acme.app-amd64-toolcache-2"
        );
        s.arch = Arch::Arm64;
        assert_eq!(
            volume_name("gha-cache", "acme", &s, "npm cache", None),
            "gha-cache-acme-arm64-npm-cache"
        );
    }
}
