//! Capacity per architecture from the nodes the agent can see.
//!
//! A node counts when it is Ready, not cordoned, and matches the runner pods' extra node
//! selector. Each counts for as many runner pods as its allocatable pods allow, or fewer when
//! runner pods request CPU or memory; the sum per `kubernetes.io/arch` is capped at
//! `MAX_RUNNERS`. It is an upper bound: pods other than runners are not subtracted, so the
//! scheduler may still leave a runner Pending (which is then reported with its reason).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use shared::arch::Arch;

use super::objects::NODE_ARCH_LABEL;
use super::settings::KubernetesSettings;

/// Runners per architecture, for architectures with at least one usable node.
pub fn by_arch(
    nodes: &[Node],
    settings: &KubernetesSettings,
    max_runners: u32,
) -> Vec<(Arch, u32)> {
    let mut totals: BTreeMap<Arch, u64> = BTreeMap::new();
    for node in nodes {
        let Some(arch) = node_arch(node) else {
            continue;
        };
        if !usable(node, settings) {
            continue;
        }
        *totals.entry(arch).or_default() += runners_on(node, settings);
    }
    totals
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(arch, n)| (arch, n.min(u64::from(max_runners)) as u32))
        .collect()
}

fn node_arch(node: &Node) -> Option<Arch> {
    node.metadata
        .labels
        .as_ref()?
        .get(NODE_ARCH_LABEL)?
        .parse()
        .ok()
}

fn usable(node: &Node, settings: &KubernetesSettings) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selected = settings
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    ready && !cordoned && selected
}

/// How many runner pods fit on one empty node.
fn runners_on(node: &Node, settings: &KubernetesSettings) -> u64 {
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |key: &str| {
        allocatable
            .and_then(|a| a.get(key))
            .and_then(|q| parse_quantity(&q.0))
    };
    let mut fit = get("pods").map(|p| p as u64).unwrap_or(0);
    for (key, request) in [
        ("cpu", &settings.resources.cpu_request),
        ("memory", &settings.resources.memory_request),
    ] {
        if let (Some(have), Some(want)) = (get(key), request.as_deref().and_then(parse_quantity))
            && want > 0.0
        {
            fit = fit.min((have / want).floor() as u64);
        }
    }
    fit
}

/// A Kubernetes quantity as a number (`500m` = 0.5, `4Gi` = 4·2³⁰); `None` if unreadable.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(arch: &str, pods: &str, cpu: &str, ready: bool, cordoned: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": format!("n-{arch}"), "labels": {NODE_ARCH_LABEL: arch, "pool": "ci"}},
            "spec": {"unschedulable": cordoned},
            "status": {
                "allocatable": {"pods": pods, "cpu": cpu, "memory": "16Gi"},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn counts_usable_nodes_per_arch_capped_by_max_runners() {
        let nodes = [
            node("amd64", "3", "8", true, false),
            node("amd64", "2", "8", true, false),
            node("arm64", "110", "4", true, false),
            node("arm64", "110", "4", false, false),
            node("arm64", "110", "4", true, true),
            node("s390x", "110", "4", true, false),
        ];
        let s = KubernetesSettings {
            resources: Default::default(),
            ..Default::default()
        };
        assert_eq!(
            by_arch(&nodes, &s, 10),
            vec![(Arch::Amd64, 5), (Arch::Arm64, 10)]
        );
        // The default requests (500m CPU, 1Gi): 8 fit a 4-CPU node.
        assert_eq!(
            by_arch(&nodes, &KubernetesSettings::default(), 10),
            vec![(Arch::Amd64, 5), (Arch::Arm64, 8)]
        );
    }

    #[test]
    fn cpu_requests_and_node_selectors_limit_the_fit() {
        let nodes = [
            node("amd64", "110", "3500m", true, false),
            node("arm64", "110", "4", true, false),
        ];
        let mut s = KubernetesSettings::default();
        s.resources.cpu_request = Some("1".into());
        assert_eq!(
            by_arch(&nodes, &s, 50),
            vec![(Arch::Amd64, 3), (Arch::Arm64, 4)]
        );
        s.node_selector.insert("pool".into(), "other".into());
        assert!(by_arch(&nodes, &s, 50).is_empty());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("4Gi"), Some(4.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("110"), Some(110.0));
        assert_eq!(parse_quantity("lots"), None);
    }
}
