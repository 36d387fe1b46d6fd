//! The Kubernetes runtime recovers: a restarted agent adopts its pods (and cleans those that
//! finished while it was away, leaving other agents' alone), and a dropped watch stream is
//! resumed from its resourceVersion, or relisted when that version is gone (410).

use std::collections::BTreeMap;
use std::time::Duration;

use agent::runtime::kubernetes::KubernetesRuntime;
use agent::runtime::kubernetes::settings::KubernetesSettings;
use agent::runtime::{RunnerRuntime, event_channel};
use serde_json::json;
use shared::arch::Arch;
use shared::command::{CacheSettings, Registration, RunnerSpec};
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tests::harness::{init, vars, wait_until};
use tests::kube_fake::FakeApiServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NS: &str = "ci";
const WAIT: Duration = Duration::from_secs(10);

fn spec(id: &str) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).unwrap(),
        name: format!("gha-{id}"),
        image: "ghcr.io/actions/actions-runner:latest".into(),
        launch: Default::default(),
        registration: Registration::JitConfig("jit".into()),
        labels: vec!["self-hosted".into()],
        env: BTreeMap::new(),
        timeout: Duration::from_secs(600),
        cache: CacheSettings::default(),
        arch: Arch::Amd64,
        owner: "acme".into(),
        repository: Some("app".into()),
    }
}

struct Rig {
    runtime: KubernetesRuntime,
    events: mpsc::Receiver<RunnerState>,
    stop: CancellationToken,
}

impl Rig {
    fn start(fake: &FakeApiServer, agent: &str) -> Self {
        Self::of_installation(fake, agent, None)
    }

    /// An agent of `installation` (its CA's fingerprint or `INSTALLATION_ID`).
    fn of_installation(fake: &FakeApiServer, agent: &str, installation: Option<&str>) -> Self {
        let settings =
            KubernetesSettings::from_env(&vars(&[("KUBERNETES_NAMESPACE", NS.into())])).unwrap();
        let (sink, events) = event_channel();
        let stop = CancellationToken::new();
        let runtime = KubernetesRuntime::for_installation(
            fake.client(NS),
            settings,
            agent,
            installation.map(str::to_owned),
            sink,
            stop.clone(),
        );
        Self {
            runtime,
            events,
            stop,
        }
    }

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

fn phase(p: &str) -> serde_json::Value {
    let state = match p {
        "Running" => json!({"running": {}}),
        "Succeeded" => json!({"terminated": {"exitCode": 0}}),
        "Failed" => json!({"terminated": {"exitCode": 1}}),
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    json!({"phase": p, "containerStatuses": [{
        "name": "runner", "image": "x", "imageID": "", "ready": p == "Running", "restartCount": 0,
        "state": state
    }]})
}

/// A runner pod made by someone else (another agent, or another controller's agent).
fn foreign_pod(name: &str, controller: &str, agent: &str) -> serde_json::Value {
    json!({
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "gha-scaler",
                "gha-scaler/controller": controller,
                "gha-scaler/agent": agent,
                "gha-scaler/runner-id": name,
            },
            "annotations": {"gha-scaler/runner-id": name, "gha-scaler/runner-name": name}
        },
        "spec": {"containers": [{"name": "runner", "image": "x"}], "restartPolicy": "Never"},
        "status": {"phase": "Succeeded"}
    })
}

fn by_id(states: &[RunnerState]) -> BTreeMap<String, (RunnerPhase, Option<i32>)> {
    states
        .iter()
        .map(|s| (s.id.to_string(), (s.phase, s.exit_code)))
        .collect()
}

/// Two installations (staging and production controllers, each with its own CA) whose agents
/// share a name and the default `CONTROLLER_ID` in one namespace: each adopts and cleans only
/// its own pods.
#[tokio::test]
async fn agents_of_two_installations_with_one_name_keep_to_their_own_pods() {
    init();
    let fake = FakeApiServer::start().await;
    let mut staging = Rig::of_installation(&fake, "k8s-1", Some("staging-ca"));
    staging.runtime.start(spec("s1")).await.unwrap();
    fake.set_pod_status(NS, "gha-s1", phase("Running"));
    staging
        .expect("s1", "running", |s| s.phase == RunnerPhase::Running)
        .await;
    let pod = fake.pod(NS, "gha-s1").expect("staging's pod");
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("gha-scaler/installation")
            .map(String::as_str),
        Some("staging-ca")
    );
    drop(staging);
    // Staging's runner finishes while production's agent of the same name starts.
    fake.set_pod_status(NS, "gha-s1", phase("Succeeded"));
    let mut production = Rig::of_installation(&fake, "k8s-1", Some("production-ca"));
    assert!(
        production.runtime.inventory().await.unwrap().is_empty(),
        "production adopted staging's pod"
    );
    production.runtime.start(spec("p1")).await.unwrap();
    fake.set_pod_status(NS, "gha-p1", phase("Succeeded"));
    production
        .expect("p1", "its end reported", |s| s.phase.is_terminal())
        .await;
    wait_until(WAIT, "production's finished pod deleted", || async {
        fake.pod(NS, "gha-p1").is_none()
    })
    .await;
    assert!(
        fake.pod(NS, "gha-s1").is_some(),
        "production deleted staging's finished pod"
    );
    // Staging's agent, back, cleans its own.
    let mut staging = Rig::of_installation(&fake, "k8s-1", Some("staging-ca"));
    staging
        .expect("s1", "its end reported", |s| s.phase.is_terminal())
        .await;
    wait_until(WAIT, "staging's finished pod deleted", || async {
        fake.pod(NS, "gha-s1").is_none()
    })
    .await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_pods_and_cleans_the_finished_ones() {
    init();
    let fake = FakeApiServer::start().await;
    let mut first = Rig::start(&fake, "k8s-1");
    for id in ["a1", "a2", "a3"] {
        first.runtime.start(spec(id)).await.unwrap();
    }
    fake.set_pod_status(NS, "gha-a1", phase("Running"));
    first
        .expect("a1", "running", |s| s.phase == RunnerPhase::Running)
        .await;
    drop(first);

    // While no agent runs: a2 finishes; other agents' finished pods sit in the namespace.
    fake.set_pod_status(NS, "gha-a2", phase("Succeeded"));
    fake.create(
        "pods",
        NS,
        foreign_pod("other-agent", "gha-scaler", "k8s-2"),
    );
    fake.create(
        "pods",
        NS,
        foreign_pod("other-controller", "staging", "k8s-1"),
    );

    let mut second = Rig::start(&fake, "k8s-1");
    let inventory = second.runtime.inventory().await.unwrap();
    assert_eq!(
        by_id(&inventory),
        BTreeMap::from([
            ("a1".into(), (RunnerPhase::Running, None)),
            ("a2".into(), (RunnerPhase::Exited, Some(0))),
            ("a3".into(), (RunnerPhase::Starting, None)),
        ])
    );
    let a2 = second
        .expect("a2", "its end reported", |s| s.phase.is_terminal())
        .await;
    assert_eq!(a2.exit_code, Some(0));
    wait_until(WAIT, "a2's pod and secret deleted", || async {
        fake.pod(NS, "gha-a2").is_none() && fake.secrets(NS).len() == 2
    })
    .await;
    assert!(
        fake.pod(NS, "other-agent").is_some(),
        "another agent's pod is not ours to clean"
    );
    assert!(fake.pod(NS, "other-controller").is_some());

    // A replayed start for an adopted runner creates nothing; its next change is reported.
    second.runtime.start(spec("a1")).await.unwrap();
    assert_eq!(fake.pods(NS).len(), 4);
    fake.set_pod_status(NS, "gha-a1", phase("Failed"));
    let a1 = second
        .expect("a1", "failed", |s| s.phase.is_terminal())
        .await;
    assert_eq!((a1.phase, a1.exit_code), (RunnerPhase::Failed, Some(1)));
    wait_until(WAIT, "a1's pod deleted", || async {
        fake.pod(NS, "gha-a1").is_none()
    })
    .await;
}

fn pod_requests(fake: &FakeApiServer) -> (Vec<String>, Vec<String>) {
    let pods: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/ci/pods?") && r.contains("labelSelector"))
        .collect();
    pods.into_iter().partition(|r| r.contains("watch=true"))
}

fn query(request: &str, key: &str) -> Option<String> {
    let q = request.split_once('?')?.1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn a_dropped_watch_resumes_from_its_resource_version_and_relists_when_it_is_gone() {
    init();
    let fake = FakeApiServer::start().await;
    let mut rig = Rig::start(&fake, "k8s-1");
    rig.runtime.start(spec("w1")).await.unwrap();
    rig.expect("w1", "starting", |s| s.phase == RunnerPhase::Starting)
        .await;
    wait_until(WAIT, "the pod watch is open", || async {
        fake.open_watches() == 1
    })
    .await;
    let (watches, lists) = pod_requests(&fake);
    assert_eq!(
        (watches.len(), lists.len()),
        (1, 1),
        "one list, then one watch"
    );
    let pod_version: u64 = fake
        .pod(NS, "gha-w1")
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();

    // The stream drops; a change lands while the watcher reconnects.
    fake.drop_watches();
    fake.set_pod_status(NS, "gha-w1", phase("Running"));
    rig.expect("w1", "running after the drop", |s| {
        s.phase == RunnerPhase::Running
    })
    .await;
    wait_until(WAIT, "a second watch", || async {
        pod_requests(&fake).0.len() >= 2
    })
    .await;
    let (watches, lists) = pod_requests(&fake);
    assert_eq!(lists.len(), 1, "resumed without relisting: {watches:?}");
    let resumed_from: u64 = query(&watches[1], "resourceVersion")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        resumed_from >= pod_version,
        "resumed from {resumed_from}, before the last version seen ({pod_version})"
    );

    // History compacted past the watcher's version: the server answers 410 and it relists.
    wait_until(WAIT, "the resumed watch is open", || async {
        fake.open_watches() == 1
    })
    .await;
    fake.add_node("n1", "amd64", 10);
    fake.compact();
    fake.drop_watches();
    fake.set_pod_status(NS, "gha-w1", phase("Succeeded"));
    let done = rig
        .expect("w1", "exited after the relist", |s| s.phase.is_terminal())
        .await;
    assert_eq!(done.exit_code, Some(0));
    wait_until(WAIT, "a relist", || async {
        pod_requests(&fake).1.len() >= 2
    })
    .await;
    wait_until(WAIT, "w1's pod deleted", || async {
        fake.pod(NS, "gha-w1").is_none()
    })
    .await;
}

fn our_secret(name: &str, agent: &str, created: Option<&str>) -> serde_json::Value {
    let mut secret = json!({
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "gha-scaler",
                "gha-scaler/controller": "gha-scaler",
                "gha-scaler/agent": agent,
            }
        },
        "type": "Opaque",
        "stringData": {"jitconfig": "secret"}
    });
    if let Some(at) = created {
        secret["metadata"]["creationTimestamp"] = json!(at);
    }
    secret
}

#[tokio::test]
async fn secrets_left_without_an_owner_go_to_their_pod_or_are_deleted() {
    init();
    let fake = FakeApiServer::start().await;
    // A previous agent stopped after creating o1's pod but before handing it the secret, and
    // after creating o2's secret but before its pod.
    let mut pod = foreign_pod("gha-o1", "gha-scaler", "k8s-1");
    pod["status"] = json!({"phase": "Pending"});
    let pod = fake.create("pods", NS, pod);
    let long_ago = Some("2020-01-01T00:00:00Z");
    fake.create(
        "secrets",
        NS,
        our_secret("gha-o1-registration", "k8s-1", long_ago),
    );
    fake.create(
        "secrets",
        NS,
        our_secret("gha-o2-registration", "k8s-1", long_ago),
    );
    fake.create(
        "secrets",
        NS,
        our_secret("gha-o3-registration", "k8s-1", None),
    );
    fake.create(
        "secrets",
        NS,
        our_secret("theirs-registration", "k8s-2", long_ago),
    );

    let _rig = Rig::start(&fake, "k8s-1");
    let names = || {
        fake.secrets(NS)
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    wait_until(
        WAIT,
        "o1's secret owned by its pod, o2's deleted",
        || async {
            let o1_owned = fake.secrets(NS).iter().any(|s| {
                s.metadata.name.as_deref() == Some("gha-o1-registration")
                    && s.metadata.owner_references.as_ref().is_some_and(|o| {
                        o.len() == 1 && o[0].uid == pod["metadata"]["uid"].as_str().unwrap()
                    })
            });
            o1_owned && !names().contains(&"gha-o2-registration".to_owned())
        },
    )
    .await;
    assert_eq!(
        names(),
        [
            "gha-o1-registration",
            "gha-o3-registration",
            "theirs-registration"
        ],
        "a young secret may still get its pod; another agent's is not ours"
    );
    // Owned now, o1's secret goes with its pod.
    fake.delete("pods", NS, "gha-o1");
    assert_eq!(names(), ["gha-o3-registration", "theirs-registration"]);
}
