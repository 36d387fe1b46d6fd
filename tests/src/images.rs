//! The shipped images and the static binaries in them, for the tests that run the product as
//! users do (`tests/tests/compose.rs`, the Docker process tests).
//!
//! One static build serves every such test: `scripts/test.sh` builds `gha-controller`,
//! `gha-agent` and `github-sim` once with `+crt-static` into `target/static/<host>/release` and
//! passes that directory as [`STATIC_BIN_DIR_VAR`]. A developer running one test without it gets
//! the same build done here, once per test process (cargo serializes concurrent builds).
//! [`build_images`] runs `deploy/build-images.sh` on those binaries with a tag and a label
//! unique to the test run, so [`crate::docker::TestRun`] removes the images with everything else.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::docker::TestRun;

/// The variable naming the directory of the static release binaries.
pub const STATIC_BIN_DIR_VAR: &str = "GHA_SCALER_STATIC_BIN_DIR";

/// The binaries the static build makes.
pub const STATIC_BINARIES: [&str; 3] = ["gha-controller", "gha-agent", "github-sim"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host")
}

/// The directory holding the static `gha-controller`, `gha-agent` and `github-sim`: the one
/// [`STATIC_BIN_DIR_VAR`] names, else built here once (the same command as `scripts/test.sh`).
pub fn static_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os(STATIC_BIN_DIR_VAR).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            for bin in STATIC_BINARIES {
                assert!(
                    dir.join(bin).is_file(),
                    "{STATIC_BIN_DIR_VAR}={} has no {bin}",
                    dir.display()
                );
            }
            return dir;
        }
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("static");
        let host = host_triple();
        let mut build = crate::docker::cargo_command();
        build
            .current_dir(&root)
            .args(["build", "--release", "--locked", "--target", &host])
            .arg("--target-dir")
            .arg(&target)
            .args(["-p", "controller", "-p", "agent", "-p", "tests"]);
        for bin in STATIC_BINARIES {
            build.args(["--bin", bin]);
        }
        let status = build
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the static binaries build");
        target.join(host).join("release")
    })
}

/// The path of one static binary (see [`static_bin_dir`]).
pub fn static_binary(name: &str) -> PathBuf {
    static_bin_dir().join(name)
}

/// The images of one test run: `gha-controller:<tag>`, `gha-agent:<tag>`, `github-sim:<tag>`.
pub struct Images {
    pub tag: String,
}

impl Images {
    pub fn controller(&self) -> String {
        format!("gha-controller:{}", self.tag)
    }
    pub fn agent(&self) -> String {
        format!("gha-agent:{}", self.tag)
    }
    pub fn github_sim(&self) -> String {
        format!("github-sim:{}", self.tag)
    }
}

/// Builds the three images with `deploy/build-images.sh` from the static binaries, tagged with
/// the run's id and labelled for it (removed when `run` is dropped).
pub fn build_images(run: &TestRun) -> Images {
    let out = Command::new(workspace_root().join("deploy/build-images.sh"))
        .env("BIN_DIR", static_bin_dir())
        .env("TAG", &run.id)
        .env("EXTRA_LABEL", run.label_pair())
        .output()
        .expect("deploy/build-images.sh runs");
    assert!(
        out.status.success(),
        "deploy/build-images.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Images {
        tag: run.id.clone(),
    }
}
