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

/// `gha-agent` with no inherited variables (no TLS_DIR or CONTROL_SOCKET of the test's shell).
fn clean() -> Command {
    let mut cmd = agent();
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn help_lists_the_environment_variables_with_defaults() {
    let out = clean().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (var, default) in [
        ("CONTROLLER_URL", "[-]"),
        ("CONTROL_SOCKET", "[TLS_DIR/control.sock]"),
        ("MAX_RUNNERS", "[5]"),
        ("RUNTIME", "[docker]"),
        ("INSTALLATION_ID", "[the CA's fingerprint]"),
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{var} ")) && l.ends_with(default)),
            "{var} {default} missing from:\n{help}"
        );
    }
}

#[test]
fn drain_and_undrain_need_to_know_which_agent() {
    for command in ["drain", "undrain"] {
        let out = clean().arg(command).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--dir") && err.contains("--socket"), "{err}");
    }
    // With a directory, the socket in it is the one tried (and named when nobody listens).
    let dir = tempfile::tempdir().unwrap();
    let out = clean()
        .args(["undrain", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&dir.path().join("control.sock").display().to_string()),
        "{err}"
    );
}
