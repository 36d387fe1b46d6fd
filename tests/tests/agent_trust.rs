//! Agents are trusted only as far as the operator says: a join token is bound to one name, an
//! enrolled name is taken over only with `--replace`, a revoked agent is refused (also after a
//! restart), certificates are short and renewed by the agent itself, and what an agent may
//! serve (capacity, labels) is the token's policy, not the agent's claim. Real controller, real
//! agents, real mutual TLS.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::join::{JoinError, JoinOptions, join};
use controller::agent_policy::PolicyRequest;
use controller::join_tokens::{MintError, MintOptions, Minted};
use shared::ids::AgentName;
use tests::github_sim::GithubSim;
use tests::harness::{
    AgentTls, TestAgent, TestController, controller_env, get_json, hook_to, init, simulated_github,
    vars, wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(3600);

async fn controller(dir: &Path) -> TestController {
    init();
    TestController::start(vars(&[
        ("STATE_DIR", dir.join("state").display().to_string()),
        ("AGENT_HEARTBEAT_INTERVAL", "200ms".into()),
    ]))
    .await
}

fn options(c: &TestController, token: &str, dir: &Path, name: &str) -> JoinOptions {
    JoinOptions {
        controller_url: c.grpc_url(),
        token: token.to_owned(),
        dir: dir.to_owned(),
        ca_fingerprint: None,
        ca_file: None,
        name: name.to_owned(),
        force: false,
    }
}

fn name(n: &str) -> AgentName {
    AgentName::parse(n).unwrap()
}

async fn mint(c: &TestController, options: MintOptions) -> Result<Minted, MintError> {
    controller::join_tokens::mint(&c.config, options).await
}

async fn mint_for(c: &TestController, agent: &str) -> String {
    mint(c, MintOptions::new(TTL, Some(name(agent))))
        .await
        .unwrap()
        .token
}

fn fingerprint(dir: &Path) -> String {
    let certs = shared::tls::read_certs(&dir.join("agent.pem")).unwrap();
    shared::tls::fingerprint(&certs[0])
}

fn validity(dir: &Path) -> shared::tls::Validity {
    let certs = shared::tls::read_certs(&dir.join("agent.pem")).unwrap();
    shared::tls::Validity::of(&certs[0]).unwrap()
}

fn last_error(s: &agent::AgentStatus) -> String {
    s.last_error.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_token_is_bound_to_one_name_and_an_enrolled_name_needs_replace() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;

    // Without --name the controller generates the name; the joiner cannot pick one.
    let minted = mint(&c, MintOptions::new(TTL, None)).await.unwrap();
    let joined = join(&options(&c, &minted.token, &dir.path().join("g"), "edge-1"))
        .await
        .unwrap();
    assert_eq!(joined.agent_name, minted.agent_name.as_str());
    assert_ne!(joined.agent_name, "edge-1");

    let early = mint_for(&c, "edge-1").await;
    let first_dir = dir.path().join("first");
    join(&options(&c, &mint_for(&c, "edge-1").await, &first_dir, "x"))
        .await
        .unwrap();
    let first = TestAgent::start(&c.grpc_url(), &AgentTls::in_dir(&first_dir), &[]);
    first.wait_status(WAIT, "connected", |s| s.connected).await;

    // The name is taken: no new token for it, and one minted before is refused unspent.
    let err = mint(&c, MintOptions::new(TTL, Some(name("edge-1"))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already enrolled"), "{err}");
    let thief = dir.path().join("thief");
    let err = join(&options(&c, &early, &thief, "x")).await.unwrap_err();
    assert!(
        matches!(&err, JoinError::Refused(m) if m.contains("already enrolled")),
        "{err}"
    );
    assert!(!thief.join("agent.pem").exists());
    let listed = c.agent("edge-1").await.unwrap();
    assert_eq!(listed["connected"], true, "the real agent stays: {listed}");

    // With --replace a new agent gets the name and the old certificate is refused.
    let mut replace = MintOptions::new(TTL, Some(name("edge-1")));
    replace.replace = true;
    let second_dir = dir.path().join("second");
    join(&options(
        &c,
        &mint(&c, replace).await.unwrap().token,
        &second_dir,
        "x",
    ))
    .await
    .unwrap();
    let second = TestAgent::start(&c.grpc_url(), &AgentTls::in_dir(&second_dir), &[]);
    second.wait_status(WAIT, "connected", |s| s.connected).await;
    first
        .wait_status(WAIT, "refused as superseded", |s| {
            !s.connected && last_error(s).contains("superseded")
        })
        .await;
    assert!(second.status.borrow().connected);
}

/// A raw mutual-TLS connection with an agent's files: `Ok` when the controller serves it (its
/// HTTP/2 server speaks first), `Err` with the reason when the handshake is refused.
async fn raw_mtls(c: &TestController, tls: &AgentTls) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in shared::tls::read_certs(&tls.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            shared::tls::read_certs(&tls.cert).unwrap(),
            shared::tls::read_key(&tls.key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(c.grpc_addr).await.unwrap();
    let server = rustls_pki_types::ServerName::IpAddress(c.grpc_addr.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // With TLS 1.3 the server's verdict on our certificate comes after our Finished: read it.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed without a word".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

#[tokio::test]
async fn a_revoked_certificate_does_not_complete_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = controller(dir.path()).await;
    let agent_dir = dir.path().join("agent");
    join(&options(&c, &mint_for(&c, "gone").await, &agent_dir, "x"))
        .await
        .unwrap();
    let tls = AgentTls::in_dir(&agent_dir);
    assert_eq!(
        raw_mtls(&c, &tls).await,
        Ok(()),
        "an enrolled agent is served"
    );
    assert!(
        controller::join_tokens::revoke(&c.config, &name("gone"))
            .await
            .unwrap()
    );
    // The CLI revokes through the database; the endpoint re-reads the list every 2 s.
    wait_until(
        WAIT,
        "the handshake refuses the revoked certificate",
        || async {
            raw_mtls(&c, &tls)
                .await
                .is_err_and(|e| e.contains("CertificateRevoked"))
        },
    )
    .await;
    // Also right after a restart, before any session could check it.
    c.restart().await;
    let refused = raw_mtls(&c, &tls).await.unwrap_err();
    assert!(refused.contains("CertificateRevoked"), "{refused}");
}

#[tokio::test]
async fn a_revoked_agent_is_refused_at_once_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = controller(dir.path()).await;
    let agent_dir = dir.path().join("agent");
    join(&options(&c, &mint_for(&c, "doomed").await, &agent_dir, "x"))
        .await
        .unwrap();
    let agent = TestAgent::start(&c.grpc_url(), &AgentTls::in_dir(&agent_dir), &[]);
    agent.wait_status(WAIT, "connected", |s| s.connected).await;

    assert!(
        controller::join_tokens::revoke(&c.config, &name("doomed"))
            .await
            .unwrap()
    );
    agent
        .wait_status(WAIT, "refused as revoked", |s| {
            !s.connected && last_error(s).contains("revoked")
        })
        .await;
    let listed = c.agent("doomed").await.unwrap();
    assert_eq!(listed["connected"], false);
    assert_eq!(listed["disconnect_reason"], "revoked by the operator");

    c.restart().await;
    let attempts = agent.status.borrow().attempts;
    let after = agent
        .wait_status(WAIT, "retried against the restarted controller", |s| {
            s.attempts >= attempts + 2
        })
        .await;
    assert!(
        !after.connected && last_error(&after).contains("revoked"),
        "{after:?}"
    );
    assert!(
        c.agent("doomed").await.is_none(),
        "a revoked agent never registers"
    );

    // The name comes back only through a token minted with --replace, for a new certificate.
    let err = mint(&c, MintOptions::new(TTL, Some(name("doomed"))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let mut again = MintOptions::new(TTL, Some(name("doomed")));
    again.replace = true;
    let fresh = dir.path().join("fresh");
    join(&options(
        &c,
        &mint(&c, again).await.unwrap().token,
        &fresh,
        "x",
    ))
    .await
    .unwrap();
    let back = TestAgent::start(&c.grpc_url(), &AgentTls::in_dir(&fresh), &[]);
    back.wait_status(WAIT, "connected", |s| s.connected).await;
    let attempts = agent.status.borrow().attempts;
    let old = agent
        .wait_status(WAIT, "the revoked certificate retried", |s| {
            s.attempts >= attempts + 2
        })
        .await;
    assert!(
        !old.connected,
        "the revoked certificate stays refused: {old:?}"
    );
}

#[tokio::test]
async fn the_agent_renews_its_short_certificate_itself_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let mut short = MintOptions::new(TTL, Some(name("renewer")));
    short.policy.cert_validity = Some(Duration::from_secs(12));
    let agent_dir = dir.path().join("agent");
    join(&options(
        &c,
        &mint(&c, short).await.unwrap().token,
        &agent_dir,
        "x",
    ))
    .await
    .unwrap();
    let original = fingerprint(&agent_dir);
    let original_validity = validity(&agent_dir);
    assert!(
        original_validity.not_after - original_validity.not_before <= 12 + 2,
        "the token's certificate life is used"
    );
    let key = agent_dir.join("agent-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();

    let mut agent = TestAgent::start(&c.grpc_url(), &AgentTls::in_dir(&agent_dir), &[]);
    agent.wait_status(WAIT, "connected", |s| s.connected).await;
    wait_until(WAIT, "the certificate renewed on disk", || {
        let dir = agent_dir.clone();
        let original = original.clone();
        async move { fingerprint(&dir) != original }
    })
    .await;
    let renewed = validity(&agent_dir);
    assert!(renewed.not_after > original_validity.not_after);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "renewal enforces the key's mode"
    );

    // Past the first certificate's expiry, a restarted agent connects with what it renewed.
    agent.stop().await;
    wait_until(WAIT, "the first certificate expired", || async move {
        shared::runner::now_ms() / 1000 > original_validity.not_after
    })
    .await;
    let again = TestAgent::start(&c.grpc_url(), &AgentTls::in_dir(&agent_dir), &[]);
    let status = again.wait_status(WAIT, "connected", |s| s.connected).await;
    assert_eq!(status.agent_name.as_deref(), Some("renewer"));
}

#[tokio::test]
async fn an_agent_gets_what_its_token_allows_not_what_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let mut limited = MintOptions::new(TTL, Some(name("greedy")));
    limited.policy.max_runners = Some(2);
    limited.policy.labels = vec!["gpu".into()];
    let agent_dir = dir.path().join("agent");
    join(&options(
        &c,
        &mint(&c, limited).await.unwrap().token,
        &agent_dir,
        "x",
    ))
    .await
    .unwrap();
    let agent = TestAgent::start(
        &c.grpc_url(),
        &AgentTls::in_dir(&agent_dir),
        &[("MAX_RUNNERS", "100000"), ("LABELS", "gpu,everything")],
    );
    agent.wait_status(WAIT, "connected", |s| s.connected).await;
    let listed = c.agent("greedy").await.unwrap();
    assert_eq!(listed["capacity"], 2, "{listed}");
    assert_eq!(listed["capacity_by_arch"]["amd64"], 2, "{listed}");
    assert_eq!(listed["labels"], serde_json::json!(["gpu"]), "{listed}");
    assert_eq!(listed["labels_refused"], serde_json::json!(["everything"]));
    assert_eq!(listed["reported"]["capacity"], 100000);
    assert_eq!(
        listed["all_owners"], true,
        "one owner: every owner by default"
    );
    assert_eq!(listed["policy"]["max_runners"], 2);
}

/// A controller for two owners of the simulator, `acme` and `globex`, with the test CA.
async fn two_owners(dir: &Path) -> (Arc<GithubSim>, TestCa, TestController) {
    init();
    let ca = TestCa::new(&dir.join("pki"), "test CA");
    let server = ca.server();
    let (sim, mut env) = simulated_github().await;
    sim.add_org("globex", &["alice"], &[]);
    sim.add_repo("globex", "app", true);
    let token = env.remove("GITHUB_TOKEN").unwrap();
    env.remove("REPO_OWNER");
    env.remove("ALL_REPOS");
    env.extend(vars(&[
        ("OWNERS", "acme,globex".into()),
        ("OWNER_ACME_GITHUB_TOKEN", token.clone()),
        ("OWNER_ACME_ALL_REPOS", "true".into()),
        ("OWNER_GLOBEX_GITHUB_TOKEN", token),
        ("OWNER_GLOBEX_ALL_REPOS", "true".into()),
    ]));
    env.extend(controller_env(&dir.join("state"), &ca.ca_file(), &server));
    let controller = TestController::start(env).await;
    hook_to(&sim, "acme", &controller);
    hook_to(&sim, "globex", &controller);
    (sim, ca, controller)
}

fn agent_of(ca: &TestCa, c: &TestController, name: &str, extra: &[(&str, &str)]) -> TestAgent {
    let cert = ca.client(name, &[]);
    TestAgent::start(
        &c.grpc_url(),
        &AgentTls {
            ca: ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        },
        extra,
    )
}

#[tokio::test]
async fn an_owner_the_agent_may_not_serve_never_gets_a_runner_there() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, ca, c) = two_owners(dir.path()).await;
    let only_acme = PolicyRequest {
        owners: vec!["acme".into()],
        max_runners: Some(50),
        ..Default::default()
    };
    controller::join_tokens::set_policy(&c.config, &name("acme-host"), &only_acme)
        .await
        .unwrap();
    let acme_host = agent_of(&ca, &c, "acme-host", &[("MAX_RUNNERS", "100000")]);
    acme_host
        .wait_status(WAIT, "connected", |s| s.connected)
        .await;
    let listed = c.agent("acme-host").await.unwrap();
    assert_eq!(listed["owners"], serde_json::json!(["acme"]), "{listed}");
    assert_eq!(listed["capacity"], 50, "{listed}");

    let (_, globex_job) = sim.queue_job("globex", "app", &["self-hosted"]);
    let (_, acme_job) = sim.queue_job("acme", "app", &["self-hosted"]);
    let reason_of = |job: u64| {
        let c = &c;
        async move { get_json(c, &format!("/api/v1/jobs/{job}")).await.1["waiting"]["reason"].clone() }
    };
    wait_until(WAIT, "globex's job says why it waits", || async {
        reason_of(globex_job).await == "no_agent_for_owner"
    })
    .await;
    wait_until(WAIT, "acme's job gets a runner on acme-host", || async {
        !acme_host.runtime.start_calls().is_empty()
    })
    .await;
    let owners_started = |rt: &agent::runtime::memory::MemoryRuntime| {
        rt.start_calls()
            .iter()
            .filter_map(|id| rt.spec(id))
            .map(|spec| spec.owner)
            .collect::<Vec<_>>()
    };
    assert!(
        owners_started(&acme_host.runtime)
            .iter()
            .all(|o| o == "acme"),
        "{:?}",
        owners_started(&acme_host.runtime)
    );
    let _ = acme_job;

    // An agent that may serve every owner takes globex's job; acme-host never gets one.
    let shared_host = agent_of(&ca, &c, "shared-host", &[]);
    wait_until(
        WAIT,
        "globex's job gets a runner on shared-host",
        || async { owners_started(&shared_host.runtime).contains(&"globex".to_string()) },
    )
    .await;
    assert!(
        owners_started(&acme_host.runtime)
            .iter()
            .all(|o| o == "acme"),
        "a JIT config of another owner reached acme-host"
    );
}
