//! Enrollment: a one-time join token buys an agent a client certificate, once, before it
//! expires, and only from the controller whose CA the token pins.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use agent::join::{JoinError, JoinOptions, join};
use controller::join_tokens::MintOptions;
use controller::store::{NewJoinToken, SqliteStore, StateStore};
use shared::join_token::JoinToken;
use tests::harness::{AgentTls, TestAgent, TestController, init, vars};

const WAIT: Duration = Duration::from_secs(15);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A controller with the built-in PKI, created on first start under its state directory.
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

async fn mint(c: &TestController, name: Option<&str>) -> String {
    let name = name.map(|n| shared::ids::AgentName::parse(n).unwrap());
    controller::join_tokens::mint(&c.config, MintOptions::new(Duration::from_secs(3600), name))
        .await
        .unwrap()
        .token
}

#[tokio::test]
async fn join_then_run_with_the_issued_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let token = mint(&c, Some("builder-7")).await;
    let agent_dir = dir.path().join("agent");
    let joined = join(&options(&c, &token, &agent_dir, "builder-7"))
        .await
        .unwrap();
    assert_eq!(joined.agent_name, "builder-7");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(agent_dir.join("agent-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the private key is readable by others");

    let agent = TestAgent::start(
        &c.grpc_url(),
        &AgentTls::in_dir(&agent_dir),
        &[("AGENT_ARCH", "arm64")],
    );
    let status = agent.wait_status(WAIT, "connected", |s| s.connected).await;
    assert_eq!(status.agent_name.as_deref(), Some("builder-7"));
    let listed = c.agent("builder-7").await.expect("joined agent listed");
    assert_eq!(listed["arch"], "arm64");

    // A second use of the same token is refused, and writes nothing.
    let again = dir.path().join("again");
    let err = join(&options(&c, &token, &again, "thief"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JoinError::Refused(m) if m.contains("already used")),
        "{err}"
    );
    assert!(!again.join("agent.pem").exists());
}

#[tokio::test]
async fn a_name_fixed_in_the_token_wins_over_the_requested_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let token = mint(&c, Some("assigned-name")).await;
    let joined = join(&options(&c, &token, &dir.path().join("a"), "wanted-name"))
        .await
        .unwrap();
    assert_eq!(joined.agent_name, "assigned-name");
}

#[tokio::test]
async fn expired_and_wrong_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let fingerprint =
        shared::tls::fingerprint(&shared::tls::read_certs(&c.config.tls.ca_file).unwrap()[0]);

    let expired = JoinToken::generate(Some(fingerprint.clone()));
    let now = shared::runner::now_ms() / 1000;
    SqliteStore::open(&c.config.state_dir)
        .unwrap()
        .insert_join_token(
            NewJoinToken {
                id: expired.id.clone(),
                secret: expired.secret.clone(),
                agent_name: None,
                expires_at: now - 1,
            },
            now - 3600,
        )
        .await
        .unwrap();
    let err = join(&options(
        &c,
        &expired.to_text(),
        &dir.path().join("x"),
        "late",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, JoinError::Refused(m) if m.contains("expired")),
        "{err}"
    );

    let mut forged = JoinToken::parse(&mint(&c, None).await).unwrap();
    forged.secret = "0".repeat(32);
    let err = join(&options(
        &c,
        &forged.to_text(),
        &dir.path().join("y"),
        "forger",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, JoinError::Refused(m) if m.contains("unknown")),
        "{err}"
    );

    let err = join(&options(&c, "not-a-token", &dir.path().join("z"), "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, JoinError::Token(_)), "{err}");
}

#[tokio::test]
async fn the_token_is_not_sent_to_a_controller_whose_ca_does_not_match_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let good = mint(&c, Some("legit")).await;
    let mut wrong_pin = JoinToken::parse(&good).unwrap();
    wrong_pin.ca_fingerprint = Some("ab".repeat(32));
    let err = join(&options(
        &c,
        &wrong_pin.to_text(),
        &dir.path().join("a"),
        "x",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, JoinError::PinMismatch { .. }), "{err}");

    // The token was never presented, so it is still good.
    join(&options(&c, &good, &dir.path().join("b"), "legit"))
        .await
        .unwrap();

    // Without any pin there is no way to trust first contact.
    let mut unpinned = JoinToken::parse(&mint(&c, Some("with-ca-file")).await).unwrap();
    unpinned.ca_fingerprint = None;
    let err = join(&options(
        &c,
        &unpinned.to_text(),
        &dir.path().join("c"),
        "x",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, JoinError::NoTrustAnchor), "{err}");
    // ...unless the CA is given on the command line.
    let mut with_ca_file = options(
        &c,
        &unpinned.to_text(),
        &dir.path().join("d"),
        "with-ca-file",
    );
    with_ca_file.ca_file = Some(c.config.tls.ca_file.clone());
    assert_eq!(
        join(&with_ca_file).await.unwrap().agent_name,
        "with-ca-file"
    );
}

#[tokio::test]
async fn join_refuses_to_overwrite_an_identity_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path()).await;
    let agent_dir = dir.path().join("agent");
    join(&options(
        &c,
        &mint(&c, Some("one")).await,
        &agent_dir,
        "one",
    ))
    .await
    .unwrap();
    let err = join(&options(
        &c,
        &mint(&c, Some("two")).await,
        &agent_dir,
        "two",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, JoinError::Exists(_)), "{err}");
    // An older key file that others could read is replaced by a private one.
    let key = agent_dir.join("agent-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut forced = options(&c, &mint(&c, Some("two")).await, &agent_dir, "two");
    forced.force = true;
    assert_eq!(join(&forced).await.unwrap().agent_name, "two");
    assert_eq!(
        mode(&key),
        0o600,
        "join --force left the key readable by others"
    );
    assert_eq!(mode(&agent_dir), 0o700);
}

#[tokio::test]
async fn a_controller_with_its_own_pki_and_no_ca_key_says_it_cannot_enroll() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ca = tests::pki::TestCa::new(&dir.path().join("pki"), "own CA");
    let server = ca.server();
    let c = TestController::start(tests::harness::controller_env(
        &dir.path().join("state"),
        &ca.ca_file(),
        &server,
    ))
    .await;
    let err = join(&options(
        &c,
        &mint(&c, None).await,
        &dir.path().join("a"),
        "x",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, JoinError::Refused(m) if m.contains("no CA key")),
        "{err}"
    );
}
