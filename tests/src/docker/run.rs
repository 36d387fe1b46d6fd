//! [`TestRun`]: the label guard that removes what a test created, and the runner images of
//! each layout ([`RunnerLayout`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions,
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

    /// The runner image of the seed's default layout (myoung34's) for this run, built from the
    /// fake runner with `docker import` (about ten times faster than a `FROM scratch` build).
    pub async fn runner_image(&self) -> String {
        let tag = self.image_tag();
        self.import(RunnerLayout::Myoung34, &tag).await;
        tag
    }

    /// This run's image of `layout` (`gha-scaler-test-runner:<run>-<layout>`).
    pub async fn runner_image_of(&self, layout: RunnerLayout) -> String {
        let tag = format!("{}-{}", self.image_tag(), layout.name());
        self.import(layout, &tag).await;
        tag
    }

    /// Imports the image of `layout` as `reference` (`repo:tag`), labelled for this run so that
    /// it is removed with the rest.
    pub async fn import(&self, layout: RunnerLayout, reference: &str) {
        let binary = fake_runner_binary();
        let (repo, tag) = reference.rsplit_once(':').expect("repo:tag");
        let mut changes = layout.changes();
        changes.push(format!("LABEL {TEST_RUN_LABEL}={}", self.id));
        let docker = docker().await;
        let mut import = docker.create_image(
            Some(bollard::query_parameters::CreateImageOptions {
                from_src: Some("-".into()),
                repo: Some(repo.into()),
                tag: Some(tag.into()),
                changes,
                ..Default::default()
            }),
            Some(bollard::body_full(layout.root_filesystem(binary).into())),
            None,
        );
        while let Some(step) = import.next().await {
            let step = step.expect("the runner image is imported");
            if let Some(error) = step.error_detail {
                panic!("the runner image cannot be imported: {error:?}");
            }
        }
    }

    /// Loads a one-file image built for `linux/<arch>` as `reference`, labelled for this run.
    /// The engine cannot import or build for another platform offline (`docker import
    /// --platform` is ignored by Engine 20.10), but `docker load` keeps the `architecture` of
    /// the image configuration it is given, so the archive is made here: one layer, its
    /// configuration, and the manifest naming both (Docker's `docker save` layout).
    pub async fn load_image_of_arch(&self, reference: &str, arch: &str) {
        use sha2::Digest;
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        layer
            .append_data(&mut header, "note", &b"hi\n"[..])
            .expect("tar entry");
        let layer = layer.into_inner().expect("layer archive");
        let diff_id = hex::encode(sha2::Sha256::digest(&layer));
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {
                "Cmd": ["/note"],
                "Labels": {TEST_RUN_LABEL: self.id},
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        });
        let manifest = serde_json::json!([{
            "Config": "config.json",
            "RepoTags": [reference],
            "Layers": ["layer.tar"],
        }]);
        let mut archive = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("layer.tar", layer),
            ("config.json", config.to_string().into_bytes()),
            ("manifest.json", manifest.to_string().into_bytes()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive
                .append_data(&mut header, name, data.as_slice())
                .expect("tar entry");
        }
        let archive = archive.into_inner().expect("image archive");
        let docker = docker().await;
        let mut load = docker.import_image(
            bollard::query_parameters::ImportImageOptions::default(),
            bollard::body_full(archive.into()),
            None,
        );
        while let Some(step) = load.next().await {
            let step = step.expect("the image is loaded");
            if let Some(error) = step.error_detail {
                panic!("the image cannot be loaded: {error:?}");
            }
        }
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
    let images = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    let mut references: Vec<String> = images
        .into_iter()
        .flat_map(|i| {
            if i.repo_tags.is_empty() {
                vec![i.id]
            } else {
                i.repo_tags
            }
        })
        .collect();
    references.push(format!("{RUNNER_IMAGE_REPO}:{run}"));
    for reference in references {
        let _ = docker
            .remove_image(
                &reference,
                Some(RemoveImageOptions {
                    force: true,
                    noprune: false,
                    platforms: None,
                }),
                None,
            )
            .await;
    }
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
pub(crate) fn cargo_command() -> std::process::Command {
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

/// The layouts of the test runner images, each holding only what its real image holds at the
/// real paths (tests/runner-image/README.md has the rules and their sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerLayout {
    /// `ghcr.io/actions/actions-runner`: `/home/runner/{run.sh,config.sh,bin/Runner.Listener}`,
    /// no ENTRYPOINT or CMD, `WORKDIR /home/runner`, `USER runner` (1001).
    Official,
    /// `myoung34/github-runner`: `/entrypoint.sh`, `/actions-runner/{run.sh,config.sh,bin/
    /// Runner.Listener}`, `WORKDIR /actions-runner`, its ENTRYPOINT and CMD, root.
    Myoung34,
    /// [`CUSTOM_COMMAND`] only, `WORKDIR /opt/custom-runner`, no ENTRYPOINT or CMD.
    Custom,
}

/// The one program of the custom layout (what `RUNNER_COMMAND` names).
pub const CUSTOM_COMMAND: &str = "/opt/custom-runner/start";

/// Paths in the image, each with the uid that owns it.
type Owned = Vec<(&'static str, u64)>;

const PASSWD: &str =
    "root:x:0:0:root:/root:/sbin/nologin\nrunner:x:1001:1001:runner:/home/runner:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nrunner:x:1001:\ndocker:x:123:runner\n";

impl RunnerLayout {
    pub fn name(self) -> &'static str {
        match self {
            RunnerLayout::Official => "official",
            RunnerLayout::Myoung34 => "myoung34",
            RunnerLayout::Custom => "custom",
        }
    }

    /// The Dockerfile instructions `docker import` applies.
    fn changes(self) -> Vec<String> {
        match self {
            RunnerLayout::Official => vec!["WORKDIR /home/runner".into(), "USER runner".into()],
            RunnerLayout::Myoung34 => vec![
                "ENV AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache".into(),
                "WORKDIR /actions-runner".into(),
                r#"ENTRYPOINT ["/entrypoint.sh"]"#.into(),
                r#"CMD ["./bin/Runner.Listener", "run", "--startuptype", "service"]"#.into(),
            ],
            RunnerLayout::Custom => vec!["WORKDIR /opt/custom-runner".into()],
        }
    }

    /// (directories with their owner uid, programs with their owner uid).
    fn paths(self) -> (Owned, Owned) {
        match self {
            RunnerLayout::Official => (
                vec![
                    ("home/", 0),
                    ("home/runner/", 1001),
                    ("home/runner/bin/", 1001),
                ],
                vec![
                    ("home/runner/run.sh", 1001),
                    ("home/runner/config.sh", 1001),
                    ("home/runner/bin/Runner.Listener", 1001),
                ],
            ),
            RunnerLayout::Myoung34 => (
                vec![
                    ("actions-runner/", 1001),
                    ("actions-runner/bin/", 1001),
                    ("_work/", 1001),
                    ("opt/", 0),
                    ("opt/hostedtoolcache/", 1001),
                ],
                vec![
                    ("entrypoint.sh", 0),
                    ("actions-runner/run.sh", 1001),
                    ("actions-runner/config.sh", 1001),
                    ("actions-runner/bin/Runner.Listener", 1001),
                ],
            ),
            RunnerLayout::Custom => (
                vec![("opt/", 0), ("opt/custom-runner/", 0)],
                vec![("opt/custom-runner/start", 0)],
            ),
        }
    }

    /// The image's root filesystem as a tar: the fake runner at each program path.
    fn root_filesystem(self, binary: &Path) -> Vec<u8> {
        let program = std::fs::read(binary).expect("the fake runner binary");
        let mut tar = tar::Builder::new(Vec::new());
        let (dirs, programs) = self.paths();
        let common = [("etc/", 0), ("tmp/", 0)];
        for (dir, uid) in common.into_iter().chain(dirs) {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(if dir == "tmp/" { 0o1777 } else { 0o755 });
            header.set_uid(uid);
            header.set_gid(uid);
            header.set_cksum();
            tar.append_data(&mut header, dir, std::io::empty())
                .expect("tar directory");
        }
        let mut add = |path: &str, data: &[u8], mode: u32, uid: u64| {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_uid(uid);
            header.set_gid(uid);
            header.set_cksum();
            tar.append_data(&mut header, path, data).expect("tar entry");
        };
        add("etc/passwd", PASSWD.as_bytes(), 0o644, 0);
        add("etc/group", GROUP.as_bytes(), 0o644, 0);
        for (path, uid) in programs {
            add(path, &program, 0o755, uid);
        }
        tar.into_inner().expect("tar archive")
    }
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

/// The `gha-agent` binary: the static one `scripts/test.sh` built once for every Docker test
/// (`GHA_SCALER_STATIC_BIN_DIR`, see [`crate::images`]); without it, this workspace's debug
/// build, built once per test process (with the features the test build already uses, so
/// nothing is rebuilt twice).
pub fn gha_agent_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if std::env::var_os(crate::images::STATIC_BIN_DIR_VAR).is_some_and(|d| !d.is_empty()) {
            return crate::images::static_binary("gha-agent");
        }
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
