//! `deploy/kubernetes/` is valid: every document of every manifest parses into its k8s-openapi
//! type with no field left over, the kustomization lists exactly the manifests, the agent's
//! RBAC grants exactly the verbs the runtime uses against the fake API server, and none of the
//! agent's permissions reaches the namespace holding the controller's secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::runtime::kubernetes::KubernetesRuntime;
use agent::runtime::kubernetes::settings::KubernetesSettings;
use agent::runtime::{RunnerRuntime, event_channel};
use axum::http::Method;
use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared::arch::Arch;
use shared::command::{CacheSettings, Registration, RunnerSpec};
use shared::ids::RunnerId;
use tests::harness::{init, vars, wait_until};
use tests::kube_fake::FakeApiServer;
use tokio_util::sync::CancellationToken;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every document of every `*.yaml` but the kustomization: (file, document).
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        for value in values.into_iter().filter(|v| !v.is_null()) {
            docs.push((name.clone(), value));
        }
    }
    docs
}

/// Parses into `T`, checks apiVersion and kind, and that nothing was dropped on the way (a
/// misspelt field would be).
fn typed<T: Resource + DeserializeOwned + Serialize>(file: &str, doc: &Value) -> T {
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    let parsed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {} {name}: {e}", T::KIND));
    assert_eq!(doc["apiVersion"], T::API_VERSION, "{file}: {name}");
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        &back,
        doc,
        "{file}: {} {name} has fields its type does not know",
        T::KIND
    );
    parsed
}

#[derive(Default)]
struct Manifests {
    deployments: BTreeMap<String, Deployment>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    namespaces: BTreeSet<String>,
    cluster_roles: Vec<ClusterRole>,
    ingresses: Vec<Ingress>,
    services: Vec<Service>,
    secrets: Vec<Secret>,
    service_accounts: Vec<ServiceAccount>,
    kinds: BTreeSet<String>,
}

fn manifests() -> Manifests {
    let mut m = Manifests::default();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Namespace" => {
                let ns: Namespace = typed(&file, &doc);
                m.namespaces.insert(ns.metadata.name.unwrap());
            }
            "ConfigMap" => drop(typed::<ConfigMap>(&file, &doc)),
            "PersistentVolumeClaim" => drop(typed::<PersistentVolumeClaim>(&file, &doc)),
            "RoleBinding" => m.role_bindings.push(typed(&file, &doc)),
            "ClusterRoleBinding" => m.cluster_role_bindings.push(typed(&file, &doc)),
            "Secret" => m.secrets.push(typed(&file, &doc)),
            "ServiceAccount" => m.service_accounts.push(typed(&file, &doc)),
            "Service" => m.services.push(typed(&file, &doc)),
            "Ingress" => m.ingresses.push(typed(&file, &doc)),
            "Role" => m.roles.push(typed(&file, &doc)),
            "ClusterRole" => m.cluster_roles.push(typed(&file, &doc)),
            "Deployment" => {
                let d: Deployment = typed(&file, &doc);
                m.deployments.insert(d.metadata.name.clone().unwrap(), d);
            }
            other => panic!("{file}: unexpected kind {other:?}"),
        }
        m.kinds.insert(kind);
    }
    m
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let m = manifests();
    let kinds: Vec<&str> = m.kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Ingress",
            "Namespace",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_eq!(
        m.secrets.len(),
        3,
        "controller env, controller TLS, agent TLS"
    );
    assert_eq!(m.service_accounts.len(), 1);
    assert_eq!(m.services.len(), 1);
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(k["kind"], "Kustomization");
    assert!(
        k["namespace"].is_null(),
        "one namespace override would put every object into one namespace"
    );
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk);
}

#[test]
fn deployments_are_single_replica_and_mount_no_docker_socket() {
    let m = manifests();
    assert_eq!(
        m.deployments.keys().collect::<Vec<_>>(),
        ["gha-scaler-agent", "gha-scaler-controller"]
    );
    for (name, d) in &m.deployments {
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1), "{name}: one replica");
        assert_eq!(
            spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
            Some("Recreate"),
            "{name}: never two at once"
        );
        let pod = spec.template.spec.as_ref().unwrap();
        for v in pod.volumes.iter().flatten() {
            assert!(v.host_path.is_none(), "{name}: hostPath volume {}", v.name);
        }
        let text = serde_json::to_string(d).unwrap();
        assert!(
            !text.contains("docker.sock"),
            "{name} mentions the Docker socket"
        );
    }
    let agent = m.deployments["gha-scaler-agent"]
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(
        agent.service_account_name.as_deref(),
        Some("gha-scaler-agent")
    );
    let env = serde_json::to_value(&agent.containers[0].env).unwrap();
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "RUNTIME", "value": "kubernetes"}))
    );
    assert!(env.as_array().unwrap().contains(&json!({
        "name": "KUBERNETES_NAMESPACE",
        "value": RUNNERS_NS
    })));
}

/// The Service routes GitHub's webhooks to ready pods only: a readiness that fails when GitHub
/// refuses registrations (`/ready`) would turn a GitHub problem into lost deliveries. Readiness
/// is "the process serves" (`/health`); `/ready` is for monitoring.
#[test]
fn the_controllers_readiness_never_depends_on_github() {
    let m = manifests();
    let pod = m.deployments["gha-scaler-controller"]
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();
    let probe = pod.containers[0]
        .readiness_probe
        .clone()
        .expect("a readiness probe");
    let path = probe.http_get.and_then(|h| h.path);
    assert_eq!(path.as_deref(), Some("/health"));
}

const CONTROLLER_NS: &str = "gha-scaler";
const AGENT_NS: &str = "gha-scaler-agent";
const RUNNERS_NS: &str = "gha-scaler-runners";

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| {
        panic!(
            "{:?} names no namespace (the kustomization sets none)",
            meta.name
        )
    })
}

#[test]
fn no_agent_permission_reaches_the_controllers_namespace() {
    let m = manifests();
    assert_eq!(
        m.namespaces,
        BTreeSet::from([CONTROLLER_NS.into(), AGENT_NS.into(), RUNNERS_NS.into()])
    );
    assert_eq!(
        namespace_of(&m.deployments["gha-scaler-controller"].metadata),
        CONTROLLER_NS
    );
    assert_eq!(
        namespace_of(&m.deployments["gha-scaler-agent"].metadata),
        AGENT_NS
    );
    assert_eq!(namespace_of(&m.service_accounts[0].metadata), AGENT_NS);
    for secret in &m.secrets {
        let name = secret.metadata.name.clone().unwrap();
        let expected = if name.starts_with("gha-scaler-controller") {
            CONTROLLER_NS
        } else {
            AGENT_NS
        };
        assert_eq!(namespace_of(&secret.metadata), expected, "secret {name}");
    }

    // Every binding of the agent's service account: namespaced ones only in the runners'
    // namespace, cluster-wide ones only to roles that name no namespaced resource.
    let is_agent = |s: &k8s_openapi::api::rbac::v1::Subject| {
        s.kind == "ServiceAccount" && s.name == "gha-scaler-agent"
    };
    let mut agent_bindings = 0;
    for binding in &m.role_bindings {
        let ns = namespace_of(&binding.metadata);
        for subject in binding.subjects.iter().flatten() {
            assert_eq!(
                subject.namespace.as_deref(),
                Some(AGENT_NS),
                "binding {ns}/{:?} names a subject outside the agent's namespace",
                binding.metadata.name
            );
        }
        if binding.subjects.iter().flatten().any(is_agent) {
            agent_bindings += 1;
            assert_eq!(ns, RUNNERS_NS, "the agent is granted something in {ns}");
            assert_ne!(ns, CONTROLLER_NS);
            assert_eq!(binding.role_ref.kind, "Role");
        }
    }
    assert_eq!(agent_bindings, 1);
    for role in &m.roles {
        assert_eq!(namespace_of(&role.metadata), RUNNERS_NS);
    }
    for binding in &m.cluster_role_bindings {
        if binding.subjects.iter().flatten().any(is_agent) {
            let role = m
                .cluster_roles
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str()))
                .expect("the bound cluster role exists");
            let resources = granted(&role.rules.clone().unwrap());
            assert!(
                resources.iter().all(|(res, _)| res == "nodes"),
                "a cluster-wide grant to the agent reaches namespaced objects: {resources:?}"
            );
        }
    }
    // The agent reaches the controller across namespaces by the Service's full name.
    let agent = serde_json::to_value(&m.deployments["gha-scaler-agent"]).unwrap();
    assert!(
        agent
            .to_string()
            .contains("gha-scaler-controller.gha-scaler.svc:9443"),
        "CONTROLLER_URL"
    );
}

#[test]
fn the_ingress_exposes_only_the_webhook_without_rewriting_it() {
    let m = manifests();
    assert_eq!(m.ingresses.len(), 1);
    let ingress = &m.ingresses[0];
    let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k.contains("rewrite")),
        "no rewrite annotation: {annotations:?}"
    );
    let rules = ingress.spec.as_ref().unwrap().rules.clone().unwrap();
    let paths: Vec<Value> = rules
        .iter()
        .flat_map(|r| r.http.as_ref().unwrap().paths.clone())
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            json!({"path": "/webhook", "pathType": "Exact", "backend": {"service": {
            "name": "gha-scaler-controller", "port": {"name": "http"}}}})
        ]
    );
    let service = serde_json::to_value(&m.services[0]).unwrap();
    assert_eq!(service["metadata"]["name"], "gha-scaler-controller");
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
}

fn granted(rules: &[PolicyRule]) -> BTreeSet<(String, String)> {
    rules
        .iter()
        .flat_map(|r| {
            let resources = r.resources.clone().unwrap_or_default();
            resources
                .into_iter()
                .flat_map(move |res| r.verbs.iter().map(move |v| (res.clone(), v.clone())))
        })
        .collect()
}

/// (resource, verb) of an API request the fake recorded.
fn verb_of(request: &str) -> Option<(String, String)> {
    let (method, target) = request.split_once(' ')?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let (resource, named) = match parts.as_slice() {
        ["namespaces", _, resource] => ((*resource).to_owned(), false),
        ["namespaces", _, resource, _] => ((*resource).to_owned(), true),
        ["namespaces", _, resource, _, sub] => (format!("{resource}/{sub}"), true),
        [resource] => ((*resource).to_owned(), false),
        [resource, _] => ((*resource).to_owned(), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("DELETE", _) => "delete",
        ("PATCH", _) => "patch",
        _ => return None,
    };
    Some((resource, verb.to_owned()))
}

fn runner(id: &str, pvcs: bool) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).unwrap(),
        name: format!("gha-{id}"),
        image: "ghcr.io/actions/actions-runner:test".into(),
        launch: Default::default(),
        registration: Registration::JitConfig("jit".into()),
        labels: vec![],
        env: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        cache: CacheSettings {
            enabled: true,
            volumes: BTreeMap::from([("npm".into(), "/npm".into())]),
            kubernetes_pvcs: pvcs,
        },
        arch: Arch::Amd64,
        owner: "acme".into(),
        repository: Some("app".into()),
    }
}

#[tokio::test]
async fn the_agent_role_grants_exactly_the_verbs_the_runtime_uses() {
    init();
    let m = manifests();
    assert_eq!(m.roles.len(), 1);
    assert_eq!(m.cluster_roles.len(), 1);
    let cluster = granted(&m.cluster_roles[0].rules.clone().unwrap());
    assert_eq!(
        cluster,
        BTreeSet::from([("nodes".into(), "list".into())]),
        "the cluster role only reads nodes"
    );
    let mut allowed = granted(&m.roles[0].rules.clone().unwrap());
    allowed.extend(cluster);

    // Everything the runtime does: start (with a claim), watch, finish, fail (its log is read),
    // stop, a failed start, health and capacity.
    let fake = FakeApiServer::start().await;
    fake.add_node("n1", "amd64", 10);
    let settings =
        KubernetesSettings::from_env(&vars(&[("KUBERNETES_NAMESPACE", "ci".into())])).unwrap();
    let (sink, _events) = event_channel();
    let stop = CancellationToken::new();
    let rt = KubernetesRuntime::new(fake.client("ci"), settings, "a1", sink, stop.clone());
    rt.start(runner("u1", true)).await.unwrap();
    rt.start(runner("u2", false)).await.unwrap();
    fake.set_pod_status("ci", "gha-u1", json!({"phase": "Succeeded"}));
    wait_until(Duration::from_secs(10), "u1 cleaned", || async {
        fake.pod("ci", "gha-u1").is_none()
    })
    .await;
    rt.start(runner("u4", false)).await.unwrap();
    fake.set_pod_status("ci", "gha-u4", json!({"phase": "Failed"}));
    wait_until(Duration::from_secs(10), "u4 cleaned", || async {
        fake.pod("ci", "gha-u4").is_none()
    })
    .await;
    rt.stop(&RunnerId::parse("u2").unwrap()).await.unwrap();
    fake.fail_next(Method::POST, "/pods", 500, "boom");
    rt.start(runner("u3", false)).await.unwrap_err();
    rt.health().await.unwrap();
    assert!(rt.capacity(5).await.is_some());
    wait_until(Duration::from_secs(10), "the secret sweep ran", || async {
        fake.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/ci/secrets?"))
    })
    .await;
    stop.cancel();

    let used: BTreeSet<(String, String)> =
        fake.requests().iter().filter_map(|r| verb_of(r)).collect();
    assert_eq!(
        used, allowed,
        "the Role should grant exactly what the runtime uses"
    );
}

/// Renders a kustomization directory the way `kubectl apply -k` does, for what our overlays
/// use: `resources` (files, and directories holding a kustomization), then `patches` with a
/// `target` (kind and name) and an inline patch that is either a JSON 6902 list of
/// `add`/`replace`/`remove` operations or a strategic-merge `$patch: delete` of the target.
/// Anything else panics: a feature the overlays start to use must be taught here first.
fn render(dir: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(k["kind"], "Kustomization", "{}", dir.display());
    let mut docs = Vec::new();
    for resource in k["resources"].as_array().unwrap() {
        let path = dir.join(resource.as_str().unwrap());
        if path.is_dir() {
            docs.extend(render(&path));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let values: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        docs.extend(
            values
                .into_iter()
                .filter(|v| !v.is_null())
                .map(|v| (name.clone(), v)),
        );
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let (kind, name) = (&patch["target"]["kind"], &patch["target"]["name"]);
        let matches = |doc: &Value| doc["kind"] == *kind && doc["metadata"]["name"] == *name;
        assert!(
            docs.iter().any(|(_, d)| matches(d)),
            "{}: a patch targets {kind} {name}, which is not rendered",
            dir.display()
        );
        let body: Value = serde_saphyr::from_str(patch["patch"].as_str().unwrap()).unwrap();
        match &body {
            Value::Array(ops) => {
                for (_, doc) in docs.iter_mut().filter(|(_, d)| matches(d)) {
                    for op in ops {
                        json_patch(doc, op);
                    }
                }
            }
            Value::Object(o) if o.get("$patch") == Some(&json!("delete")) => {
                docs.retain(|(_, d)| !matches(d));
            }
            other => panic!("{}: unsupported patch {other}", dir.display()),
        }
    }
    docs
}

/// One JSON 6902 operation (`add`, `replace`, `remove`; `-` appends to an array).
fn json_patch(doc: &mut Value, op: &Value) {
    let path = op["path"].as_str().unwrap();
    let (parent_path, last) = path.rsplit_once('/').unwrap();
    let parent = doc
        .pointer_mut(parent_path)
        .unwrap_or_else(|| panic!("no {parent_path} to patch"));
    let value = op["value"].clone();
    match (op["op"].as_str().unwrap(), parent) {
        ("add", Value::Array(items)) if last == "-" => items.push(value),
        ("add" | "replace", Value::Array(items)) => {
            let i: usize = last.parse().unwrap();
            assert!(i < items.len(), "{path} is past the end");
            items[i] = value;
        }
        ("add" | "replace", Value::Object(map)) => {
            if op["op"] == "replace" {
                assert!(map.contains_key(last), "{path} is not there to replace");
            }
            map.insert(last.to_owned(), value);
        }
        ("remove", Value::Object(map)) => {
            map.remove(last)
                .unwrap_or_else(|| panic!("{path} is not there"));
        }
        (other, _) => panic!("unsupported operation {other} at {path}"),
    }
}

/// The HA overlay (issue 15): two controller replicas on PostgreSQL whose URL comes from a
/// Secret, a PodDisruptionBudget keeping one, and every rendered object still its valid type.
#[test]
fn the_ha_overlay_renders_two_replicas_on_postgres_with_a_disruption_budget() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let docs = render(&deploy_dir().join("ha"));
    let mut deployments = BTreeMap::new();
    let mut secrets: Vec<Secret> = Vec::new();
    let mut budgets: Vec<PodDisruptionBudget> = Vec::new();
    for (file, doc) in &docs {
        match doc["kind"].as_str().unwrap() {
            "Deployment" => {
                let d: Deployment = typed(file, doc);
                deployments.insert(d.metadata.name.clone().unwrap(), d);
            }
            "Secret" => secrets.push(typed(file, doc)),
            "PodDisruptionBudget" => budgets.push(typed(file, doc)),
            "PersistentVolumeClaim" => {
                let claim: PersistentVolumeClaim = typed(file, doc);
                panic!(
                    "{file}: the HA controller needs no claim: {:?}",
                    claim.metadata.name
                );
            }
            "Namespace" => drop(typed::<Namespace>(file, doc)),
            "ConfigMap" => drop(typed::<ConfigMap>(file, doc)),
            "RoleBinding" => drop(typed::<RoleBinding>(file, doc)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(file, doc)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(file, doc)),
            "Service" => drop(typed::<Service>(file, doc)),
            "Ingress" => drop(typed::<Ingress>(file, doc)),
            "Role" => drop(typed::<Role>(file, doc)),
            "ClusterRole" => drop(typed::<ClusterRole>(file, doc)),
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    let controller = deployments["gha-scaler-controller"].spec.clone().unwrap();
    assert_eq!(controller.replicas, Some(2));
    assert_ne!(
        controller.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate"),
        "a rollout keeps one replica up"
    );
    assert_eq!(
        deployments["gha-scaler-agent"]
            .spec
            .as_ref()
            .unwrap()
            .replicas,
        Some(1),
        "the agent is untouched"
    );
    let pod = controller.template.spec.unwrap();
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .all(|v| v.persistent_volume_claim.is_none()),
        "no claim mounted by two pods"
    );
    let env = serde_json::to_value(&pod.containers[0].env).unwrap();
    let var = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not set"))
            .clone()
    };
    let url = &var("DATABASE_URL")["valueFrom"]["secretKeyRef"];
    let secret = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == url["name"].as_str())
        .expect("DATABASE_URL's Secret is rendered");
    assert_eq!(secret.metadata.namespace.as_deref(), Some(CONTROLLER_NS));
    let data = secret.string_data.as_ref().expect("stringData");
    assert!(data[url["key"].as_str().unwrap()].starts_with("postgres://"));
    assert_eq!(
        var("REPLICA_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert!(
        var("ADVERTISE_GRPC_URL")["value"]
            .as_str()
            .unwrap()
            .starts_with("https://$(POD_IP):")
    );
    // POD_IP comes first: a variable refers only to those before it.
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let position = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(position("POD_IP") < position("ADVERTISE_GRPC_URL"));
    assert_eq!(
        pod.containers[0]
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.as_deref()),
        Some("/health"),
        "a standby takes webhooks: readiness stays /health"
    );
    let [budget] = budgets.as_slice() else {
        panic!("one PodDisruptionBudget: {budgets:?}")
    };
    let spec = budget.spec.as_ref().unwrap();
    assert_eq!(
        spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
        controller.selector.match_labels,
        "the budget covers the controller's pods"
    );
    assert_eq!(budget.metadata.namespace.as_deref(), Some(CONTROLLER_NS));
}
