//! A real agent with the Kubernetes runtime, against a real controller over mutual TLS and the
//! fake API server: it registers both architectures the cluster's nodes have, capped by
//! `MAX_RUNNERS`, and the controller sees a runner go from Pending (with the scheduler's
//! reason) to running to finished, its pod cleaned up.

use std::collections::BTreeMap;
use std::time::Duration;

use agent::config::AgentConfig;
use agent::runtime::kubernetes::KubernetesRuntime;
use agent::runtime::kubernetes::settings::KubernetesSettings;
use serde_json::json;
use shared::arch::Arch;
use shared::command::{AgentCommand, CacheSettings, Registration, RunnerSpec};
use shared::ids::{AgentName, RunnerId};
use tests::harness::{TestController, controller_env, init, vars, wait_until};
use tests::kube_fake::FakeApiServer;
use tests::pki::TestCa;
use tokio_util::sync::CancellationToken;

const NS: &str = "runners";
const WAIT: Duration = Duration::from_secs(15);

fn runner(id: &str, arch: Arch) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).unwrap(),
        name: format!("gha-{id}"),
        image: "ghcr.io/actions/actions-runner:latest".into(),
        launch: Default::default(),
        registration: Registration::JitConfig("eyJqaXQiOnRydWV9".into()),
        labels: vec!["self-hosted".into(), "linux".into(), "arm64".into()],
        env: BTreeMap::new(),
        timeout: Duration::from_secs(900),
        cache: CacheSettings::default(),
        arch,
        owner: "acme".into(),
        repository: Some("app".into()),
    }
}

/// The runner `id` in the controller's view of `agent`: (phase, reason).
async fn runner_in_api(
    controller: &TestController,
    agent: &str,
    id: &str,
) -> Option<(String, String)> {
    let view = controller.agent(agent).await?;
    view["runners"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| {
            (
                r["phase"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

#[tokio::test]
async fn an_in_cluster_agent_serves_both_architectures_and_reports_pod_progress() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "test CA");
    let controller = TestController::start(controller_env(
        &dir.path().join("state"),
        &ca.ca_file(),
        &ca.server(),
    ))
    .await;

    let fake = FakeApiServer::start().await;
    fake.add_node("amd-1", "amd64", 2);
    fake.add_node("arm-1", "arm64", 110);
    fake.add_node("arm-2", "arm64", 110);

    let cert = ca.client("k8s-agent", &[]);
    let env = vars(&[
        ("CONTROLLER_URL", controller.grpc_url()),
        ("TLS_CA_FILE", ca.ca_file().display().to_string()),
        ("TLS_CERT_FILE", cert.cert.display().to_string()),
        ("TLS_KEY_FILE", cert.key.display().to_string()),
        ("AGENT_ARCH", "amd64".into()),
        ("MAX_RUNNERS", "4".into()),
        ("RUNTIME", "kubernetes".into()),
        ("KUBERNETES_NAMESPACE", NS.into()),
        ("RECONNECT_MIN_BACKOFF", "50ms".into()),
        ("RECONNECT_MAX_BACKOFF", "300ms".into()),
    ]);
    let config = AgentConfig::from_env(&env).unwrap();
    let settings = KubernetesSettings::from_env(&env).unwrap();
    // As `gha-agent` does: pods are labelled with the certificate's identity.
    let certs = shared::tls::read_certs(&config.tls.cert_file).unwrap();
    let name = shared::tls::identity_from_cert(&certs[0]).unwrap();
    let shutdown = CancellationToken::new();
    let client = fake.client("default");
    let child = shutdown.child_token();
    let agent = agent::Agent::new(config, |sink| {
        KubernetesRuntime::new(client, settings, name.as_str(), sink, child)
    });
    let running = tokio::spawn(agent.run(shutdown.clone()));

    wait_until(WAIT, "the agent registers", || async {
        controller
            .agent("k8s-agent")
            .await
            .is_some_and(|a| a["connected"] == true)
    })
    .await;
    let view = controller.agent("k8s-agent").await.unwrap();
    assert_eq!(view["runtime"], "kubernetes");
    assert_eq!(view["capacity"], 4);
    assert_eq!(view["capacity_by_arch"], json!({"amd64": 2, "arm64": 4}));
    assert_eq!(view["architectures"], json!(["amd64", "arm64"]));
    // It cannot pre-pull (the node's kubelet pulls) and says so for the runner image.
    wait_until(WAIT, "the agent reports the runner image", || async {
        controller
            .agent("k8s-agent")
            .await
            .is_some_and(|a| a["images"][0]["state"] == "unknown")
    })
    .await;
    let image = &controller.agent("k8s-agent").await.unwrap()["images"][0];
    assert_eq!(image["image"], controller.config.runners.image.as_str());
    assert!(
        image["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the kubelet of the node a runner pod lands on")),
        "{image}"
    );

    let agent_name = AgentName::parse("k8s-agent").unwrap();
    controller
        .registry
        .send(
            &agent_name,
            AgentCommand::StartRunner(Box::new(runner("k1", Arch::Arm64))),
        )
        .unwrap();
    wait_until(WAIT, "the runner's pod", || async {
        fake.pod(NS, "gha-k1").is_some()
    })
    .await;
    let pod = fake.pod(NS, "gha-k1").unwrap();
    assert_eq!(
        pod.metadata.labels.unwrap()["gha-scaler/agent"],
        "k8s-agent"
    );
    assert_eq!(
        pod.spec.unwrap().node_selector.unwrap()["kubernetes.io/arch"],
        "arm64"
    );

    let why = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint.";
    fake.set_pod_status(
        NS,
        "gha-k1",
        json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why
        }]}),
    );
    wait_until(
        WAIT,
        "the controller sees why the runner is pending",
        || async {
            runner_in_api(&controller, "k8s-agent", "k1").await
                == Some(("starting".into(), format!("unschedulable: {why}")))
        },
    )
    .await;

    fake.set_pod_status(NS, "gha-k1", json!({"phase": "Running"}));
    wait_until(WAIT, "running in the controller", || async {
        runner_in_api(&controller, "k8s-agent", "k1")
            .await
            .map(|r| r.0)
            == Some("running".into())
    })
    .await;
    fake.set_pod_status(
        NS,
        "gha-k1",
        json!({"phase": "Succeeded", "containerStatuses": [{
            "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0}}
        }]}),
    );
    wait_until(
        WAIT,
        "exited in the controller, pod and secret gone",
        || async {
            runner_in_api(&controller, "k8s-agent", "k1")
                .await
                .map(|r| r.0)
                == Some("exited".into())
                && fake.pods(NS).is_empty()
                && fake.secrets(NS).is_empty()
        },
    )
    .await;

    assert_eq!(fake.open_watches(), 1, "one pod watch");
    shutdown.cancel();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the agent stops on the shutdown token")
        .unwrap()
        .unwrap();
    wait_until(WAIT, "the pod watch closed with the agent", || async {
        fake.open_watches() == 0
    })
    .await;
}
