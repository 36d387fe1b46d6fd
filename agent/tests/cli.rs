//! `gha-agent` as an operator runs it: errors that name what to fix.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gha-agent"))
}

#[test]
fn drain_without_a_running_agent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let out = agent()
        .args(["drain", "--socket"])
        .arg(&socket)
        .env_remove("CONTROL_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the agent's control socket")
            && stderr.contains("is the agent running?"),
        "{stderr}"
    );
}

#[test]
fn a_bad_docker_setting_names_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .current_dir(dir.path())
        .env_clear()
        .env("CONTROLLER_URL", "https://127.0.0.1:1")
        .env("TLS_DIR", dir.path())
        .env("AGENT_ARCH", "amd64")
        .env("RUNTIME", "docker")
        .env("DOCKER_HOST", "ssh://builder")
        .env("RUNNER_MEMORY", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DOCKER_HOST"), "{stderr}");
    assert!(stderr.contains("RUNNER_MEMORY"), "{stderr}");
}
