//! [`TestRun`]: the label guard that removes what a test created, and the runner image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions,
};
use futures::StreamExt;

use super::{DOCKER_SOCKET, RUNNER_IMAGE_REPO, TEST_RUN_LABEL, docker, label_filter};

/// Everything one test creates carries `dev.gha-scaler.test-run=<id>`; dropping the guard
/// removes it all.
pub struct TestRun {
    pub id: String,
}

impl TestRun {
    pub fn new() -> Self {
        Self {
            id: format!("t{}", hex::encode(rand::random::<[u8; 5]>())),
        }
    }

    /// `key=value` for `RUNNER_CONTAINER_LABELS`.
    pub fn label_pair(&self) -> String {
        format!("{TEST_RUN_LABEL}={}", self.id)
    }

    /// The image tag of this run's runner image.
    pub fn image_tag(&self) -> String {
        format!("{RUNNER_IMAGE_REPO}:{}", self.id)
    }

    /// Builds (or reuses the cached binary of) the fake runner and imports an image of it for
    /// this run: `/home/runner/run.sh` in an otherwise empty root filesystem (`docker import`,
    /// about ten times faster than a `FROM scratch` build).
    pub async fn runner_image(&self) -> String {
        let binary = fake_runner_binary();
        let tag = self.image_tag();
        let docker = docker().await;
        let mut import = docker.create_image(
            Some(bollard::query_parameters::CreateImageOptions {
                from_src: Some("-".into()),
                repo: Some(RUNNER_IMAGE_REPO.into()),
                tag: Some(self.id.clone()),
                changes: vec![
                    format!(
                        "CMD [\"{}\"]",
                        agent::runtime::docker::spec::OFFICIAL_RUN_SH
                    ),
                    "WORKDIR /home/runner".into(),
                    format!("LABEL {TEST_RUN_LABEL}={}", self.id),
                ],
                ..Default::default()
            }),
            Some(bollard::body_full(root_filesystem(binary).into())),
            None,
        );
        while let Some(step) = import.next().await {
            let step = step.expect("the runner image is imported");
            if let Some(error) = step.error_detail {
                panic!("the runner image cannot be imported: {error:?}");
            }
        }
        tag
    }

    /// Containers of this run, as (name, state) pairs.
    pub async fn containers(&self) -> Vec<bollard::models::ContainerSummary> {
        docker()
            .await
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(&self.id)),
                ..Default::default()
            }))
            .await
            .expect("list containers")
    }

    /// Names of this run's volumes.
    pub async fn volumes(&self) -> Vec<String> {
        docker()
            .await
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(label_filter(&self.id)),
            }))
            .await
            .expect("list volumes")
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// Removes everything of this run now (also done on drop).
    pub async fn clean(&self) {
        clean(&self.id).await;
    }
}

impl Default for TestRun {
    fn default() -> Self {
        Self::new()
    }
}

async fn clean(run: &str) {
    let Ok(docker) = Docker::connect_with_unix(DOCKER_SOCKET, 60, bollard::API_DEFAULT_VERSION)
    else {
        return;
    };
    let Ok(docker) = docker.negotiate_version().await else {
        return;
    };
    let filters = label_filter(run);
    // A removal already in flight (an agent killed mid-request) keeps a container, and so its
    // volumes, around for a moment: remove until none is listed, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        if containers.is_empty() || Instant::now() > deadline {
            break;
        }
        for c in containers.into_iter().filter_map(|c| c.id) {
            let _ = docker
                .remove_container(
                    &c,
                    Some(RemoveContainerOptions {
                        v: true,
                        force: true,
                        link: false,
                    }),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(volumes) = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        }))
        .await
    {
        for v in volumes.volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                .await;
        }
    }
    if let Ok(networks) = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
    {
        for n in networks.into_iter().filter_map(|n| n.id) {
            let _ = docker.remove_network(&n).await;
        }
    }
    let _ = docker
        .remove_image(
            &format!("{RUNNER_IMAGE_REPO}:{run}"),
            Some(RemoveImageOptions {
                force: true,
                noprune: false,
                platforms: None,
            }),
            None,
        )
        .await;
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let run = self.id.clone();
        // A fresh runtime on a thread of its own: drop may run inside (or outside) a runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(clean(&run));
            }
        })
        .join();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A `cargo` command as if run from a shell: without the variables cargo sets for a test
/// process (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, `OUT_DIR`, …). Build scripts (ring's) rerun
/// when those change, so passing them on would rebuild half the tree on every alternation.
fn cargo_command() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo_for_tests = key == "OUT_DIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                key,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "CARGO_ENCODED_RUSTFLAGS"
            );
        if set_by_cargo_for_tests {
            command.env_remove(key);
        }
    }
    command
}

/// The static fake runner, built once per test process (cargo keeps it fresh and serializes
/// concurrent builds by its own lock).
pub fn fake_runner_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("runner-image");
        let started = Instant::now();
        let status = cargo_command()
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(root.join("tests/runner-image/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the fake runner builds");
        tracing::info!(took = ?started.elapsed(), "fake runner binary ready");
        target.join("release/fake-runner")
    })
}

/// The runner image's root filesystem as a tar: `home/runner/run.sh`, the fake runner.
fn root_filesystem(binary: &Path) -> Vec<u8> {
    let program = std::fs::read(binary).expect("the fake runner binary");
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["home/", "home/runner/", "tmp/"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(if dir == "tmp/" { 0o1777 } else { 0o755 });
        header.set_cksum();
        tar.append_data(&mut header, dir, std::io::empty())
            .expect("tar directory");
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(program.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "home/runner/run.sh", program.as_slice())
        .expect("tar entry");
    tar.into_inner().expect("tar archive")
}

/// A bridge network labelled for the run; returns (name, gateway address).
pub async fn test_network(run: &TestRun) -> (String, std::net::IpAddr) {
    let docker = docker().await;
    let name = format!("gha-test-{}", run.id);
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(TEST_RUN_LABEL.to_owned(), run.id.clone())])),
            ..Default::default()
        })
        .await
        .expect("network created");
    let inspected = docker
        .inspect_network(&name, None)
        .await
        .expect("network inspected");
    let gateway = inspected
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway))
        .expect("the network has a gateway");
    (name, gateway.parse().expect("gateway address"))
}

/// The `gha-agent` binary of this workspace, built once per test process (with the features
/// the test build already uses, so nothing is rebuilt twice).
pub fn gha_agent_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let status = cargo_command()
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "-p",
                "agent",
                "-p",
                "tests",
                "--bin",
                "gha-agent",
            ])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "gha-agent builds");
        target.join("debug/gha-agent")
    })
}
