//! The directory's rules, the same on both backends: every test of [`on_both_directories!`]
//! runs once on SQLite and once on a fresh PostgreSQL database
//! ([`testdb`](crate::store::testdb)). What only PostgreSQL has (two replicas' pools on one
//! database) is tested below the list.

use super::*;
use crate::store::testdb::TestDb;

/// Where a test's directory lives; [`Backend::open`] may be called again to reopen it (a
/// restart, or another replica or CLI process on the same database).
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestDb),
}

impl Backend {
    async fn open(&self) -> AgentDirectory {
        match self {
            Backend::Sqlite(dir) => AgentDirectory::sqlite(dir.path()).unwrap(),
            Backend::Postgres(db) => {
                AgentDirectory::postgres(PgStore::connect(&db.url).await.unwrap())
            }
        }
    }
}

/// One test per backend for each named `async fn(Backend)`.
macro_rules! on_both_directories {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite(tempfile::tempdir().unwrap())).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = super::TestDb::create().await {
                        super::$name(super::Backend::Postgres(db)).await
                    }
                }
            )*
        }
    };
}

on_both_directories!(
    a_token_enrolls_its_name_once_with_its_policy,
    a_taken_name_needs_a_token_minted_with_replace,
    a_refused_or_failed_enrollment_spends_nothing,
    of_two_tokens_for_one_free_name_only_the_first_spent_enrolls,
    two_enrollments_of_one_name_at_once_enroll_it_once,
    a_renewal_keeps_the_previous_certificate_until_the_next,
    a_revoked_name_is_refused_until_enrolled_again_with_replace,
    drains_and_policies_outlive_reopening,
);

fn name(n: &str) -> AgentName {
    AgentName::parse(n).unwrap()
}

fn policy(max_runners: u32) -> AgentPolicy {
    AgentPolicy {
        owners: None,
        labels: Default::default(),
        max_runners,
        cert_validity_secs: 86_400,
    }
}

/// A token `id` for `agent`, valid until `expires_at`.
fn token(id: &str, agent: &str) -> NewJoinToken {
    NewJoinToken {
        id: id.into(),
        secret: format!("{id}-secret-0123456789abcdef"),
        agent_name: Some(agent.into()),
        expires_at: 1_000,
    }
}

fn issued(sha: &str) -> Issued {
    Issued {
        certificate_pem: format!("PEM {sha}"),
        cert_sha256: sha.into(),
        expires_at: 5_000,
    }
}

/// Spends token `id` at time 10, signing a certificate of fingerprint `sha`.
async fn enroll(
    d: &AgentDirectory,
    id: &str,
    sha: &str,
) -> Result<(AgentName, AgentPolicy), EnrollRefusal> {
    let sha = sha.to_owned();
    let secret = format!("{id}-secret-0123456789abcdef");
    let signed = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = signed.clone();
    let outcome = d
        .enroll(id.into(), secret, 10, "test".into(), move |_, policy| {
            *seen.lock().unwrap() = Some(policy.clone());
            Ok::<_, std::convert::Infallible>(issued(&sha))
        })
        .await
        .expect("the directory answers")
        .expect("signing cannot fail here");
    let policy = signed.lock().unwrap().take();
    outcome.map(|(name, _)| (name, policy.expect("signed with the token's policy")))
}

async fn mint(
    d: &AgentDirectory,
    id: &str,
    agent: &str,
    replace: bool,
    max_runners: u32,
) -> Result<(), EnrollRefusal> {
    d.mint(
        token(id, agent),
        name(agent),
        replace,
        policy(max_runners),
        1,
    )
    .await
    .expect("the directory answers")
}

async fn renew(d: &AgentDirectory, agent: &str, from: &str, to: &str) -> Result<Issued, Refusal> {
    let to = to.to_owned();
    d.renew(name(agent), from.into(), move |_| {
        Ok::<_, std::convert::Infallible>(issued(&to))
    })
    .await
    .expect("the directory answers")
    .expect("signing cannot fail here")
}

async fn admitted(d: &AgentDirectory, agent: &str, cert: &str) -> Result<Option<u32>, Refusal> {
    d.admit(&name(agent), cert)
        .await
        .expect("the directory answers")
        .map(|p| p.map(|p| p.max_runners))
}

async fn a_token_enrolls_its_name_once_with_its_policy(backend: Backend) {
    let d = backend.open().await;
    mint(&d, "t1", "builder", false, 3).await.unwrap();
    let (enrolled, signed) = enroll(&d, "t1", "c1").await.unwrap();
    assert_eq!(enrolled, name("builder"));
    assert_eq!(
        signed,
        policy(3),
        "signed with the policy minted into the token"
    );
    let record = d.get(&name("builder")).await.unwrap().unwrap();
    assert_eq!(record.cert_sha256.as_deref(), Some("c1"));
    assert_eq!(record.policy, Some(policy(3)));
    assert_eq!(admitted(&d, "builder", "c1").await, Ok(Some(3)));
    assert_eq!(
        enroll(&d, "t1", "c2").await,
        Err(EnrollRefusal::Token(JoinRefusal::AlreadyUsed))
    );
    // An unknown name (a certificate from the operator's own CA) is let in with no policy.
    assert_eq!(admitted(&d, "stranger", "x").await, Ok(None));
}

async fn a_taken_name_needs_a_token_minted_with_replace(backend: Backend) {
    let d = backend.open().await;
    mint(&d, "t1", "builder", false, 3).await.unwrap();
    enroll(&d, "t1", "c1").await.unwrap();
    assert_eq!(
        mint(&d, "t2", "builder", false, 3).await,
        Err(EnrollRefusal::NameTaken(name("builder")))
    );
    mint(&d, "t3", "builder", true, 4).await.unwrap();
    enroll(&d, "t3", "c2").await.unwrap();
    assert_eq!(
        admitted(&d, "builder", "c1").await,
        Err(Refusal::Superseded(name("builder"))),
        "the replaced agent's certificate is refused"
    );
    assert_eq!(admitted(&d, "builder", "c2").await, Ok(Some(4)));
}

async fn a_refused_or_failed_enrollment_spends_nothing(backend: Backend) {
    let d = backend.open().await;
    mint(&d, "t1", "builder", false, 3).await.unwrap();
    let wrong = d
        .enroll(
            "t1".into(),
            "not-the-secret".into(),
            10,
            "test".into(),
            |_, _| Ok::<_, std::convert::Infallible>(issued("c0")),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        wrong,
        Err(EnrollRefusal::Token(JoinRefusal::Unknown))
    ));
    let failed = d
        .enroll(
            "t1".into(),
            "t1-secret-0123456789abcdef".into(),
            10,
            "test".into(),
            |_, _| Err("the CA cannot sign"),
        )
        .await
        .unwrap();
    assert_eq!(failed.err(), Some("the CA cannot sign"));
    assert_eq!(d.get(&name("builder")).await.unwrap(), None);
    enroll(&d, "t1", "c1")
        .await
        .expect("the token was not spent by the failures");
    // An expired token is refused, and a token minted before this build's policies too.
    mint(&d, "t2", "late", false, 3).await.unwrap();
    let late = d
        .enroll(
            "t2".into(),
            "t2-secret-0123456789abcdef".into(),
            1_000,
            "test".into(),
            |_, _| Ok::<_, std::convert::Infallible>(issued("c9")),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        late,
        Err(EnrollRefusal::Token(JoinRefusal::Expired))
    ));
}

async fn of_two_tokens_for_one_free_name_only_the_first_spent_enrolls(backend: Backend) {
    let d = backend.open().await;
    // Both minted while the name is free.
    mint(&d, "t1", "builder", false, 3).await.unwrap();
    mint(&d, "t2", "builder", false, 3).await.unwrap();
    enroll(&d, "t1", "c1").await.unwrap();
    assert_eq!(
        enroll(&d, "t2", "c2").await,
        Err(EnrollRefusal::NameTaken(name("builder")))
    );
    assert_eq!(admitted(&d, "builder", "c1").await, Ok(Some(3)));
}

async fn two_enrollments_of_one_name_at_once_enroll_it_once(backend: Backend) {
    // Two directories on one database: two replicas (or a replica and the CLI).
    let (one, other) = (backend.open().await, backend.open().await);
    for round in 0..10 {
        let agent = format!("racer-{round}");
        let (t1, t2) = (format!("a{round}"), format!("b{round}"));
        mint(&one, &t1, &agent, false, 3).await.unwrap();
        mint(&other, &t2, &agent, false, 3).await.unwrap();
        let (first, second) = tokio::join!(enroll(&one, &t1, "c1"), enroll(&other, &t2, "c2"));
        let won = [&first, &second].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "exactly one enrolls: {first:?} {second:?}");
        let winner = if first.is_ok() { "c1" } else { "c2" };
        let record = one.get(&name(&agent)).await.unwrap().unwrap();
        assert_eq!(record.cert_sha256.as_deref(), Some(winner));
    }
}

async fn a_renewal_keeps_the_previous_certificate_until_the_next(backend: Backend) {
    let d = backend.open().await;
    mint(&d, "t1", "builder", false, 3).await.unwrap();
    enroll(&d, "t1", "c1").await.unwrap();
    assert_eq!(
        renew(&d, "builder", "c1", "c2").await.unwrap().cert_sha256,
        "c2"
    );
    assert_eq!(admitted(&d, "builder", "c1").await, Ok(Some(3)));
    assert_eq!(admitted(&d, "builder", "c2").await, Ok(Some(3)));
    renew(&d, "builder", "c2", "c3").await.unwrap();
    assert_eq!(
        admitted(&d, "builder", "c1").await,
        Err(Refusal::Superseded(name("builder")))
    );
    assert_eq!(
        renew(&d, "builder", "c1", "c4").await.err(),
        Some(Refusal::Superseded(name("builder")))
    );
    // A name with a policy but no certificate from us (the operator's CA) cannot renew.
    d.set_policy(&name("own-ca"), Some(policy(2)))
        .await
        .unwrap();
    assert_eq!(
        renew(&d, "own-ca", "x", "y").await.err(),
        Some(Refusal::NotEnrolled(name("own-ca")))
    );
    assert_eq!(
        renew(&d, "nobody", "x", "y").await.err(),
        Some(Refusal::NotEnrolled(name("nobody")))
    );
}

async fn a_revoked_name_is_refused_until_enrolled_again_with_replace(backend: Backend) {
    let d = backend.open().await;
    mint(&d, "t1", "builder", false, 3).await.unwrap();
    enroll(&d, "t1", "c1").await.unwrap();
    assert!(
        d.revoke(&name("builder"), 20).await.unwrap(),
        "was enrolled"
    );
    assert!(
        !d.revoke(&name("own-ca"), 20).await.unwrap(),
        "a name we never enrolled is revoked too"
    );
    let again = backend.open().await;
    let revoked = again.revoked_names().await.unwrap();
    let expected: HashSet<String> = ["builder", "own-ca"].map(String::from).into();
    assert_eq!(revoked, expected);
    assert_eq!(
        admitted(&again, "builder", "c1").await,
        Err(Refusal::Revoked(name("builder")))
    );
    assert_eq!(
        admitted(&again, "own-ca", "x").await,
        Err(Refusal::Revoked(name("own-ca")))
    );
    assert_eq!(
        renew(&again, "builder", "c1", "c2").await.err(),
        Some(Refusal::Revoked(name("builder")))
    );
    assert_eq!(
        mint(&again, "t2", "builder", false, 3).await,
        Err(EnrollRefusal::NameTaken(name("builder")))
    );
    mint(&again, "t3", "builder", true, 3).await.unwrap();
    enroll(&again, "t3", "c5").await.unwrap();
    assert_eq!(admitted(&again, "builder", "c5").await, Ok(Some(3)));
    assert!(!again.revoked_names().await.unwrap().contains("builder"));
}

async fn drains_and_policies_outlive_reopening(backend: Backend) {
    let d = backend.open().await;
    let a = name("builder");
    assert!(!d.is_drained(&a).await.unwrap());
    d.set_drained(&a, true, 100).await.unwrap();
    d.set_drained(&a, true, 200).await.unwrap();
    d.set_policy(&name("own-ca"), Some(policy(7)))
        .await
        .unwrap();
    let reopened = backend.open().await;
    assert!(reopened.is_drained(&a).await.unwrap());
    assert_eq!(admitted(&reopened, "own-ca", "any").await, Ok(Some(7)));
    reopened.set_drained(&a, false, 300).await.unwrap();
    reopened.set_policy(&name("own-ca"), None).await.unwrap();
    assert!(!d.is_drained(&a).await.unwrap());
    assert_eq!(admitted(&d, "own-ca", "any").await, Ok(None));
}

/// Two replicas' pools on one database: what one mints, the other spends; what one revokes,
/// the other's revocation list has at its next read.
#[tokio::test]
async fn replicas_on_one_postgres_share_the_directory() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let backend = Backend::Postgres(db);
    let (a, b) = (backend.open().await, backend.open().await);
    mint(&a, "t1", "builder", false, 3).await.unwrap();
    enroll(&b, "t1", "c1").await.unwrap();
    assert_eq!(admitted(&a, "builder", "c1").await, Ok(Some(3)));
    assert!(b.revoke(&name("builder"), 20).await.unwrap());
    assert!(a.revoked_names().await.unwrap().contains("builder"));
    b.set_drained(&name("builder"), true, 1).await.unwrap();
    assert!(a.is_drained(&name("builder")).await.unwrap());
}

/// A database whose directory tables were made by a newer build is refused, like the store's.
#[tokio::test]
async fn a_database_of_a_newer_build_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    drop(PgStore::connect(&db.url).await.unwrap());
    let known = crate::store::postgres::MIGRATIONS.len();
    db.execute(&format!(
        "INSERT INTO gha_schema_migrations (version, applied_ms) VALUES ({}, 0)",
        known + 1
    ))
    .await;
    match PgStore::connect(&db.url).await {
        Err(StoreError::TooNew {
            found, known: k, ..
        }) if found == known + 1 && k == known => {}
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("a database of a newer build was accepted"),
    }
}

#[test]
fn only_the_last_issued_certificate_of_a_name_is_admitted() {
    let a = name("a");
    assert_eq!(admit(&a, None, "x"), Ok(None));
    let mut rec = AgentRecord {
        policy: None,
        cert_sha256: Some("new".into()),
        previous_cert_sha256: Some("old".into()),
        revoked_at: None,
    };
    assert!(admit(&a, Some(&rec), "new").is_ok());
    assert!(admit(&a, Some(&rec), "old").is_ok());
    assert_eq!(
        admit(&a, Some(&rec), "older"),
        Err(Refusal::Superseded(a.clone()))
    );
    rec.revoked_at = Some(1);
    assert_eq!(admit(&a, Some(&rec), "new"), Err(Refusal::Revoked(a)));
}

#[test]
fn a_token_and_a_renewal_are_decided_from_the_record() {
    let a = name("a");
    let ours = AgentRecord {
        policy: Some(policy(3)),
        cert_sha256: Some("c1".into()),
        previous_cert_sha256: None,
        revoked_at: None,
    };
    let revoked_own_ca = AgentRecord {
        policy: None,
        cert_sha256: None,
        previous_cert_sha256: None,
        revoked_at: Some(1),
    };
    let policy_only = AgentRecord {
        policy: Some(policy(3)),
        cert_sha256: None,
        previous_cert_sha256: None,
        revoked_at: None,
    };
    assert_eq!(may_take(&a, false, None), Ok(()));
    assert_eq!(may_take(&a, false, Some(&policy_only)), Ok(()));
    assert_eq!(
        may_take(&a, false, Some(&ours)),
        Err(EnrollRefusal::NameTaken(a.clone()))
    );
    assert_eq!(
        may_take(&a, false, Some(&revoked_own_ca)),
        Err(EnrollRefusal::NameTaken(a.clone()))
    );
    assert_eq!(may_take(&a, true, Some(&ours)), Ok(()));
    assert_eq!(renewal(&a, Some(&ours), "c1"), Ok(policy(3)));
    assert_eq!(
        renewal(&a, Some(&policy_only), "c1"),
        Err(Refusal::NotEnrolled(a.clone()))
    );
    assert_eq!(
        renewal(&a, None, "c1"),
        Err(Refusal::NotEnrolled(a.clone()))
    );
    assert!(matches!(binding(None), Err(EnrollRefusal::NoPolicy)));
    let bad = TokenBinding {
        agent_name: "Not A Name".into(),
        replace: false,
        policy: policy_json(&policy(3)),
    };
    assert!(matches!(binding(Some(bad)), Err(EnrollRefusal::NoPolicy)));
}
