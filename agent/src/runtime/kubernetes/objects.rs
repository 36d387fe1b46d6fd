//! The Kubernetes objects a runner becomes, as pure functions of its spec: the Pod, the Secret
//! holding its registration material and the cache PersistentVolumeClaims.
//!
//! Kept free of I/O so the exact shapes are unit-tested here and asserted again, as the API
//! server received them, in the system tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use shared::arch::Arch;
use shared::command::{Registration, RunnerSpec};
use shared::ids::RunnerId;

use super::settings::{KubernetesSettings, is_dns_label, is_label_value};
use crate::runtime::launch::{self, Plan};
use crate::runtime::sandbox::{KEPT_CAPABILITIES, Sandbox};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "gha-scaler";
pub const CONTROLLER_LABEL: &str = "gha-scaler/controller";
pub const AGENT_LABEL: &str = "gha-scaler/agent";
/// The installation (the CA the agent trusts, or `INSTALLATION_ID`): two installations whose
/// agents share a name and a `CONTROLLER_ID` in one namespace never touch each other's pods.
pub const INSTALLATION_LABEL: &str = "gha-scaler/installation";
pub const OWNER_LABEL: &str = "gha-scaler/owner";
pub const RUNNER_LABEL: &str = "gha-scaler/runner-id";
pub const ARCH_LABEL: &str = "gha-scaler/arch";
/// The full runner id and name (labels are limited to 63 characters; annotations are not).
pub const RUNNER_ID_ANNOTATION: &str = "gha-scaler/runner-id";
pub const RUNNER_NAME_ANNOTATION: &str = "gha-scaler/runner-name";
pub const NODE_ARCH_LABEL: &str = "kubernetes.io/arch";

/// The key holding the registration material in the runner's Secret.
pub const JIT_CONFIG_KEY: &str = "jitconfig";
pub const TOKEN_KEY: &str = "token";
/// The runner's container in its pod.
pub const RUNNER_CONTAINER: &str = "runner";
/// The single volume that holds every cache path of a runner when PVCs are used.
pub const CACHE_CLAIM_VOLUME: &str = "cache";

/// Who the objects belong to: written as labels on all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub controller_id: String,
    /// The installation (see [`INSTALLATION_LABEL`]); `None` for a runtime that tells its
    /// objects apart by `CONTROLLER_ID` and agent name alone.
    pub installation: Option<String>,
    /// The agent's name, as the controller knows it (from its certificate).
    pub agent: String,
}

impl Ownership {
    /// The label selector for every object of this agent.
    pub fn selector(&self) -> String {
        let mut selector = format!(
            "{MANAGED_BY}={MANAGED_BY_VALUE},{CONTROLLER_LABEL}={},{AGENT_LABEL}={}",
            label_value(&self.controller_id),
            label_value(&self.agent)
        );
        if let Some(installation) = &self.installation {
            selector.push_str(&format!(
                ",{INSTALLATION_LABEL}={}",
                label_value(installation)
            ));
        }
        selector
    }

    /// The selector for every runner object in the namespace, whichever agent made it (used to
    /// keep cache claims exclusive between agents sharing a namespace).
    pub fn all_runners_selector() -> String {
        format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (
                CONTROLLER_LABEL.to_owned(),
                label_value(&self.controller_id),
            ),
            (AGENT_LABEL.to_owned(), label_value(&self.agent)),
        ]);
        if let Some(installation) = &self.installation {
            labels.insert(INSTALLATION_LABEL.to_owned(), label_value(installation));
        }
        labels
    }
}

/// The labels of one runner's pod and secret.
pub fn runner_labels(who: &Ownership, spec: &RunnerSpec) -> BTreeMap<String, String> {
    let mut labels = who.labels();
    labels.insert(OWNER_LABEL.into(), label_value(&spec.owner));
    labels.insert(RUNNER_LABEL.into(), label_value(spec.id.as_str()));
    labels.insert(ARCH_LABEL.into(), spec.arch.as_str().into());
    labels
}

/// The selector for one runner's pod.
pub fn runner_selector(who: &Ownership, id: &RunnerId) -> String {
    format!(
        "{},{RUNNER_LABEL}={}",
        who.selector(),
        label_value(id.as_str())
    )
}

/// The pod's name: the runner's name if it is a valid DNS label (it is also the hostname).
pub fn pod_name(spec: &RunnerSpec) -> String {
    dns_label(&spec.name)
}

/// A runner's Secret is named after its pod, with this suffix.
pub const SECRET_SUFFIX: &str = "-registration";

pub fn secret_name(pod: &str) -> String {
    format!("{pod}{SECRET_SUFFIX}")
}

/// The claim of cache slot `slot` for `whose` (an owner, or an owner and repository: see
/// [`CacheScope::key`](crate::runtime::cache_scope::CacheScope::key), already lower-cased) and
/// an architecture: `gha-cache-acme-amd64-0`, or with a repository (whose `.` a label cannot
/// hold) `gha-cache-acme-app-amd64-0-<hash>`.
pub fn claim_name(whose: &str, arch: Arch, slot: u32) -> String {
    dns_label(&format!("gha-cache-{whose}-{arch}-{slot}"))
}

/// The Secret with the runner's registration material (a JIT config or a registration token,
/// never the owner's PAT). Its owner reference to the pod is added once the pod exists.
pub fn secret(who: &Ownership, spec: &RunnerSpec, namespace: &str) -> Secret {
    let data = match &spec.registration {
        Registration::JitConfig(jit) => BTreeMap::from([(JIT_CONFIG_KEY.into(), jit.clone())]),
        Registration::Token { token, .. } => BTreeMap::from([(TOKEN_KEY.into(), token.clone())]),
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&pod_name(spec))),
            namespace: Some(namespace.into()),
            labels: Some(runner_labels(who, spec)),
            annotations: Some(annotations(spec)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(data),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// Makes the Secret go away with its pod (the garbage collector follows this reference).
pub fn owner_reference(pod: &Pod) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// Where a runner's caches live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheVolumes {
    None,
    /// One `emptyDir` per cache path: gone with the pod.
    EmptyDir,
    /// One claim for all the runner's cache paths (each as a sub-path), exclusive to this pod.
    Claim(String),
}

/// The runner's pod, started as `plan` says (entry point as `command`, the image's CMD unless
/// our entry point replaces it, `runAsUser` where the layout needs a user).
pub fn pod(
    who: &Ownership,
    settings: &KubernetesSettings,
    spec: &RunnerSpec,
    namespace: &str,
    caches: &CacheVolumes,
    plan: &Plan,
) -> Pod {
    let name = pod_name(spec);
    let secret = secret_name(&name);
    let secret_env = |var: &str, key: &str| EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let plain_env = |var: &str, value: &str| EnvVar {
        name: var.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
    let mut env: Vec<EnvVar> = spec.env.iter().map(|(k, v)| plain_env(k, v)).collect();
    if !plan.env.iter().any(|(k, _)| k == "RUNNER_NAME") {
        env.push(plain_env("RUNNER_NAME", &spec.name));
    }
    // The registration material itself is referenced from the Secret, never in the pod.
    for (k, v) in &plan.env {
        env.push(match k.as_str() {
            launch::JIT_ENV => secret_env(k, JIT_CONFIG_KEY),
            launch::TOKEN_ENV => secret_env(k, TOKEN_KEY),
            _ => plain_env(k, v),
        });
    }
    // `command` replaces the image's ENTRYPOINT and, without `args`, its CMD too.
    let command = plan.entrypoint.clone();
    let args = plan.cmd.clone().filter(|a| !a.is_empty());
    let security_context = security_context(settings.sandbox, plan.uid);
    let (volumes, mounts) = cache_volumes(spec, caches);
    let mut node_selector = settings.node_selector.clone();
    node_selector.insert(NODE_ARCH_LABEL.into(), spec.arch.as_str().into());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.into()),
            labels: Some(runner_labels(who, spec)),
            annotations: Some(annotations(spec)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(spec.timeout.as_secs().max(1) as i64),
            node_selector: Some(node_selector),
            tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
            service_account_name: settings.service_account.clone(),
            // Runner jobs run untrusted code: no API token unless a service account is asked for.
            automount_service_account_token: Some(settings.service_account.is_some()),
            containers: vec![Container {
                name: RUNNER_CONTAINER.into(),
                image: Some(spec.image.clone()),
                command,
                args,
                env: Some(env),
                security_context,
                resources: resources(settings),
                volume_mounts: (!mounts.is_empty()).then_some(mounts),
                ..Container::default()
            }],
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// The runner container's `securityContext`: the user the layout needs, and the sandbox
/// ([`crate::runtime::sandbox`]); strict is what the "restricted" Pod Security Standard asks,
/// except that the few capabilities a runner needs are kept.
fn security_context(sandbox: Sandbox, uid: Option<i64>) -> Option<SecurityContext> {
    let mut sc = SecurityContext {
        run_as_user: uid,
        run_as_non_root: uid.map(|uid| uid != 0),
        ..SecurityContext::default()
    };
    match sandbox {
        Sandbox::Strict => {
            sc.allow_privilege_escalation = Some(false);
            sc.privileged = Some(false);
            sc.capabilities = Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(KEPT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
            });
            sc.seccomp_profile = Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            });
        }
        Sandbox::None => {}
        Sandbox::Privileged => sc.privileged = Some(true),
    }
    (sc != SecurityContext::default()).then_some(sc)
}

fn annotations(spec: &RunnerSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUNNER_ID_ANNOTATION.into(), spec.id.as_str().into()),
        (RUNNER_NAME_ANNOTATION.into(), spec.name.clone()),
    ])
}

fn cache_volumes(spec: &RunnerSpec, caches: &CacheVolumes) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    match caches {
        CacheVolumes::None => {}
        CacheVolumes::EmptyDir => {
            for (i, path) in spec.cache.volumes.values().enumerate() {
                let name = format!("cache-{i}");
                volumes.push(Volume {
                    name: name.clone(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                });
                mounts.push(VolumeMount {
                    name,
                    mount_path: path.clone(),
                    ..VolumeMount::default()
                });
            }
        }
        CacheVolumes::Claim(claim) => {
            volumes.push(Volume {
                name: CACHE_CLAIM_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            });
            for (cache, path) in &spec.cache.volumes {
                mounts.push(VolumeMount {
                    name: CACHE_CLAIM_VOLUME.into(),
                    mount_path: path.clone(),
                    sub_path: Some(dns_label(cache)),
                    ..VolumeMount::default()
                });
            }
        }
    }
    (volumes, mounts)
}

fn resources(settings: &KubernetesSettings) -> Option<ResourceRequirements> {
    let r = &settings.resources;
    let map = |cpu: &Option<String>, memory: &Option<String>| {
        let m: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), Quantity(v.clone()?))))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let requests = map(&r.cpu_request, &r.memory_request);
    let limits = map(&r.cpu_limit, &r.memory_limit);
    (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..ResourceRequirements::default()
    })
}

/// A cache claim: `ReadWriteOnce`, per owner (and repository), architecture and slot, never owned by a pod (it
/// outlives runners: that is the point of a cache).
pub fn claim(
    who: &Ownership,
    settings: &KubernetesSettings,
    owner: &str,
    whose: &str,
    arch: Arch,
    slot: u32,
    namespace: &str,
) -> PersistentVolumeClaim {
    let mut labels = who.labels();
    labels.insert(OWNER_LABEL.into(), label_value(owner));
    labels.insert(ARCH_LABEL.into(), arch.as_str().into());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(whose, arch, slot)),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: settings.pvc_storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(settings.pvc_size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// `s` as a label value; anything invalid or too long is made valid and given a hash suffix,
/// so distinct inputs stay distinct.
pub fn label_value(s: &str) -> String {
    if is_label_value(s) {
        return s.to_owned();
    }
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    with_hash(&cleaned, s, |c: char| c.is_ascii_alphanumeric())
}

/// `s` as a DNS-1123 label (lowercase), with a hash suffix when it had to change.
pub fn dns_label(s: &str) -> String {
    if is_dns_label(s) {
        return s.to_owned();
    }
    let cleaned: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    with_hash(&cleaned, s, |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit()
    })
}

fn with_hash(cleaned: &str, original: &str, edge_ok: impl Fn(char) -> bool) -> String {
    let hash = format!("{:08x}", fnv1a(original) as u32);
    let head: String = cleaned.chars().take(63 - 9).collect();
    let head = head.trim_matches(|c: char| !edge_ok(c));
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// FNV-1a: a stable, dependency-free hash for name suffixes (not for security).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_runner_containers_cannot_gain_privileges() {
        let sc = security_context(Sandbox::Strict, Some(1001)).unwrap();
        let json = serde_json::to_value(&sc).unwrap();
        assert_eq!(json["allowPrivilegeEscalation"], false);
        assert_eq!(json["privileged"], false);
        assert_eq!(json["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(json["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(json["runAsUser"], 1001);
        let added = json["capabilities"]["add"].as_array().unwrap();
        assert!(!added.iter().any(|c| c == "NET_RAW" || c == "SYS_ADMIN"));

        assert_eq!(security_context(Sandbox::None, None), None);
        let dind = security_context(Sandbox::Privileged, None).unwrap();
        assert_eq!(dind.privileged, Some(true));
    }

    #[test]
    fn names_are_valid_and_stay_distinct() {
        assert_eq!(dns_label("gha-r1"), "gha-r1");
        let a = dns_label("Gha_R1");
        let b = dns_label("gha-r1_");
        assert!(is_dns_label(&a) && is_dns_label(&b), "{a} {b}");
        assert_ne!(a, b);
        let long = dns_label(&"x".repeat(100));
        assert!(long.len() <= 63 && is_dns_label(&long));
        assert_eq!(label_value("r1"), "r1");
        let weird = label_value("host.example.com/with space");
        assert!(is_label_value(&weird), "{weird}");
        assert_eq!(claim_name("acme", Arch::Arm64, 0), "gha-cache-acme-arm64-0");
        let app = claim_name("acme.app", Arch::Arm64, 0);
        assert!(is_dns_label(&app) && app.starts_with("gha-cache-acme-app-arm64-0-"));
        assert_ne!(app, claim_name("acme-app", Arch::Arm64, 0));
    }
}
