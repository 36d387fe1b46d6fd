//! The Kubernetes runtime against the fake API server: the exact objects it creates, what it
//! reports as pods move (Pending with a reason, running, failed, succeeded), its cleanup,
//! adoption after a restart, and a watch that is dropped and resumed.

use std::collections::BTreeMap;
use std::time::Duration;

use agent::runtime::kubernetes::KubernetesRuntime;
use agent::runtime::kubernetes::settings::KubernetesSettings;
use agent::runtime::{RunnerRuntime, event_channel};
use axum::http::Method;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use shared::arch::Arch;
use shared::command::{CacheSettings, ImageFlavor, ImageLaunch, Registration, RunnerSpec};
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tests::harness::{init, vars, wait_until};
use tests::kube_fake::FakeApiServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NS: &str = "ci";
const WAIT: Duration = Duration::from_secs(10);
const JIT: &str = "eyJqaXQiOiJzZWNyZXQtcmVnaXN0cmF0aW9uIn0=";

fn spec(id: &str, arch: Arch) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).unwrap(),
        name: format!("gha-{id}"),
        image: "ghcr.io/actions/actions-runner:2.330.0".into(),
        launch: Default::default(),
        registration: Registration::JitConfig(JIT.into()),
        labels: vec!["self-hosted".into(), "linux".into(), "arm64".into()],
        env: BTreeMap::from([("RUNNER_WORKDIR".into(), "/work".into())]),
        timeout: Duration::from_secs(1800),
        cache: CacheSettings::default(),
        arch,
        owner: "acme".into(),
        repository: Some("app".into()),
    }
}

fn cached(id: &str, pvcs: bool) -> RunnerSpec {
    let mut s = spec(id, Arch::Amd64);
    s.cache = CacheSettings {
        enabled: true,
        volumes: BTreeMap::from([
            ("npm".into(), "/home/runner/.npm".into()),
            ("tool-cache".into(), "/opt/hostedtoolcache".into()),
        ]),
        kubernetes_pvcs: pvcs,
    };
    s
}

/// The runtime under test, with the receiving end of its event sink.
struct Rig {
    runtime: KubernetesRuntime,
    events: mpsc::Receiver<RunnerState>,
    stop: CancellationToken,
}

impl Rig {
    fn start(fake: &FakeApiServer, agent: &str, extra: &[(&str, &str)]) -> Self {
        let mut env = vars(&[("KUBERNETES_NAMESPACE", NS.into())]);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = KubernetesSettings::from_env(&env).expect("valid settings");
        let (sink, events) = event_channel();
        let stop = CancellationToken::new();
        let runtime =
            KubernetesRuntime::new(fake.client("default"), settings, agent, sink, stop.clone());
        Self {
            runtime,
            events,
            stop,
        }
    }

    /// Waits for a reported state of runner `id` that satisfies `f`, skipping others.
    async fn expect(
        &mut self,
        id: &str,
        what: &str,
        f: impl Fn(&RunnerState) -> bool,
    ) -> RunnerState {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(s)) if s.id.as_str() == id && f(&s) => return s,
                Ok(Some(s)) => seen.push(s),
                _ => panic!("no report for {id}: {what}; saw {seen:#?}"),
            }
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn running() -> serde_json::Value {
    json!({"phase": "Running", "containerStatuses": [{
        "name": "runner", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    }]})
}

fn terminated(phase: &str, code: i32) -> serde_json::Value {
    json!({"phase": phase, "containerStatuses": [{
        "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code}}
    }]})
}

fn labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_runner_becomes_a_pod_with_the_exact_spec_and_an_owned_secret() {
    init();
    let fake = FakeApiServer::start().await;
    let mut rig = Rig::start(
        &fake,
        "k8s-1",
        &[
            ("CONTROLLER_ID", "prod"),
            ("KUBERNETES_NODE_SELECTOR", "pool=ci"),
            ("KUBERNETES_TOLERATIONS", "dedicated=ci:NoSchedule"),
            ("KUBERNETES_CPU_REQUEST", "1"),
            ("KUBERNETES_MEMORY_LIMIT", "4Gi"),
        ],
    );
    rig.runtime.start(spec("r1", Arch::Arm64)).await.unwrap();
    let pod = fake.pod(NS, "gha-r1").expect("pod created");

    let want_labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/managed-by", "gha-scaler"),
        ("gha-scaler/controller", "prod"),
        ("gha-scaler/agent", "k8s-1"),
        ("gha-scaler/owner", "acme"),
        ("gha-scaler/runner-id", "r1"),
        ("gha-scaler/arch", "arm64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(labels(&pod), want_labels);
    let ps = pod.spec.clone().unwrap();
    assert_eq!(ps.restart_policy.as_deref(), Some("Never"));
    assert_eq!(ps.active_deadline_seconds, Some(1800));
    assert_eq!(
        ps.node_selector.unwrap(),
        BTreeMap::from([
            ("kubernetes.io/arch".to_owned(), "arm64".to_owned()),
            ("pool".to_owned(), "ci".to_owned())
        ])
    );
    let tolerations = serde_json::to_value(ps.tolerations.unwrap()).unwrap();
    assert_eq!(
        tolerations,
        json!([{"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"}])
    );
    assert_eq!(ps.automount_service_account_token, Some(false));
    assert_eq!(ps.service_account_name, None);
    assert_eq!(ps.volumes, None, "no caches asked for, no volumes");
    let c = &ps.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/actions/actions-runner:2.330.0")
    );
    // The official image (decided from its reference): its run.sh, as its `runner` user (a
    // name the kubelet cannot check against runAsNonRoot, so the uid is given).
    assert_eq!(c.command, Some(vec!["/home/runner/run.sh".to_owned()]));
    assert_eq!(c.args, None, "no image CMD follows our entry point");
    let security = serde_json::to_value(c.security_context.clone().unwrap()).unwrap();
    // The default sandbox (`RUNNER_SANDBOX=strict`): no privilege gain, few capabilities.
    assert_eq!(
        security,
        json!({"runAsUser": 1001, "runAsNonRoot": true, "allowPrivilegeEscalation": false, "privileged": false,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID",
                "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"]},
            "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let env = serde_json::to_value(c.env.clone().unwrap()).unwrap();
    assert_eq!(
        env,
        json!([
            {"name": "RUNNER_WORKDIR", "value": "/work"},
            {"name": "RUNNER_NAME", "value": "gha-r1"},
            {"name": "ACTIONS_RUNNER_INPUT_JITCONFIG", "valueFrom": {"secretKeyRef": {
                "name": "gha-r1-registration", "key": "jitconfig", "optional": false}}}
        ])
    );
    let resources = serde_json::to_value(c.resources.clone().unwrap()).unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}})
    );
    let pod_json = serde_json::to_string(&pod).unwrap();
    assert!(
        !pod_json.contains(JIT),
        "registration material must not be in the pod"
    );

    // The secret holds the JIT config, is owned by the pod and carries the same labels.
    let secrets = fake.secrets(NS);
    assert_eq!(secrets.len(), 1);
    let secret = &secrets[0];
    assert_eq!(secret.metadata.name.as_deref(), Some("gha-r1-registration"));
    assert_eq!(secret.metadata.labels.clone().unwrap(), want_labels);
    assert_eq!(secret.data.clone().unwrap()["jitconfig"].0, JIT.as_bytes());
    assert_eq!(
        secret.data.as_ref().unwrap().len(),
        1,
        "only the JIT config"
    );
    assert_eq!(secret.immutable, Some(true));
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "Pod");
    assert_eq!(owners[0].name, "gha-r1");
    assert_eq!(Some(&owners[0].uid), pod.metadata.uid.as_ref());
    assert!(
        !serde_json::to_string(&fake.secrets(NS))
            .unwrap()
            .contains("ghp_")
    );

    // Starting the same runner again creates nothing new.
    rig.runtime.start(spec("r1", Arch::Arm64)).await.unwrap();
    assert_eq!(fake.pods(NS).len(), 1);
    let first = rig
        .expect("r1", "pending", |s| s.phase == RunnerPhase::Starting)
        .await;
    assert_eq!(first.name, "gha-r1");
}

#[tokio::test]
async fn token_registration_is_referenced_from_the_secret() {
    init();
    let fake = FakeApiServer::start().await;
    let rig = Rig::start(&fake, "k8s-1", &[("KUBERNETES_SERVICE_ACCOUNT", "runner")]);
    let mut s = spec("r2", Arch::Amd64);
    s.image = "myoung34/github-runner:ubuntu-noble".into();
    s.registration = Registration::Token {
        token: "AABBCCDDEEFF".into(),
        url: "https://github.com/acme/app".into(),
        runner_group: String::new(),
    };
    rig.runtime.start(s).await.unwrap();
    let pod = fake.pod(NS, "gha-r2").unwrap();
    let ps = pod.spec.unwrap();
    assert_eq!(ps.service_account_name.as_deref(), Some("runner"));
    assert_eq!(ps.automount_service_account_token, Some(true));
    assert_eq!(ps.node_selector.unwrap()["kubernetes.io/arch"], "amd64");
    let c = &ps.containers[0];
    // The myoung34 image: its entry script configures from the environment, as root.
    assert_eq!(c.command, None, "the image's ENTRYPOINT and CMD");
    assert_eq!(c.args, None);
    let security = serde_json::to_value(c.security_context.clone().unwrap()).unwrap();
    assert_eq!(
        security,
        json!({"runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false, "privileged": false,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID",
                "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"]},
            "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let env = serde_json::to_value(c.env.clone().unwrap()).unwrap();
    assert_eq!(
        env,
        json!([
            {"name": "RUNNER_WORKDIR", "value": "/work"},
            {"name": "RUNNER_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": "gha-r2-registration", "key": "token", "optional": false}}},
            {"name": "RUNNER_NAME", "value": "gha-r2"},
            {"name": "LABELS", "value": "self-hosted,linux,arm64"},
            {"name": "EPHEMERAL", "value": "1"},
            {"name": "DISABLE_AUTO_UPDATE", "value": "1"},
            {"name": "RUNNER_SCOPE", "value": "repo"},
            {"name": "REPO_URL", "value": "https://github.com/acme/app"}
        ])
    );
    let secret = &fake.secrets(NS)[0];
    assert_eq!(secret.data.clone().unwrap()["token"].0, b"AABBCCDDEEFF");
}

#[tokio::test]
async fn the_image_flavor_decides_command_and_user_and_auto_needs_a_known_reference() {
    init();
    let fake = FakeApiServer::start().await;
    let rig = Rig::start(&fake, "k8s-1", &[]);

    // The seed's default image with a JIT config: the image's own run.sh, as root.
    let mut seed = spec("r-seed", Arch::Amd64);
    seed.image = "myoung34/github-runner:ubuntu-noble".into();
    rig.runtime.start(seed).await.unwrap();
    let c = fake.pod(NS, "gha-r-seed").unwrap().spec.unwrap().containers[0].clone();
    assert_eq!(c.command, Some(vec!["/actions-runner/run.sh".to_owned()]));
    assert_eq!(c.security_context.unwrap().run_as_user, Some(0));

    // Kubernetes cannot inspect an image: an unknown reference needs an explicit flavor.
    let mut unknown = spec("r-unknown", Arch::Amd64);
    unknown.image = "registry.local/ci/runner:1".into();
    let err = rig.runtime.start(unknown.clone()).await.unwrap_err();
    assert!(
        err.0.contains("Kubernetes cannot inspect an image")
            && err.0.contains("RUNNER_IMAGE_FLAVOR"),
        "{err}"
    );
    assert!(fake.pod(NS, "gha-r-unknown").is_none());
    assert!(
        fake.secrets(NS)
            .iter()
            .all(|s| s.metadata.name.as_deref() != Some("gha-r-unknown-registration")),
        "no registration material for a runner that cannot start"
    );

    // A custom image starts with RUNNER_COMMAND and keeps the image's user.
    unknown.launch = ImageLaunch {
        flavor: ImageFlavor::Custom,
        command: vec!["/opt/runner/start".into(), "--once".into()],
    };
    rig.runtime.start(unknown).await.unwrap();
    let c = fake
        .pod(NS, "gha-r-unknown")
        .unwrap()
        .spec
        .unwrap()
        .containers[0]
        .clone();
    assert_eq!(
        c.command,
        Some(vec!["/opt/runner/start".to_owned(), "--once".to_owned()])
    );
    let sc = c.security_context.unwrap();
    assert_eq!(sc.run_as_user, None, "the image's own user");
    assert_eq!(sc.allow_privilege_escalation, Some(false));

    // The official image refuses a registration token before anything is created.
    let mut token = spec("r-tok", Arch::Amd64);
    token.registration = Registration::Token {
        token: "AABB".into(),
        url: "https://github.com/acme/app".into(),
        runner_group: String::new(),
    };
    let err = rig.runtime.start(token).await.unwrap_err();
    assert!(err.0.contains("RUNNER_REGISTRATION=jit"), "{err}");
    assert!(fake.pod(NS, "gha-r-tok").is_none());
}

#[tokio::test]
async fn cache_claims_are_per_repository_by_default() {
    init();
    let fake = FakeApiServer::start().await;
    let rig = Rig::start(&fake, "k8s-1", &[]);
    rig.runtime.start(cached("c1", true)).await.unwrap();
    let mut site = cached("c2", true);
    site.repository = Some("site".into());
    rig.runtime.start(site).await.unwrap();
    let claim_of = |name: &str| {
        let ps = fake.pod(NS, name).unwrap().spec.unwrap();
        let volumes = ps.volumes.unwrap();
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name
            .clone()
    };
    let (app, site) = (claim_of("gha-c1"), claim_of("gha-c2"));
    assert!(app.starts_with("gha-cache-acme-app-amd64-0-"), "{app}");
    assert!(
        site.starts_with("gha-cache-acme-site-amd64-0-"),
        "another repository's first slot, not the app's: {site}"
    );
    // Without a repository (an older controller), the pod's own emptyDir, never a claim.
    let mut unknown = cached("c3", true);
    unknown.repository = None;
    rig.runtime.start(unknown).await.unwrap();
    let ps = fake.pod(NS, "gha-c3").unwrap().spec.unwrap();
    assert!(
        ps.volumes
            .unwrap()
            .iter()
            .all(|v| v.empty_dir.is_some() && v.persistent_volume_claim.is_none())
    );
    assert_eq!(fake.claims(NS).len(), 2);
}

#[tokio::test]
async fn cache_claims_are_exclusive_and_reused_and_empty_dirs_without_pvcs() {
    init();
    let fake = FakeApiServer::start().await;
    let mut rig = Rig::start(
        &fake,
        "k8s-1",
        &[
            ("KUBERNETES_PVC_SIZE", "20Gi"),
            ("KUBERNETES_PVC_STORAGE_CLASS", "fast-ssd"),
            // The opt-in to caches shared by the owner's repositories, for readable names.
            ("CACHE_VOLUME_SCOPE", "owner"),
        ],
    );
    rig.runtime.start(cached("c1", true)).await.unwrap();
    rig.runtime.start(cached("c2", true)).await.unwrap();
    let claim_of = |name: &str| {
        let ps = fake.pod(NS, name).unwrap().spec.unwrap();
        let volumes = serde_json::to_value(ps.volumes.unwrap()).unwrap();
        let mounts = serde_json::to_value(ps.containers[0].volume_mounts.clone().unwrap()).unwrap();
        (volumes, mounts)
    };
    let (v1, m1) = claim_of("gha-c1");
    let (v2, _) = claim_of("gha-c2");
    assert_eq!(
        v1,
        json!([{"name": "cache", "persistentVolumeClaim": {"claimName": "gha-cache-acme-amd64-0", "readOnly": false}}])
    );
    assert_eq!(
        m1,
        json!([
            {"name": "cache", "mountPath": "/home/runner/.npm", "subPath": "npm"},
            {"name": "cache", "mountPath": "/opt/hostedtoolcache", "subPath": "tool-cache"}
        ])
    );
    assert_eq!(
        v2[0]["persistentVolumeClaim"]["claimName"], "gha-cache-acme-amd64-1",
        "a ReadWriteOnce claim in use is never shared"
    );
    let claims = fake.claims(NS);
    assert_eq!(claims.len(), 2);
    let claim = serde_json::to_value(&claims[0]).unwrap();
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(claim["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(
        claim["spec"]["resources"],
        json!({"requests": {"storage": "20Gi"}})
    );
    assert_eq!(claim["metadata"]["labels"]["gha-scaler/owner"], "acme");
    assert_eq!(claim["metadata"]["labels"]["gha-scaler/arch"], "amd64");
    assert!(
        claim["metadata"]["ownerReferences"].is_null(),
        "caches outlive pods"
    );

    // c1 finishes: its pod goes, its claim stays and is the next runner's.
    fake.set_pod_status(NS, "gha-c1", terminated("Succeeded", 0));
    rig.expect("c1", "exited", |s| s.phase == RunnerPhase::Exited)
        .await;
    wait_until(WAIT, "c1's pod deleted", || async {
        fake.pod(NS, "gha-c1").is_none()
    })
    .await;
    rig.runtime.start(cached("c3", true)).await.unwrap();
    let (v3, _) = claim_of("gha-c3");
    assert_eq!(
        v3[0]["persistentVolumeClaim"]["claimName"],
        "gha-cache-acme-amd64-0"
    );
    assert_eq!(fake.claims(NS).len(), 2, "no new claim while one is free");

    // Without PVCs: one emptyDir per cache path, and no claim.
    rig.runtime.start(cached("e1", false)).await.unwrap();
    let (ve, me) = claim_of("gha-e1");
    assert_eq!(
        ve,
        json!([{"name": "cache-0", "emptyDir": {}}, {"name": "cache-1", "emptyDir": {}}])
    );
    assert_eq!(
        me,
        json!([
            {"name": "cache-0", "mountPath": "/home/runner/.npm"},
            {"name": "cache-1", "mountPath": "/opt/hostedtoolcache"}
        ])
    );
    assert_eq!(fake.claims(NS).len(), 2);
}

#[tokio::test]
async fn a_pending_unschedulable_pod_is_reported_with_its_reason_then_failed_past_the_limit() {
    init();
    let fake = FakeApiServer::start().await;
    let mut rig = Rig::start(&fake, "k8s-1", &[("KUBERNETES_PENDING_TIMEOUT", "2s")]);
    rig.runtime.start(spec("p1", Arch::Arm64)).await.unwrap();
    let message = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.";
    fake.set_pod_status(
        NS,
        "gha-p1",
        json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message
        }]}),
    );
    let pending = rig
        .expect("p1", "pending with a reason", |s| !s.reason.is_empty())
        .await;
    assert_eq!(pending.phase, RunnerPhase::Starting);
    assert_eq!(pending.reason, format!("unschedulable: {message}"));

    let failed = rig
        .expect("p1", "failed", |s| s.phase == RunnerPhase::Failed)
        .await;
    assert_eq!(
        failed.reason,
        format!("still Pending after 2s (unschedulable: {message}); the pod was deleted")
    );
    wait_until(WAIT, "pod and secret deleted", || async {
        fake.pods(NS).is_empty() && fake.secrets(NS).is_empty()
    })
    .await;
}

#[tokio::test]
async fn failed_and_succeeded_pods_are_reported_then_deleted_with_their_secrets() {
    init();
    let fake = FakeApiServer::start().await;
    let mut rig = Rig::start(&fake, "k8s-1", &[]);
    rig.runtime.start(spec("f1", Arch::Amd64)).await.unwrap();
    rig.runtime.start(spec("s1", Arch::Amd64)).await.unwrap();
    fake.set_pod_status(NS, "gha-f1", running());
    rig.expect("f1", "running", |s| s.phase == RunnerPhase::Running)
        .await;
    let output: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    fake.set_pod_log(NS, "gha-f1", &output.join("\n"));
    fake.set_pod_status(NS, "gha-f1", terminated("Failed", 2));
    let failed = rig.expect("f1", "failed", |s| s.phase.is_terminal()).await;
    assert_eq!(failed.phase, RunnerPhase::Failed);
    assert_eq!(failed.exit_code, Some(2));
    assert_eq!(failed.reason, "the runner container exited with code 2");

    fake.set_pod_status(NS, "gha-s1", terminated("Succeeded", 0));
    let done = rig.expect("s1", "exited", |s| s.phase.is_terminal()).await;
    assert_eq!((done.phase, done.exit_code), (RunnerPhase::Exited, Some(0)));

    wait_until(WAIT, "both pods and secrets deleted", || async {
        fake.pods(NS).is_empty() && fake.secrets(NS).is_empty()
    })
    .await;
    // The failed runner's log tail was read before its pod (and the log) went; not the
    // successful one's.
    let requests = fake.requests();
    let position = |prefix: &str| requests.iter().position(|r| r.starts_with(prefix));
    let log_read = position("GET /api/v1/namespaces/ci/pods/gha-f1/log?").expect("log read");
    assert!(
        requests[log_read].contains("tailLines=20"),
        "{}",
        requests[log_read]
    );
    assert!(requests[log_read].contains("container=runner"));
    assert!(log_read < position("DELETE /api/v1/namespaces/ci/pods/gha-f1").unwrap());
    assert_eq!(position("GET /api/v1/namespaces/ci/pods/gha-s1/log"), None);

    // The end is reported once, not again when the deletion is observed: everything reported
    // before a later runner's first report (one watch stream keeps the order) has no repeat.
    rig.runtime.start(spec("later", Arch::Amd64)).await.unwrap();
    let mut before = Vec::new();
    loop {
        let s = tokio::time::timeout(WAIT, rig.events.recv())
            .await
            .expect("a report for the later runner")
            .unwrap();
        if s.id.as_str() == "later" {
            break;
        }
        before.push(s);
    }
    assert!(
        before
            .iter()
            .all(|s| s.id.as_str() != "f1" && s.id.as_str() != "s1"),
        "reported again: {before:?}"
    );
}

#[tokio::test]
async fn stop_deletes_the_pod_and_reports_the_stop() {
    init();
    let fake = FakeApiServer::start().await;
    let mut rig = Rig::start(&fake, "k8s-1", &[]);
    rig.runtime.start(spec("x1", Arch::Amd64)).await.unwrap();
    fake.set_pod_status(NS, "gha-x1", running());
    rig.expect("x1", "running", |s| s.phase == RunnerPhase::Running)
        .await;
    rig.runtime
        .stop(&RunnerId::parse("x1").unwrap())
        .await
        .unwrap();
    let stopped = rig.expect("x1", "stopped", |s| s.phase.is_terminal()).await;
    assert_eq!(
        (stopped.phase, stopped.exit_code, stopped.reason.as_str()),
        (RunnerPhase::Exited, Some(143), "stopped by the controller")
    );
    assert!(fake.pods(NS).is_empty());
    assert!(fake.secrets(NS).is_empty(), "the secret went with its pod");
    // Stopping a runner with no pod says so.
    rig.runtime
        .stop(&RunnerId::parse("x9").unwrap())
        .await
        .unwrap();
    let gone = rig.expect("x9", "gone", |s| s.phase.is_terminal()).await;
    assert_eq!(
        gone.reason,
        "stopped by the controller (its pod was already gone)"
    );
}

#[tokio::test]
async fn a_failed_pod_create_leaves_no_registration_secret() {
    init();
    let fake = FakeApiServer::start().await;
    let rig = Rig::start(&fake, "k8s-1", &[]);
    fake.fail_next(
        Method::POST,
        "/namespaces/ci/pods",
        403,
        "pods is forbidden: quota exceeded",
    );
    let err = rig
        .runtime
        .start(spec("q1", Arch::Amd64))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Kubernetes API: cannot create pod gha-q1: pods is forbidden: quota exceeded"
    );
    assert!(fake.pods(NS).is_empty());
    assert!(fake.secrets(NS).is_empty());
}

#[tokio::test]
async fn graceful_deletions_report_how_the_runner_ended_once_the_pod_is_gone() {
    init();
    let fake = FakeApiServer::start().await;
    fake.graceful_pod_deletion(true);
    let mut rig = Rig::start(&fake, "k8s-1", &[]);
    for id in ["g1", "g2", "g3"] {
        rig.runtime.start(spec(id, Arch::Amd64)).await.unwrap();
        fake.set_pod_status(NS, &format!("gha-{id}"), running());
        rig.expect(id, "running", |s| s.phase == RunnerPhase::Running)
            .await;
    }

    // A stop: the container dies of the SIGTERM during the grace period, which is not a failure.
    rig.runtime
        .stop(&RunnerId::parse("g1").unwrap())
        .await
        .unwrap();
    assert!(
        fake.pod(NS, "gha-g1")
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    fake.set_pod_status(NS, "gha-g1", terminated("Failed", 143));
    fake.finish_deletion(NS, "gha-g1");
    let g1 = rig.expect("g1", "its end", |s| s.phase.is_terminal()).await;
    assert_eq!(
        (g1.phase, g1.exit_code, g1.reason.as_str()),
        (RunnerPhase::Exited, Some(143), "stopped by the controller")
    );

    // Someone deletes a pod whose runner then finishes its job: its real end is reported.
    fake.delete("pods", NS, "gha-g2");
    fake.set_pod_status(NS, "gha-g2", terminated("Succeeded", 0));
    fake.finish_deletion(NS, "gha-g2");
    let g2 = rig.expect("g2", "its end", |s| s.phase.is_terminal()).await;
    assert_eq!((g2.phase, g2.exit_code), (RunnerPhase::Exited, Some(0)));

    // A pod that vanishes while running: the runner is lost.
    fake.delete("pods", NS, "gha-g3");
    fake.finish_deletion(NS, "gha-g3");
    let g3 = rig.expect("g3", "its end", |s| s.phase.is_terminal()).await;
    assert_eq!(
        (g3.phase, g3.reason.as_str()),
        (
            RunnerPhase::Failed,
            "its pod was deleted before the runner finished"
        )
    );
    assert!(
        fake.secrets(NS).is_empty(),
        "every secret went with its pod"
    );
}

#[tokio::test]
async fn a_start_that_races_another_adopts_the_pod_that_won() {
    init();
    let fake = FakeApiServer::start().await;
    let rig = Rig::start(&fake, "k8s-1", &[]);
    // The other start's pod appears between our look-up and our create.
    let other = Rig::start(&fake, "k8s-1", &[]);
    other.runtime.start(spec("z1", Arch::Amd64)).await.unwrap();
    let winner = fake.pod(NS, "gha-z1").unwrap();
    fake.fail_next(
        Method::GET,
        "/pods/gha-z1",
        404,
        "pods \"gha-z1\" not found",
    );
    rig.runtime.start(spec("z1", Arch::Amd64)).await.unwrap();
    assert_eq!(fake.pods(NS).len(), 1);
    let secrets = fake.secrets(NS);
    assert_eq!(secrets.len(), 1);
    let owners = secrets[0].metadata.owner_references.clone().unwrap();
    assert_eq!(Some(&owners[0].uid), winner.metadata.uid.as_ref());
}

#[tokio::test]
async fn a_kubeconfig_gives_the_cluster_and_the_default_namespace() {
    init();
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {}
contexts:
- name: fake
  context:
    cluster: fake
    user: tester
    namespace: from-kubeconfig
current-context: fake
users:
- name: tester
  user:
    token: test-token
",
            fake.url()
        ),
    )
    .unwrap();
    let env = vars(&[("KUBECONFIG", path.display().to_string())]);
    let client = agent::runtime::kubernetes::client::client(&env)
        .await
        .unwrap();
    assert_eq!(client.default_namespace(), "from-kubeconfig");

    // Without KUBERNETES_NAMESPACE, runner pods go to the kubeconfig's namespace.
    let (sink, _events) = event_channel();
    let stop = CancellationToken::new();
    let settings = KubernetesSettings::from_env(&vars(&[])).unwrap();
    let rt = KubernetesRuntime::new(client, settings, "k8s-1", sink, stop.clone());
    rt.start(spec("n1", Arch::Amd64)).await.unwrap();
    assert!(fake.pod("from-kubeconfig", "gha-n1").is_some());
    stop.cancel();

    let missing = vars(&[("KUBECONFIG", "/nonexistent/kubeconfig".into())]);
    let Err(err) = agent::runtime::kubernetes::client::client(&missing).await else {
        panic!("a missing kubeconfig is an error");
    };
    assert_eq!(
        err.to_string(),
        "KUBECONFIG: cannot use /nonexistent/kubeconfig"
    );
}
