//! The Kubernetes runtime's configuration, parsed once from the same variable map as
//! [`AgentConfig`](crate::config::AgentConfig), so the shared config module stays untouched.
//!
//! Every value is validated here and each problem names its variable, like the agent's own
//! configuration.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Toleration;

use crate::config::{ConfigErrors, ConfigProblem};
use crate::runtime::cache_scope::{self, CacheScope};
use crate::runtime::sandbox::{self, Sandbox};

/// How runner pods are shaped and looked after. (Whether a runner gets caches, and whether they
/// are PersistentVolumeClaims, comes with each runner spec from the controller.)
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSettings {
    /// `KUBERNETES_NAMESPACE`; `None` means the client's default (the agent pod's own namespace
    /// in a cluster, the kubeconfig context's outside).
    pub namespace: Option<String>,
    /// `CONTROLLER_ID`: written on every object as a label, so two controllers sharing a
    /// namespace never adopt each other's runners. Same default as the controller's.
    pub controller_id: String,
    /// `KUBERNETES_CPU_REQUEST` / `_CPU_LIMIT` / `_MEMORY_REQUEST` / `_MEMORY_LIMIT`. For a
    /// resource where neither is set, [`DEFAULT_RESOURCES`] apply.
    pub resources: Resources,
    /// `RUNNER_SANDBOX`: the runner container's `securityContext`.
    pub sandbox: Sandbox,
    /// `CACHE_VOLUME_SCOPE`: whose cache claims are whose.
    pub cache_scope: CacheScope,
    /// `KUBERNETES_NODE_SELECTOR`: `key=value,...`, added to the architecture selector.
    pub node_selector: BTreeMap<String, String>,
    /// `KUBERNETES_TOLERATIONS`: `key[=value]:Effect,...` (kubectl's taint syntax).
    pub tolerations: Vec<Toleration>,
    /// `KUBERNETES_SERVICE_ACCOUNT`: the runner pods' service account; without one the pods
    /// get no API token mounted at all.
    pub service_account: Option<String>,
    /// `KUBERNETES_PVC_STORAGE_CLASS` (cluster default when unset) and `KUBERNETES_PVC_SIZE`.
    pub pvc_storage_class: Option<String>,
    pub pvc_size: String,
    /// `KUBERNETES_PENDING_TIMEOUT`: a pod still Pending after this is reported failed and
    /// deleted.
    pub pending_timeout: Duration,
}

/// Resource requests and limits for the runner container (Kubernetes quantity strings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// Requests and limits of a resource the operator says nothing about: GitHub's standard Linux
/// runner has 2 CPUs and 7 GB; the requests are what a typical job uses, for scheduling.
pub const DEFAULT_RESOURCES: [(&str, &str, &str); 2] =
    [("cpu", "500m", "2"), ("memory", "1Gi", "7Gi")];

pub const DEFAULT_PVC_SIZE: &str = "10Gi";
pub const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            namespace: None,
            controller_id: "gha-scaler".into(),
            resources: Resources {
                cpu_request: Some(DEFAULT_RESOURCES[0].1.into()),
                cpu_limit: Some(DEFAULT_RESOURCES[0].2.into()),
                memory_request: Some(DEFAULT_RESOURCES[1].1.into()),
                memory_limit: Some(DEFAULT_RESOURCES[1].2.into()),
            },
            sandbox: Sandbox::Strict,
            cache_scope: CacheScope::Repository,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            service_account: None,
            pvc_storage_class: None,
            pvc_size: DEFAULT_PVC_SIZE.into(),
            pending_timeout: DEFAULT_PENDING_TIMEOUT,
        }
    }
}

impl KubernetesSettings {
    pub fn from_env(map: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut problem =
            |variable, message: String| problems.push(ConfigProblem { variable, message });
        let mut s = Self::default();

        if let Some(ns) = get("KUBERNETES_NAMESPACE") {
            if is_dns_label(ns) {
                s.namespace = Some(ns.to_owned());
            } else {
                problem(
                    "KUBERNETES_NAMESPACE",
                    format!("{ns:?} is not a valid namespace name"),
                );
            }
        }
        if let Some(id) = get("CONTROLLER_ID") {
            if is_label_value(id) {
                s.controller_id = id.to_owned();
            } else {
                problem(
                    "CONTROLLER_ID",
                    format!("{id:?} cannot be a Kubernetes label value"),
                );
            }
        }
        let mut quantity = |var: &'static str| {
            let v = get(var)?;
            if is_quantity(v) {
                Some(v.to_owned())
            } else {
                problem(
                    var,
                    format!("{v:?} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"),
                );
                None
            }
        };
        let given = Resources {
            cpu_request: quantity("KUBERNETES_CPU_REQUEST"),
            cpu_limit: quantity("KUBERNETES_CPU_LIMIT"),
            memory_request: quantity("KUBERNETES_MEMORY_REQUEST"),
            memory_limit: quantity("KUBERNETES_MEMORY_LIMIT"),
        };
        // A default only for a resource the operator says nothing about: a default limit
        // below a given request (or the reverse) would make every pod invalid.
        let defaults = std::mem::take(&mut s.resources);
        let cpu_given = given.cpu_request.is_some() || given.cpu_limit.is_some();
        let memory_given = given.memory_request.is_some() || given.memory_limit.is_some();
        s.resources = if cpu_given {
            Resources {
                cpu_request: given.cpu_request,
                cpu_limit: given.cpu_limit,
                ..defaults.clone()
            }
        } else {
            defaults.clone()
        };
        if memory_given {
            s.resources.memory_request = given.memory_request;
            s.resources.memory_limit = given.memory_limit;
        }
        if let Some(size) = quantity("KUBERNETES_PVC_SIZE") {
            s.pvc_size = size;
        }
        if let Some(v) = get("KUBERNETES_NODE_SELECTOR") {
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some((k, val)) if !k.trim().is_empty() => {
                        s.node_selector
                            .insert(k.trim().to_owned(), val.trim().to_owned());
                    }
                    _ => problem(
                        "KUBERNETES_NODE_SELECTOR",
                        format!("{pair:?} is not key=value"),
                    ),
                }
            }
        }
        if let Some(v) = get("KUBERNETES_TOLERATIONS") {
            for item in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match parse_toleration(item) {
                    Ok(t) => s.tolerations.push(t),
                    Err(why) => problem("KUBERNETES_TOLERATIONS", format!("{item:?}: {why}")),
                }
            }
        }
        s.service_account = get("KUBERNETES_SERVICE_ACCOUNT").map(str::to_owned);
        s.pvc_storage_class = get("KUBERNETES_PVC_STORAGE_CLASS").map(str::to_owned);
        if let Some(v) = get("KUBERNETES_PENDING_TIMEOUT") {
            match v
                .parse::<u64>()
                .map(Duration::from_secs)
                .or_else(|_| humantime::parse_duration(v))
            {
                Ok(d) if !d.is_zero() => s.pending_timeout = d,
                _ => problem(
                    "KUBERNETES_PENDING_TIMEOUT",
                    format!("{v:?} is not a positive duration (e.g. 10m)"),
                ),
            }
        }
        match Sandbox::parse(get(sandbox::VARIABLE)) {
            Ok(mode) => s.sandbox = mode,
            Err(e) => problem(sandbox::VARIABLE, e),
        }
        match CacheScope::parse(get(cache_scope::VARIABLE)) {
            Ok(scope) => s.cache_scope = scope,
            Err(e) => problem(cache_scope::VARIABLE, e),
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// `key[=value]:Effect`, as `kubectl taint` writes a taint.
fn parse_toleration(item: &str) -> Result<Toleration, &'static str> {
    let (key_value, effect) = item.rsplit_once(':').ok_or("expected key[=value]:Effect")?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err("the effect must be NoSchedule, PreferNoSchedule or NoExecute");
    }
    let (key, value) = match key_value.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (key_value, None),
    };
    if key.is_empty() {
        return Err("the key is empty");
    }
    Ok(Toleration {
        key: Some(key.to_owned()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_owned()),
        value,
        effect: Some(effect.to_owned()),
        toleration_seconds: None,
    })
}

/// A DNS-1123 label: what namespaces and most object names must be.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A valid label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// A plain decimal with an optional binary or decimal suffix (the forms people write).
fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    !number.is_empty()
        && number.parse::<f64>().is_ok()
        && matches!(
            suffix,
            "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
        )
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
    fn parses_every_setting() {
        let s = KubernetesSettings::from_env(&map(&[
            ("KUBERNETES_NAMESPACE", "ci"),
            ("CONTROLLER_ID", "prod"),
            ("KUBERNETES_CPU_REQUEST", "500m"),
            ("KUBERNETES_MEMORY_LIMIT", "4Gi"),
            ("KUBERNETES_NODE_SELECTOR", "pool=runners, disk=ssd"),
            (
                "KUBERNETES_TOLERATIONS",
                "dedicated=ci:NoSchedule,spot:NoExecute",
            ),
            ("KUBERNETES_SERVICE_ACCOUNT", "runner"),
            ("KUBERNETES_PVC_SIZE", "20Gi"),
            ("KUBERNETES_PVC_STORAGE_CLASS", "fast"),
            ("KUBERNETES_PENDING_TIMEOUT", "2m"),
        ]))
        .unwrap();
        assert_eq!(s.namespace.as_deref(), Some("ci"));
        assert_eq!(s.controller_id, "prod");
        assert_eq!(s.resources.cpu_request.as_deref(), Some("500m"));
        assert_eq!(s.resources.memory_limit.as_deref(), Some("4Gi"));
        assert_eq!(
            s.resources.cpu_limit, None,
            "no default next to a given request"
        );
        assert_eq!(s.resources.memory_request, None);
        assert_eq!(s.node_selector.len(), 2);
        assert_eq!(s.node_selector["disk"], "ssd");
        assert_eq!(s.tolerations.len(), 2);
        assert_eq!(s.tolerations[0].operator.as_deref(), Some("Equal"));
        assert_eq!(s.tolerations[0].value.as_deref(), Some("ci"));
        assert_eq!(s.tolerations[1].operator.as_deref(), Some("Exists"));
        assert_eq!(s.tolerations[1].effect.as_deref(), Some("NoExecute"));
        assert_eq!(s.service_account.as_deref(), Some("runner"));
        assert_eq!(s.pvc_size, "20Gi");
        assert_eq!(s.pending_timeout, Duration::from_secs(120));
    }

    #[test]
    fn runner_resources_and_sandbox_have_defaults() {
        let s = KubernetesSettings::from_env(&map(&[])).unwrap();
        assert_eq!(
            s.resources,
            Resources {
                cpu_request: Some("500m".into()),
                cpu_limit: Some("2".into()),
                memory_request: Some("1Gi".into()),
                memory_limit: Some("7Gi".into()),
            }
        );
        assert_eq!(s.sandbox, Sandbox::Strict);
        let s = KubernetesSettings::from_env(&map(&[
            ("KUBERNETES_CPU_LIMIT", "4"),
            ("RUNNER_SANDBOX", "none"),
        ]))
        .unwrap();
        assert_eq!(
            (s.resources.cpu_request, s.resources.cpu_limit.as_deref()),
            (None, Some("4"))
        );
        assert_eq!(s.resources.memory_limit.as_deref(), Some("7Gi"));
        assert_eq!(s.sandbox, Sandbox::None);
    }

    #[test]
    fn problems_name_their_variables() {
        let err = KubernetesSettings::from_env(&map(&[
            ("KUBERNETES_NAMESPACE", "Not_A_Namespace"),
            ("KUBERNETES_CPU_REQUEST", "lots"),
            ("KUBERNETES_NODE_SELECTOR", "novalue"),
            ("KUBERNETES_TOLERATIONS", "key=v:Sometimes"),
            ("KUBERNETES_PENDING_TIMEOUT", "0"),
            ("RUNNER_SANDBOX", "loose"),
        ]))
        .unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.variable).collect();
        assert_eq!(
            vars,
            [
                "KUBERNETES_NAMESPACE",
                "KUBERNETES_CPU_REQUEST",
                "KUBERNETES_NODE_SELECTOR",
                "KUBERNETES_TOLERATIONS",
                "KUBERNETES_PENDING_TIMEOUT",
                "RUNNER_SANDBOX"
            ]
        );
    }

    #[test]
    fn label_values_follow_the_api_rules() {
        assert!(is_label_value("r-1.a_b"));
        assert!(!is_label_value("-r"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_dns_label("ci-runners"));
        assert!(!is_dns_label("CI"));
    }
}
