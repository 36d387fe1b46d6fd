//! The systemd units in `deploy/systemd/` (issue 13 §4): each passes `systemd-analyze verify`
//! and keeps the hardening systemd offers (`systemd-analyze security --offline` exposure at
//! most 2.0 of 10, "OK"), so an edit that drops a protection fails here.
//!
//! The binaries are not installed on a test machine, so `ExecStart` is pointed at `/bin/true` in
//! a copy: verify checks that the program exists.

use std::path::Path;
use std::process::Command;

fn check(unit: &str, binary: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(unit);
    let text = std::fs::read_to_string(&source).expect("the unit file");
    assert!(
        text.contains(&format!("ExecStart=/usr/local/bin/{binary}\n")),
        "{unit} starts {binary}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join(unit);
    std::fs::write(
        &copy,
        text.replace(&format!("/usr/local/bin/{binary}"), "/bin/true"),
    )
    .expect("copy the unit");

    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze is installed (Debian's systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {unit}: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // --threshold is on a 0–100 scale: 20 is an exposure of 2.0 ("OK").
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze security runs");
    assert!(
        security.status.success(),
        "{unit} is exposed beyond 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

#[test]
fn the_controller_unit_verifies_and_is_hardened() {
    check("gha-controller.service", "gha-controller");
}

#[test]
fn the_agent_unit_verifies_and_is_hardened() {
    check("gha-agent.service", "gha-agent");
}
