//! Runner images ready before they are needed, on the real Docker engine (issue 16 §2). No
//! registry is reachable here, so: a locally imported image counts as present; a pull from a
//! registry on a closed loopback port fails fast and is reported failed with the engine's
//! reason after its bounded retries; an image loaded for another architecture is refused before
//! any container exists, with a reason that reaches the agent list, the runner and the job (and
//! backs the agent off); and `REGISTRY_MIRROR` turns a Docker Hub reference into the mirror's
//! (an image present under the mirror's name is used; one absent is pulled from the mirror,
//! never from Docker Hub).

use std::time::Duration;

use tests::docker::{DockerSetup, RunnerLayout, SocketProxy};
use tests::harness::{get_json, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// A Docker Hub style name no registry has, unique to one test.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// The agent's one image report, once its state is `state`.
async fn image_once(s: &DockerSetup, agent: &str, state: &str) -> serde_json::Value {
    let current = || async {
        s.controller
            .agent(agent)
            .await
            .map(|a| a["images"][0].clone())
            .unwrap_or_default()
    };
    wait_until(
        WAIT,
        &format!("{agent} reports its image {state}"),
        || async { current().await["state"] == state },
    )
    .await;
    current().await
}

#[tokio::test]
async fn a_local_runner_image_is_reported_present() {
    let s = DockerSetup::start_e2e(1, &[]).await;
    let _agent = s.agent("host-present", &[]);
    let image = image_once(&s, "host-present", "present").await;
    assert_eq!(
        image,
        serde_json::json!({"image": s.image, "state": "present", "detail": ""})
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_reported_failed_after_bounded_retries() {
    // A registry on a closed loopback port: each pull fails at once, nothing leaves the host.
    let missing = "localhost:1/missing/runner:nope";
    let s = DockerSetup::start_with(&[("RUNNER_IMAGE", missing)]).await;
    let _agent = s.agent(
        "host-unpullable",
        &[
            ("IMAGE_PULL_ATTEMPTS", "2"),
            ("IMAGE_PULL_BACKOFF", "100ms"),
        ],
    );
    let image = image_once(&s, "host-unpullable", "failed").await;
    let detail = image["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(
            "gave up after 2 attempt(s): cannot pull image localhost:1/missing/runner:nope"
        ) && detail.contains("localhost:1"),
        "{detail}"
    );
    assert!(s.run.containers().await.is_empty());
}

#[tokio::test]
async fn an_image_for_another_architecture_is_refused_with_the_reason_everywhere() {
    let (ours, other) = match shared::arch::Arch::host().expect("a supported host") {
        shared::arch::Arch::Amd64 => ("amd64", "arm64"),
        shared::arch::Arch::Arm64 => ("arm64", "amd64"),
    };
    let foreign = format!("{}:{other}", unique("gha-scaler-test-foreign"));
    let s = DockerSetup::start_e2e(
        1,
        &[
            ("RUNNER_IMAGE", &foreign),
            ("BACKOFF_INITIAL", "200ms"),
            ("BACKOFF_MAX", "1s"),
        ],
    )
    .await;
    s.run.load_image_of_arch(&foreign, other).await;
    let _agent = s.agent("host-arch", &[]);
    let reason =
        format!("image {foreign} is built for linux/{other}, but this runner needs linux/{ours}");

    let image = image_once(&s, "host-arch", "failed").await;
    let detail = image["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(&reason), "{detail}");

    let job = s
        .sim
        .queue(&["self-hosted", "linux"], Duration::from_millis(100));
    wait_until(WAIT, "the job explained by the refusal", || async {
        let (_, body) = get_json(&s.controller, &format!("/api/v1/jobs/{job}")).await;
        body["waiting"]["reason"] == "backing_off"
            && body["waiting"]["cause"] == "agent"
            && body["explanation"]
                .as_str()
                .is_some_and(|e| e.contains(&reason))
    })
    .await;
    let (_, status) = get_json(&s.controller, "/status").await;
    assert!(
        status["containment"]
            .as_array()
            .is_some_and(|c| c.iter().any(|b| b["cause"] == "agent"
                && b["reason"].as_str().is_some_and(|r| r.contains(&reason)))),
        "{status}"
    );
    let agent = s.controller.agent("host-arch").await.expect("listed");
    let runner = &agent["runners"][0];
    assert_eq!(runner["phase"], "failed", "{agent}");
    assert!(
        runner["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&reason)),
        "{agent}"
    );
    assert!(
        s.run.containers().await.is_empty(),
        "no container of a foreign image is ever created"
    );
}

#[tokio::test]
async fn a_docker_hub_image_is_used_from_the_registry_mirror() {
    // The mirror's copy exists locally under the mirror's name; the Docker Hub name does not:
    // a runner can only start if the agent looks for the image at the mirror.
    let hub = format!("{}:1", unique("gha-scaler-test-mirrored"));
    let mirrored = format!("127.0.0.1:1/library/{hub}");
    let s = DockerSetup::start_e2e(1, &[("RUNNER_IMAGE", &hub)]).await;
    s.run.import(RunnerLayout::Myoung34, &mirrored).await;
    let _agent = s.agent("host-mirror", &[("REGISTRY_MIRROR", "127.0.0.1:1")]);
    let image = image_once(&s, "host-mirror", "present").await;
    assert_eq!(image["image"], hub.as_str());

    let job = s
        .sim
        .queue(&["self-hosted", "linux"], Duration::from_millis(200));
    s.wait_jobs_completed(&[job], Duration::from_secs(60)).await;
    assert_eq!(s.sim.sim.job(job).expect("job").conclusion, Some("success"));
    s.wait_no_containers(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_docker_hub_image_missing_at_the_mirror_is_pulled_from_the_mirror_only() {
    let hub = format!("{}:1", unique("gha-scaler-test-absent"));
    let s = DockerSetup::start_with(&[("RUNNER_IMAGE", &hub)]).await;
    let _agent = s.agent(
        "host-mirror-miss",
        &[
            ("REGISTRY_MIRROR", "127.0.0.1:1"),
            ("IMAGE_PULL_ATTEMPTS", "1"),
        ],
    );
    let image = image_once(&s, "host-mirror-miss", "failed").await;
    let detail = image["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "cannot pull image {hub} (through the mirror, as 127.0.0.1:1/library/{hub})"
        )) && detail.contains("127.0.0.1:1"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_pull_the_engine_never_answers_is_abandoned_at_its_timeout() {
    // The engine's socket through a proxy that holds every pull for an hour (a hung engine or
    // registry): without IMAGE_PULL_TIMEOUT the pull would hold its slot all that time.
    let s = DockerSetup::start_with(&[("RUNNER_IMAGE", "localhost:1/hung/runner:1")]).await;
    let socket = s.dir.path().join("engine.sock");
    let _engine = SocketProxy::start_holding(
        &socket,
        std::path::Path::new("/var/run/docker.sock"),
        ("POST", "/images/create"),
        Duration::from_secs(3600),
    );
    let _agent = s.agent(
        "host-hung",
        &[
            ("DOCKER_HOST", &*format!("unix://{}", socket.display())),
            ("IMAGE_PULL_ATTEMPTS", "1"),
            ("IMAGE_PULL_TIMEOUT", "300ms"),
        ],
    );
    let image = image_once(&s, "host-hung", "failed").await;
    assert_eq!(
        image["detail"],
        "gave up after 1 attempt(s): the pull did not finish within IMAGE_PULL_TIMEOUT (300ms)"
    );
}
