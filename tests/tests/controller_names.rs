//! A second host must be able to connect (issue 17 §1): with the built-in PKI and only
//! `TLS_SANS` set, an agent reaches the controller by an address other than localhost
//! (`127.0.0.2`, still loopback); without it, the agent is refused by its own TLS check with a
//! reason that names the server name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use agent::join::{JoinOptions, join};
use controller::config::Config;
use controller::join_tokens::MintOptions;
use tests::harness::{AgentTls, TestAgent, init, owner_vars, vars};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A controller serving gRPC on `127.0.0.2` with the built-in PKI and `extra` variables.
async fn controller_on_127_0_0_2(
    state: &std::path::Path,
    extra: &[(&str, &str)],
) -> (Config, controller::Controller, CancellationToken) {
    init();
    let mut env: HashMap<String, String> = owner_vars();
    env.extend(vars(&[
        ("STATE_DIR", state.display().to_string()),
        ("AGENT_HEARTBEAT_INTERVAL", "200ms".into()),
    ]));
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let config = Config::from_env(&env).expect("valid config");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("127.0.0.2 is loopback on Linux");
    let shutdown = CancellationToken::new();
    let running = controller::Controller::start(
        &config,
        controller::Listeners { http, grpc },
        shutdown.clone(),
    )
    .await
    .expect("controller starts");
    (config, running, shutdown)
}

#[tokio::test]
async fn an_agent_reaches_the_controller_by_a_name_from_tls_sans() {
    let dir = tempfile::tempdir().unwrap();
    let (config, running, shutdown) =
        controller_on_127_0_0_2(&dir.path().join("state"), &[("TLS_SANS", "127.0.0.2")]).await;
    let agent_dir = dir.path().join("agent");
    enroll_on(&config, running.grpc_addr, &agent_dir, "remote-1").await;
    let agent = TestAgent::start(
        &format!("https://127.0.0.2:{}", running.grpc_addr.port()),
        &AgentTls::in_dir(&agent_dir),
        &[],
    );
    let status = agent.wait_status(WAIT, "connected", |s| s.connected).await;
    assert_eq!(status.agent_name.as_deref(), Some("remote-1"));
    shutdown.cancel();
}

#[tokio::test]
async fn without_the_name_in_tls_sans_the_agent_says_the_name_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Enrolled while the certificate had the name...
    let (config, running, shutdown) =
        controller_on_127_0_0_2(&state, &[("TLS_SANS", "127.0.0.2")]).await;
    let agent_dir = dir.path().join("agent");
    enroll_on(&config, running.grpc_addr, &agent_dir, "remote-2").await;
    shutdown.cancel();
    running.wait().await.expect("controller stops");
    // ...which a certificate made without TLS_SANS lacks.
    controller::pki::reissue(&state.join("pki"), &[], true).unwrap();
    let (_config, running, shutdown) = controller_on_127_0_0_2(&state, &[]).await;
    let agent = TestAgent::start(
        &format!("https://127.0.0.2:{}", running.grpc_addr.port()),
        &AgentTls::in_dir(&agent_dir),
        &[],
    );
    let status = agent
        .wait_status(WAIT, "refused with a reason", |s| s.last_error.is_some())
        .await;
    let why = status.last_error.unwrap_or_default();
    assert!(!status.connected);
    assert!(
        why.contains("not valid for name") || why.contains("NotValidForName"),
        "{why}"
    );
    shutdown.cancel();
    running.wait().await.expect("controller stops");

    // Adding the name later: the next start reissues the certificate from the same CA, and
    // the enrolled agent connects without being touched.
    let ca_before = std::fs::read(state.join("pki/ca.pem")).unwrap();
    let (_config, running, shutdown) =
        controller_on_127_0_0_2(&state, &[("TLS_SANS", "127.0.0.2")]).await;
    assert_eq!(std::fs::read(state.join("pki/ca.pem")).unwrap(), ca_before);
    let agent = TestAgent::start(
        &format!("https://127.0.0.2:{}", running.grpc_addr.port()),
        &AgentTls::in_dir(&agent_dir),
        &[],
    );
    agent.wait_status(WAIT, "connected", |s| s.connected).await;
    shutdown.cancel();
}

/// Enrolls over `grpc` (on 127.0.0.2), pinning the CA by its fingerprint in the token.
async fn enroll_on(config: &Config, grpc: SocketAddr, dir: &std::path::Path, name: &str) {
    let token = controller::join_tokens::mint(
        config,
        MintOptions::new(
            Duration::from_secs(600),
            Some(shared::ids::AgentName::parse(name).unwrap()),
        ),
    )
    .await
    .unwrap()
    .token;
    join(&JoinOptions {
        controller_url: format!("https://{grpc}"),
        token,
        dir: dir.to_owned(),
        ca_fingerprint: None,
        ca_file: None,
        name: name.to_owned(),
        force: false,
    })
    .await
    .map(|_| ())
    .unwrap_or_else(|e| panic!("join: {e}"));
}
