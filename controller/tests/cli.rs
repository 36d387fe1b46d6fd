//! The `gha-controller` command line: certificates, join tokens and configuration checks.

use std::process::Command;

fn controller() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gha-controller"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn certs_init_then_mint_a_join_token_pinned_to_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = controller()
        .args(["certs", "init", "--dir"])
        .arg(&pki)
        .args(["--san", "ctl.example.com", "--san", "10.1.2.3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for file in [
        "ca.pem",
        "ca-key.pem",
        "controller.pem",
        "controller-key.pem",
    ] {
        assert!(pki.join(file).exists(), "{file} missing");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(pki.join("ca-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the CA key must not be readable by others");
    let ca = shared::tls::read_certs(&pki.join("ca.pem")).unwrap();
    let fingerprint = shared::tls::fingerprint(&ca[0]);
    assert!(stdout.contains(&fingerprint), "{stdout}");

    // Not overwritten by accident.
    let again = controller()
        .args(["certs", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let out = controller()
        .args(["agents", "join-token", "--ttl", "10m", "--name", "edge-1"])
        .env("REPO_OWNER", "octo")
        .env("ALL_REPOS", "true")
        .env("GITHUB_TOKEN", "t")
        .env("WEBHOOK_SECRET", "w")
        .env("STATE_DIR", dir.path().join("state"))
        .env("TLS_DIR", &pki)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let parsed = shared::join_token::JoinToken::parse(token.trim()).unwrap();
    assert_eq!(parsed.ca_fingerprint.as_deref(), Some(fingerprint.as_str()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gha-agent join"));
}

#[test]
fn check_config_lists_every_problem_by_variable() {
    let out = controller()
        .arg("check-config")
        .env("PORT", "http")
        .env("GRPC_PORT", "99999")
        .env("TLS_CERT_FILE", "/x.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in ["PORT", "GRPC_PORT", "TLS_CA_FILE", "TLS_KEY_FILE"] {
        assert!(
            stderr.contains(&format!("{var}:")),
            "{var} not named in: {stderr}"
        );
    }
}

#[test]
fn check_config_masks_secrets() {
    let out = controller()
        .arg("check-config")
        .env("API_TOKEN", "very-secret-api-token-value")
        .env("REPO_OWNER", "octo")
        .env("REPO_NAME", "hello")
        .env("GITHUB_TOKEN", "ghp_very_secret_pat")
        .env("WEBHOOK_SECRET", "very-secret-hook")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("very-secret"), "{stdout}");
    assert!(!stdout.contains("ghp_very"), "{stdout}");
    assert!(stdout.contains("configuration OK"));
}

#[test]
fn check_config_reads_a_toml_file_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gha-scaler.toml");
    std::fs::write(
        &file,
        "PORT = 9001\nWEBHOOK_SECRET = \"from-file\"\n[owners.my-org]\nGITHUB_TOKEN = \"ghp_file\"\nALL_REPOS = true\nMAX_RUNNERS = 12\n",
    )
    .unwrap();
    let out = controller()
        .arg("check-config")
        .env("CONFIG_FILE", &file)
        .env("PORT", "9002")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(table_has(&stdout, "PORT", "9002"), "{stdout}");
    assert!(stdout.contains("owner my-org"), "{stdout}");
    assert!(
        table_has(&stdout, "OWNER_MY_ORG_MAX_RUNNERS", "12"),
        "{stdout}"
    );
    assert!(!stdout.contains("ghp_file"), "{stdout}");
}

/// A `check-config` table row `VARIABLE  value`.
fn table_has(table: &str, variable: &str, value: &str) -> bool {
    table.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(variable) && words.next() == Some(value)
    })
}

/// The seed's single-repository variables.
fn seed(cmd: &mut Command) -> &mut Command {
    cmd.env("GITHUB_TOKEN", "ghp_abc")
        .env("REPO_OWNER", "octo")
        .env("REPO_NAME", "hello")
        .env("WEBHOOK_SECRET", "s3cret")
}

#[test]
fn help_lists_the_environment_variables_with_defaults() {
    let out = controller().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (var, default) in [
        ("PORT", "[8080]"),
        ("GRPC_PORT", "[9443]"),
        ("MAX_RUNNERS", "[5]"),
        ("STATE_DIR", "[/var/lib/gha-scaler]"),
        ("TLS_SANS", "[WEBHOOK_URL's host]"),
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{var} ")) && l.ends_with(default)),
            "{var} {default} missing from:\n{help}"
        );
    }
}

#[test]
fn check_config_prints_a_table_with_warnings() {
    let out = seed(controller().arg("check-config"))
        .env("MIN_RUNNERS", "2")
        .env("WEBHOOK_URL", "https://ci.example.com/webhook")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(table_has(&stdout, "PORT", "8080"), "{stdout}");
    assert!(
        table_has(&stdout, "OWNER_OCTO_WEBHOOK_SECRET", "********"),
        "{stdout}"
    );
    assert!(stdout.contains("octo/hello only"), "{stdout}");
    assert!(
        stdout.contains("TLS_SANS") && stdout.contains("ci.example.com"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cret") && !stdout.contains("ghp_abc"),
        "{stdout}"
    );
    assert!(!stdout.contains("Config {"), "not a Debug dump: {stdout}");
    assert!(stdout.contains("warning: MIN_RUNNERS"), "{stdout}");
}

#[test]
fn check_config_reports_conflicts_with_the_names_written() {
    let out = seed(controller().arg("check-config"))
        .env("ALL_REPOS", "true")
        .env("GRPC_PORT", "8080")
        .env("MAX_RUNNERS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (var, says) in [
        ("REPO_NAME", "ALL_REPOS=true"),
        ("GRPC_PORT", "same as PORT"),
        ("MAX_RUNNERS", "\"lots\""),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{var}:")) && l.contains(says)),
            "{var} / {says} not in: {stderr}"
        );
    }
    assert!(!stderr.contains("OWNER_OCTO_"), "{stderr}");

    let out = controller()
        .arg("check-config")
        .env("GITHUB_TOKEN", "ghp_abc")
        .env("REPO_OWNER", "your_github_username")
        .env("ALL_REPOS", "true")
        .env("WEBHOOK_SECRET", "s3cret-long-enough")
        .env("OWNERS", "acme")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("REPO_OWNER:"), "{stderr}");
    assert!(stderr.contains("OWNERS"), "{stderr}");
    let out = seed(controller().arg("check-config"))
        .env("REPO_OWNER", "your_github_username")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REPO_OWNER:") && stderr.contains("placeholder"),
        "{stderr}"
    );
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// A command for the controller of `dir`, with `owners` (comma-separated) configured.
fn agents_cmd(dir: &std::path::Path, owners: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = controller();
    cmd.arg("agents")
        .args(args)
        .env("GITHUB_TOKEN", "t")
        .env("WEBHOOK_SECRET", "w")
        .env("ALL_REPOS", "true")
        .env("STATE_DIR", dir.join("state"));
    if owners.contains(',') {
        cmd.env("OWNERS", owners);
        for owner in owners.split(',') {
            cmd.env(format!("OWNER_{}_ALL_REPOS", owner.to_uppercase()), "true");
        }
    } else {
        cmd.env("REPO_OWNER", owners);
    }
    cmd.output().unwrap()
}

#[test]
fn the_state_directory_pki_keys_and_database_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let out = agents_cmd(dir.path(), "octo", &["join-token", "--name", "edge-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = dir.path().join("state");
    assert_eq!(mode(&state), 0o700, "STATE_DIR");
    assert_eq!(mode(&state.join("pki")), 0o700, "STATE_DIR/pki");
    assert_eq!(mode(&state.join("pki/ca-key.pem")), 0o600);
    assert_eq!(mode(&state.join("pki/controller-key.pem")), 0o600);
    assert_eq!(mode(&state.join("gha-scaler.db")), 0o600, "the database");
}

#[test]
fn a_token_names_its_agent_and_several_owners_need_to_be_chosen() {
    let dir = tempfile::tempdir().unwrap();
    // Without --name a name is generated and told.
    let out = agents_cmd(dir.path(), "octo", &["join-token"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let told = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(told.contains("for agent agent-"), "{told}");
    assert!(told.contains("every owner"), "{told}");

    let out = agents_cmd(dir.path(), "acme,globex", &["join-token", "--name", "e1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("--owners"), "{err}");
    let out = agents_cmd(
        dir.path(),
        "acme,globex",
        &[
            "join-token",
            "--name",
            "e1",
            "--owners",
            "globex",
            "--max-runners",
            "3",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let told = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        told.contains("owners globex") && told.contains("at most 3 runners"),
        "{told}"
    );
    let out = agents_cmd(
        dir.path(),
        "acme,globex",
        &["join-token", "--name", "e2", "--owners", "initech"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("initech"));
}

#[test]
fn agents_revoke_and_policy_are_recorded_for_the_running_controller() {
    let dir = tempfile::tempdir().unwrap();
    let out = agents_cmd(dir.path(), "octo", &["revoke", "edge-9"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent edge-9 revoked"));
    let out = agents_cmd(dir.path(), "octo", &["revoke", "../bad"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent name"));
    let out = agents_cmd(
        dir.path(),
        "octo",
        &["policy", "byo-1", "--labels", "gpu", "--max-runners", "2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("labels gpu"));
}

#[test]
fn certs_reissue_adds_names_with_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = controller()
        .args(["certs", "init", "--dir"])
        .arg(&pki)
        .args(["--san", "ctl.example.com"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ca_before = std::fs::read(pki.join("ca.pem")).unwrap();
    let out = controller()
        .args(["certs", "reissue", "--san", "10.1.2.3"])
        .env("TLS_DIR", &pki)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ctl.example.com") && stdout.contains("10.1.2.3"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca_before);
    let names = controller::pki::server_names(&pki.join("controller.pem")).unwrap();
    assert!(names.contains(&"10.1.2.3".to_owned()), "{names:?}");
    assert!(names.contains(&"ctl.example.com".to_owned()), "{names:?}");

    // Without a CA key there is nothing to sign with: said, not a panic.
    let out = controller()
        .args(["certs", "reissue", "--dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_log_format_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = controller()
        .arg("serve")
        .env("REPO_OWNER", "octo")
        .env("ALL_REPOS", "true")
        .env("GITHUB_TOKEN", "t")
        .env("WEBHOOK_SECRET", "w")
        .env("STATE_DIR", dir.path())
        .env("LOG_FORMAT", "xml")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LOG_FORMAT=\"xml\" is not json or pretty"),
        "{stderr}"
    );
}
