//! The store's behaviour, the same on both implementations: every test of
//! [`on_both_stores!`] runs once on SQLite and once on a fresh PostgreSQL database
//! ([`testdb`](super::testdb)). What only one of them has (SQLite's old schemas, PostgreSQL's
//! shared database) is tested below the list.

use std::sync::Arc;

use super::testdb::TestDb;
use super::*;

/// Where a test's store lives; [`Backend::open`] may be called again to reopen it.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestDb),
}

impl Backend {
    async fn open(&self) -> Arc<dyn StateStore> {
        match self {
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path()).unwrap()),
            Backend::Postgres(db) => Arc::new(PgStore::connect(&db.url).await.unwrap()),
        }
    }
}

/// One test per store for each named `async fn(Backend)`.
macro_rules! on_both_stores {
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

on_both_stores!(
    a_delivery_is_recorded_once,
    job_states_only_move_forward,
    queued_jobs_come_oldest_first,
    the_oldest_queued_jobs_are_read_up_to_a_limit,
    concurrent_writes_are_all_durable_after_reopening,
    run_fetches_are_kept_until_finished,
    runners_round_trip,
    a_runner_written_from_an_older_read_keeps_the_job_a_webhook_gave_it,
    a_join_token_works_once,
    an_expired_join_token_is_refused,
    another_owner_cannot_complete_or_pre_poison_a_job_of_the_same_id,
    waiting_moves_to_queued_but_nothing_moves_back,
    retention_forgets_old_deliveries_and_finished_jobs_only,
    runner_repos_are_an_owners_recent_repositories_most_recent_first,
    a_jobs_timeline_is_durable_bounded_per_owner_and_pruned_with_the_job,
    a_job_first_heard_of_in_progress_on_a_runner_started_for_another_is_recorded,
);

fn job(id: u64, state: JobState, at: i64) -> JobRecord {
    JobRecord {
        id,
        run_id: 7,
        owner: "acme".into(),
        repo: "app".into(),
        name: format!("job {id}"),
        labels: vec!["self-hosted".into(), "linux".into()],
        state,
        runner_name: None,
        conclusion: None,
        first_seen_ms: at,
        queued_ms: (state == JobState::Queued).then_some(at),
        updated_ms: at,
    }
}

fn delivery(id: &str) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        event: "workflow_job".into(),
        owner: Some("acme".into()),
        received_ms: 1,
    }
}

fn token(expires_at: i64) -> NewJoinToken {
    NewJoinToken {
        id: "abcd".into(),
        secret: "s3cret".into(),
        agent_name: Some("a1".into()),
        expires_at,
    }
}

async fn a_delivery_is_recorded_once(backend: Backend) {
    let store = backend.open().await;
    let effect = WebhookEffect::Job(job(1, JobState::Queued, 10));
    assert_eq!(
        store
            .record_webhook(delivery("d1"), effect.clone())
            .await
            .unwrap(),
        Recorded::New
    );
    assert_eq!(
        store.record_webhook(delivery("d1"), effect).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(store.queued_jobs().await.unwrap().len(), 1);
}

async fn job_states_only_move_forward(backend: Backend) {
    let store = backend.open().await;
    let mut done = job(1, JobState::Completed, 30);
    done.conclusion = Some("success".into());
    done.runner_name = Some("gha-r1".into());
    store
        .record_webhook(delivery("c"), WebhookEffect::Job(done))
        .await
        .unwrap();
    // The queued event arrives late: it changes nothing.
    store
        .record_webhook(
            delivery("q"),
            WebhookEffect::Job(job(1, JobState::Queued, 10)),
        )
        .await
        .unwrap();
    let stored = store.job(&Owner::new("acme"), 1).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Completed);
    assert_eq!(stored.runner_name.as_deref(), Some("gha-r1"));
    assert!(store.queued_jobs().await.unwrap().is_empty());
}

async fn the_oldest_queued_jobs_are_read_up_to_a_limit(backend: Backend) {
    let store = backend.open().await;
    let mut jobs: Vec<JobRecord> = (1..=50)
        .map(|i| job(i, JobState::Queued, 1000 - i as i64))
        .collect();
    jobs.push(job(100, JobState::Waiting, 1));
    jobs.push(job(101, JobState::InProgress, 2));
    store.upsert_jobs(jobs).await.unwrap();
    let ids: Vec<u64> = store
        .oldest_queued_jobs(3)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        ids,
        vec![50, 49, 48],
        "the three queued longest, oldest first"
    );
    let all = store.oldest_queued_jobs(1000).await.unwrap();
    assert_eq!(
        all,
        store.queued_jobs().await.unwrap(),
        "a limit above the queue is the queue"
    );
}

async fn queued_jobs_come_oldest_first(backend: Backend) {
    let store = backend.open().await;
    store
        .upsert_jobs(vec![
            job(3, JobState::Queued, 30),
            job(1, JobState::Queued, 10),
            job(2, JobState::Waiting, 5),
        ])
        .await
        .unwrap();
    let ids: Vec<u64> = store
        .queued_jobs()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, vec![1, 3]);
    // waiting → queued: now demand, keeping its first-seen time.
    store
        .upsert_jobs(vec![job(2, JobState::Queued, 40)])
        .await
        .unwrap();
    let ids: Vec<u64> = store
        .queued_jobs()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, vec![1, 3, 2]);
}

async fn concurrent_writes_are_all_durable_after_reopening(backend: Backend) {
    {
        let store = backend.open().await;
        let mut tasks = Vec::new();
        for i in 0..500u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record_webhook(
                        delivery(&format!("d{i}")),
                        WebhookEffect::Job(job(i, JobState::Queued, i as i64)),
                    )
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Recorded::New);
        }
    }
    let store = backend.open().await;
    assert_eq!(store.queued_jobs().await.unwrap().len(), 500);
}

async fn run_fetches_are_kept_until_finished(backend: Backend) {
    let store = backend.open().await;
    let key = RunKey {
        owner: "acme".into(),
        repo: "app".into(),
        run_id: 99,
    };
    store
        .record_webhook(delivery("r"), WebhookEffect::FetchRun(key.clone()))
        .await
        .unwrap();
    store
        .fail_run_fetch(key.clone(), "503".into())
        .await
        .unwrap();
    assert_eq!(store.run_fetches().await.unwrap(), vec![key.clone()]);
    store.finish_run_fetch(key).await.unwrap();
    assert!(store.run_fetches().await.unwrap().is_empty());
}

async fn runners_round_trip(backend: Backend) {
    let store = backend.open().await;
    let mut r = RunnerRecord {
        id: "r1".into(),
        name: "gha-acme-r1".into(),
        owner: "acme".into(),
        repo: Some("app".into()),
        agent: "host-1".into(),
        arch: shared::arch::Arch::Arm64,
        labels: vec!["self-hosted".into(), "arm64".into()],
        lifecycle: RunnerLifecycle::Starting,
        for_job: Some(5),
        job_id: None,
        github_id: Some(77),
        exit_code: None,
        reason: String::new(),
        created_ms: 1,
        updated_ms: 1,
    };
    store.upsert_runner(r.clone()).await.unwrap();
    assert_eq!(store.active_runners().await.unwrap(), vec![r.clone()]);
    r.lifecycle = RunnerLifecycle::Finished;
    r.exit_code = Some(0);
    store.upsert_runner(r.clone()).await.unwrap();
    assert!(store.active_runners().await.unwrap().is_empty());
    assert_eq!(store.runner_by_name("gha-acme-r1").await.unwrap(), Some(r));
}

/// Found by `bench fleet`: a scheduling pass read a runner (no job yet), an `in_progress`
/// delivery then gave the runner its job, and the pass wrote the runner back with the job it had
/// read (none): the runner looked idle and the job it was started for waited for ever. A job a
/// runner took is never taken back by a write of the runner.
async fn a_runner_written_from_an_older_read_keeps_the_job_a_webhook_gave_it(backend: Backend) {
    let store = backend.open().await;
    let read_by_the_pass = RunnerRecord {
        id: "r1".into(),
        name: "gha-acme-r1".into(),
        owner: "acme".into(),
        repo: Some("app".into()),
        agent: "host-1".into(),
        arch: shared::arch::Arch::Amd64,
        labels: vec!["self-hosted".into()],
        lifecycle: RunnerLifecycle::Starting,
        for_job: Some(9),
        job_id: None,
        github_id: Some(77),
        exit_code: None,
        reason: String::new(),
        created_ms: 1,
        updated_ms: 1,
    };
    store.upsert_runner(read_by_the_pass.clone()).await.unwrap();
    let mut taken = job(9, JobState::InProgress, 2);
    taken.runner_name = Some("gha-acme-r1".into());
    store.upsert_jobs(vec![taken]).await.unwrap();
    assert_eq!(
        store
            .runner_by_name("gha-acme-r1")
            .await
            .unwrap()
            .unwrap()
            .job_id,
        Some(9)
    );
    let mut written_back = read_by_the_pass;
    written_back.lifecycle = RunnerLifecycle::Running;
    written_back.updated_ms = 3;
    store.upsert_runner(written_back).await.unwrap();
    let now = store.runner_by_name("gha-acme-r1").await.unwrap().unwrap();
    assert_eq!(now.lifecycle, RunnerLifecycle::Running);
    assert_eq!(now.job_id, Some(9), "the job stays the runner's");
}

async fn a_join_token_works_once(backend: Backend) {
    let store = backend.open().await;
    store.insert_join_token(token(100), 0).await.unwrap();
    assert_eq!(
        store
            .take_join_token("abcd", "wrong", 1, "x")
            .await
            .unwrap(),
        Err(JoinRefusal::Unknown)
    );
    assert_eq!(
        store
            .take_join_token("nope", "s3cret", 1, "x")
            .await
            .unwrap(),
        Err(JoinRefusal::Unknown)
    );
    assert_eq!(
        store
            .take_join_token("abcd", "s3cret", 1, "x")
            .await
            .unwrap(),
        Ok(Some("a1".into()))
    );
    assert_eq!(
        store
            .take_join_token("abcd", "s3cret", 2, "x")
            .await
            .unwrap(),
        Err(JoinRefusal::AlreadyUsed)
    );
}

async fn an_expired_join_token_is_refused(backend: Backend) {
    let store = backend.open().await;
    store.insert_join_token(token(100), 0).await.unwrap();
    assert_eq!(
        store
            .take_join_token("abcd", "s3cret", 100, "x")
            .await
            .unwrap(),
        Err(JoinRefusal::Expired)
    );
}

fn runner_named(name: &str, owner: &str) -> RunnerRecord {
    RunnerRecord {
        id: format!("id-{name}"),
        name: name.into(),
        owner: owner.into(),
        repo: None,
        agent: "host-1".into(),
        arch: shared::arch::Arch::Amd64,
        labels: vec!["self-hosted".into()],
        lifecycle: RunnerLifecycle::Running,
        for_job: None,
        job_id: None,
        github_id: None,
        exit_code: None,
        reason: String::new(),
        created_ms: 1,
        updated_ms: 1,
    }
}

async fn another_owner_cannot_complete_or_pre_poison_a_job_of_the_same_id(backend: Backend) {
    let store = backend.open().await;
    let acme = Owner::new("acme");
    store
        .upsert_runner(runner_named("gha-acme-1", "acme"))
        .await
        .unwrap();
    // Owner "evil" pre-poisons id 9 as completed, on acme's runner name, before acme queues it.
    let mut poison = job(9, JobState::Completed, 5);
    poison.owner = Owner::new("Evil");
    poison.runner_name = Some("gha-acme-1".into());
    store
        .record_webhook(delivery("p"), WebhookEffect::Job(poison))
        .await
        .unwrap();
    store
        .record_webhook(
            delivery("q"),
            WebhookEffect::Job(job(9, JobState::Queued, 10)),
        )
        .await
        .unwrap();
    let queued = store.queued_jobs().await.unwrap();
    assert_eq!(queued.len(), 1, "acme's job is demand: {queued:?}");
    assert_eq!(queued[0].owner, acme);
    assert_eq!(
        store.job(&acme, 9).await.unwrap().unwrap().state,
        JobState::Queued
    );
    assert_eq!(store.jobs_with_id(9).await.unwrap().len(), 2);
    // Acme's runner was not marked busy by the other owner's delivery.
    assert_eq!(store.active_runners().await.unwrap()[0].job_id, None);
    // Acme's own in_progress delivery does mark it.
    let mut started = job(9, JobState::InProgress, 20);
    started.runner_name = Some("gha-acme-1".into());
    store.upsert_jobs(vec![started]).await.unwrap();
    assert_eq!(store.active_runners().await.unwrap()[0].job_id, Some(9));
}

async fn waiting_moves_to_queued_but_nothing_moves_back(backend: Backend) {
    let store = backend.open().await;
    let acme = Owner::new("acme");
    store
        .upsert_jobs(vec![job(3, JobState::Waiting, 1)])
        .await
        .unwrap();
    assert!(store.queued_jobs().await.unwrap().is_empty());
    store
        .upsert_jobs(vec![job(3, JobState::Queued, 2)])
        .await
        .unwrap();
    let queued = store.job(&acme, 3).await.unwrap().unwrap();
    assert_eq!(
        (queued.state, queued.queued_ms),
        (JobState::Queued, Some(2))
    );
    store
        .upsert_jobs(vec![job(3, JobState::Waiting, 3)])
        .await
        .unwrap();
    assert_eq!(
        store.job(&acme, 3).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn a_database_of_the_previous_schema_is_migrated_with_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Schema version 2 as the previous build left it, with one job of a mixed-case owner.
        let conn = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        for sql in &sqlite::MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, run_id, owner, repo, name, labels, state, state_rank,
                               first_seen_ms, queued_ms, updated_ms)
             VALUES (41, 1, 'Acme', 'app', 'build', '[\"self-hosted\"]', 'queued', 1, 5, 5, 5)",
            [],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let job = store.job(&Owner::new("acme"), 41).await.unwrap().unwrap();
    assert_eq!(job.labels, vec!["self-hosted"]);
    assert_eq!(store.queued_jobs().await.unwrap().len(), 1);
    // The new key is in force: the same id for another owner is another row.
    let mut other = job.clone();
    other.owner = Owner::new("other");
    store.upsert_jobs(vec![other]).await.unwrap();
    assert_eq!(store.jobs_with_id(41).await.unwrap().len(), 2);
}

async fn retention_forgets_old_deliveries_and_finished_jobs_only(backend: Backend) {
    let store = backend.open().await;
    let old = NewDelivery {
        received_ms: 100,
        ..delivery("old")
    };
    let new = NewDelivery {
        received_ms: 10_000,
        ..delivery("new")
    };
    store
        .record_webhook(
            old.clone(),
            WebhookEffect::Job(job(1, JobState::Completed, 100)),
        )
        .await
        .unwrap();
    store
        .record_webhook(
            new.clone(),
            WebhookEffect::Job(job(2, JobState::Queued, 100)),
        )
        .await
        .unwrap();
    store
        .upsert_jobs(vec![job(3, JobState::Completed, 20_000)])
        .await
        .unwrap();
    let acme = Owner::new("acme");
    assert!(store.job_deliveries_since(&acme, 50).await.unwrap());
    assert!(!store.job_deliveries_since(&acme, 10_001).await.unwrap());
    assert!(
        !store
            .job_deliveries_since(&Owner::new("x"), 0)
            .await
            .unwrap()
    );

    let at = |name: &str, lifecycle: RunnerLifecycle, updated_ms: i64| RunnerRecord {
        lifecycle,
        updated_ms,
        ..runner_named(name, "acme")
    };
    for r in [
        at("old-finished", RunnerLifecycle::Finished, 100),
        at("new-finished", RunnerLifecycle::Finished, 20_000),
        at("old-running", RunnerLifecycle::Running, 100),
    ] {
        store.upsert_runner(r).await.unwrap();
    }

    let pruned = store.prune(5_000).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            deliveries: 1,
            jobs: 1,
            runners: 1,
        }
    );
    assert!(
        store
            .runner_by_name("old-finished")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .runner_by_name("new-finished")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.active_runners().await.unwrap(),
        vec![at("old-running", RunnerLifecycle::Running, 100)],
        "an active runner is never forgotten, however old"
    );
    assert!(
        store.job(&acme, 1).await.unwrap().is_none(),
        "old and finished"
    );
    assert!(
        store.job(&acme, 2).await.unwrap().is_some(),
        "queued jobs stay"
    );
    assert!(
        store.job(&acme, 3).await.unwrap().is_some(),
        "recently finished"
    );
    // The old delivery id is forgotten; the recent one still deduplicates.
    assert_eq!(
        store
            .record_webhook(new, WebhookEffect::Ignore)
            .await
            .unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(
        store
            .record_webhook(old, WebhookEffect::Ignore)
            .await
            .unwrap(),
        Recorded::New
    );
}

async fn runner_repos_are_an_owners_recent_repositories_most_recent_first(backend: Backend) {
    let store = backend.open().await;
    let at = |name: &str, owner: &str, repo: Option<&str>, ms: i64| {
        let mut r = runner_named(name, owner);
        r.repo = repo.map(str::to_owned);
        r.updated_ms = ms;
        r
    };
    for r in [
        at("gha-octocat-1", "octocat", Some("old"), 10),
        at("gha-octocat-2", "octocat", Some("App"), 50),
        at("gha-octocat-3", "Octocat", Some("app"), 60),
        at("gha-octocat-4", "octocat", Some("lib"), 40),
        at("gha-octocat-5", "octocat", None, 70),
        at("gha-mallory-1", "mallory", Some("evil"), 80),
    ] {
        store.upsert_runner(r).await.unwrap();
    }
    let owner = Owner::new("OctoCat");
    let repos = store.runner_repos(&owner, 20, 10).await.unwrap();
    assert_eq!(
        repos.len(),
        2,
        "{repos:?}: since 20, one per repository, this owner only"
    );
    assert!(repos[0].eq_ignore_ascii_case("app"));
    assert_eq!(repos[1], "lib");
    assert_eq!(store.runner_repos(&owner, 0, 1).await.unwrap().len(), 1);
}

/// A PostgreSQL database of its own for a test of what only PostgreSQL has; `None`: skipped.
async fn pg() -> Option<TestDb> {
    TestDb::create().await
}

/// `sslmode=verify-full` with the server's CA: every connection of the store is encrypted and
/// it works. A CA that did not sign the server's certificate, or a host name the certificate
/// does not carry, is refused before any query (the password is never sent).
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(db) = pg().await else { return };
    let Some(ca) = TestDb::server_ca() else {
        return;
    };
    let tls = format!("sslmode=verify-full&sslrootcert={}", ca.display());
    let url = db.url_with(&tls, None).unwrap();
    let store = PgStore::connect(&url).await.unwrap();
    store
        .upsert_jobs(vec![job(1, JobState::Queued, 1)])
        .await
        .unwrap();
    assert_eq!(store.queued_jobs().await.unwrap().len(), 1);
    let encrypted = db.controller_connections_encrypted().await;
    assert!(
        !encrypted.is_empty() && encrypted.iter().all(|&e| e),
        "the store's connections, encrypted or not: {encrypted:?}"
    );
    drop(store);

    // A CA of its own, which did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["other-ca".into()]).unwrap();
    std::fs::write(&other_ca, cert.cert.pem()).unwrap();
    let wrong_ca = db
        .url_with(
            &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
            None,
        )
        .unwrap();
    // The right CA, but a name the server's certificate does not carry (same address).
    let wrong_name = db.url_with(&tls, Some("db.invalid")).unwrap();
    for (case, url) in [("unknown CA", wrong_ca), ("wrong host name", wrong_name)] {
        match PgStore::connect(&url).await {
            Ok(_) => panic!("{case}: the store connected"),
            Err(e) => {
                let chain = crate::http::error::chain(&e).to_lowercase();
                assert!(chain.contains("certificate"), "{case}: {chain}");
            }
        }
    }
}

#[tokio::test]
async fn two_replicas_starting_together_migrate_one_database_once() {
    let Some(db) = pg().await else { return };
    let (a, b) = tokio::join!(PgStore::connect(&db.url), PgStore::connect(&db.url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.upsert_jobs(vec![job(1, JobState::Queued, 1)])
        .await
        .unwrap();
    assert_eq!(b.queued_jobs().await.unwrap().len(), 1, "one shared schema");
    // A third start finds the schema current and changes nothing.
    let c = PgStore::connect(&db.url).await.unwrap();
    assert_eq!(c.queued_jobs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_postgres_database_of_a_newer_build_is_refused() {
    let Some(db) = pg().await else { return };
    drop(PgStore::connect(&db.url).await.unwrap());
    db.execute("INSERT INTO gha_schema_migrations (version, applied_ms) VALUES (999, 0)")
        .await;
    match PgStore::connect(&db.url).await {
        Err(StoreError::TooNew { found: 999, .. }) => {}
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[tokio::test]
async fn replicas_sharing_a_database_record_a_delivery_once_between_them() {
    let Some(db) = pg().await else { return };
    let a = PgStore::connect(&db.url).await.unwrap();
    let b = PgStore::connect(&db.url).await.unwrap();
    // GitHub (or a load balancer's retry) hands the same deliveries to both replicas at once.
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        for store in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                store
                    .record_webhook(
                        delivery(&format!("d{i}")),
                        WebhookEffect::Job(job(i, JobState::Queued, i as i64)),
                    )
                    .await
                    .unwrap()
            }));
        }
    }
    let mut new = 0;
    for t in tasks {
        if t.await.unwrap() == Recorded::New {
            new += 1;
        }
    }
    assert_eq!(new, 200, "each delivery is new on exactly one replica");
    assert_eq!(a.queued_jobs().await.unwrap().len(), 200);
}

#[tokio::test]
async fn a_join_token_is_spent_once_across_replicas() {
    let Some(db) = pg().await else { return };
    let a = PgStore::connect(&db.url).await.unwrap();
    let b = PgStore::connect(&db.url).await.unwrap();
    a.insert_join_token(token(100), 0).await.unwrap();
    let (x, y) = tokio::join!(
        a.take_join_token("abcd", "s3cret", 1, "a"),
        b.take_join_token("abcd", "s3cret", 1, "b")
    );
    let mut results = [x.unwrap(), y.unwrap()];
    results.sort_by_key(|r| r.is_err());
    assert_eq!(
        results,
        [Ok(Some("a1".into())), Err(JoinRefusal::AlreadyUsed)]
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_an_error_at_start() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = crate::config::database::DatabaseUrl::parse(&format!(
        "postgres://gha@127.0.0.1:{port}/gha?connect_timeout=2"
    ))
    .unwrap();
    let err = PgStore::connect(&url).await.err().expect("no server");
    assert!(
        matches!(err, StoreError::Postgres(_) | StoreError::Unreachable(_)),
        "{err}"
    );
}

/// The SQLite heads (trigger-kept class sizes, partial index) say what grouping the whole
/// queue says, through inserts, state changes, another owner's jobs, retention and a reopen.
#[tokio::test]
async fn queue_heads_match_the_grouped_queue_through_changes_and_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut jobs = Vec::new();
    for id in 1..=40u64 {
        let mut j = job(id, JobState::Queued, 1_000 - id as i64);
        j.repo = format!("repo-{}", id % 3);
        if id % 4 == 0 {
            j.labels.push("gpu".into());
        }
        if id % 5 == 0 {
            j.owner = "globex".into();
        }
        jobs.push(j);
    }
    store.upsert_jobs(jobs).await.unwrap();
    // Some start, some finish, one waits first and is queued later.
    let mut moved = Vec::new();
    for id in [1u64, 2, 3, 8, 13] {
        let mut j = job(id, JobState::InProgress, 2_000);
        j.repo = format!("repo-{}", id % 3);
        if id % 4 == 0 {
            j.labels.push("gpu".into());
        }
        if id % 5 == 0 {
            j.owner = "globex".into();
        }
        moved.push(j);
    }
    let mut done = job(2, JobState::Completed, 3_000);
    done.repo = "repo-2".into();
    moved.push(done);
    moved.push(job(100, JobState::Waiting, 5));
    store.upsert_jobs(moved).await.unwrap();
    store
        .upsert_jobs(vec![job(100, JobState::Queued, 6)])
        .await
        .unwrap();
    let limits = HeadLimits {
        per_owner: std::collections::HashMap::from([(Owner::new("acme"), 3)]),
        otherwise: 1,
    };
    let expected = queue::heads_of(store.queued_jobs().await.unwrap(), &limits);
    assert_eq!(expected.iter().map(|h| h.queued).sum::<u64>(), 36);
    assert_eq!(
        by_class(store.queue_heads(limits.clone()).await.unwrap()),
        expected
    );
    let states = store.job_states().await.unwrap();
    assert!(states.contains(&(JobState::Queued, 36)), "{states:?}");
    assert!(states.contains(&(JobState::InProgress, 4)), "{states:?}");
    assert!(states.contains(&(JobState::Completed, 1)), "{states:?}");

    // Retention removes the completed job: its class is gone from the counts too.
    store.prune(i64::MAX).await.unwrap();
    let states = store.job_states().await.unwrap();
    assert!(
        !states.iter().any(|(s, _)| *s == JobState::Completed),
        "{states:?}"
    );
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    let expected = queue::heads_of(store.queued_jobs().await.unwrap(), &limits);
    assert_eq!(by_class(store.queue_heads(limits).await.unwrap()), expected);
}

/// Heads in the order [`queue::heads_of`] gives them (the store's order of classes is its own).
fn by_class(mut heads: Vec<QueueHead>) -> Vec<QueueHead> {
    heads.sort_by_key(QueueHead::key);
    heads
}

fn entry(owner: &str, job: u64, at_ms: i64) -> TimelineEntry {
    TimelineEntry {
        owner: Owner::new(owner),
        job,
        at_ms,
        kind: "runner".into(),
        message: format!("step {at_ms}"),
        runner: Some("r-1".into()),
        agent: Some("host-1".into()),
        delivery: None,
    }
}

async fn a_jobs_timeline_is_durable_bounded_per_owner_and_pruned_with_the_job(backend: Backend) {
    let store = backend.open().await;
    let acme = Owner::new("acme");
    // The webhook's entry is written with the job, carrying its delivery id.
    store
        .record_webhook(
            delivery("d-queued"),
            WebhookEffect::Job(job(1, JobState::Queued, 1)),
        )
        .await
        .unwrap();
    store
        .append_timeline(vec![entry("acme", 1, 2), entry("bob", 1, 3)])
        .await
        .unwrap();
    drop(store);
    let store = backend.open().await;
    let timeline = store.job_timeline(&acme, 1).await.unwrap();
    assert_eq!(timeline.len(), 2, "{timeline:?}");
    assert_eq!(timeline[0].kind, "webhook");
    assert_eq!(timeline[0].delivery.as_deref(), Some("d-queued"));
    assert_eq!(timeline[0].message, "webhook workflow_job: job queued");
    assert_eq!(timeline[1].message, "step 2");
    assert_eq!(timeline[1].agent.as_deref(), Some("host-1"));
    // Another owner's job of the same id has its own timeline.
    let bob = store.job_timeline(&Owner::new("bob"), 1).await.unwrap();
    assert_eq!(bob.len(), 1);
    // Bounded: the newest entries stay.
    let many: Vec<_> = (10..10 + timeline::MAX_PER_JOB + 5)
        .map(|at| entry("acme", 1, at))
        .collect();
    store.append_timeline(many).await.unwrap();
    let timeline = store.job_timeline(&acme, 1).await.unwrap();
    assert_eq!(timeline.len() as i64, timeline::MAX_PER_JOB);
    assert_eq!(
        timeline.last().unwrap().at_ms,
        10 + timeline::MAX_PER_JOB + 4
    );
    assert_eq!(timeline[0].at_ms, 15);
    // Retention forgets a finished job and its timeline; a queued job's stays.
    store
        .upsert_jobs(vec![job(1, JobState::Completed, 100)])
        .await
        .unwrap();
    store
        .record_webhook(
            delivery("d-2"),
            WebhookEffect::Job(job(2, JobState::Queued, 100)),
        )
        .await
        .unwrap();
    store.prune(5_000).await.unwrap();
    assert!(store.job_timeline(&acme, 1).await.unwrap().is_empty());
    assert!(
        store
            .job_timeline(&Owner::new("bob"), 1)
            .await
            .unwrap()
            .is_empty(),
        "no job of bob's is stored, so nothing keeps its entries"
    );
    assert_eq!(store.job_timeline(&acme, 2).await.unwrap().len(), 1);
}

/// A job whose `queued` delivery was lost, taken by a runner started for another job (GitHub
/// gives any matching runner any job): its `in_progress` and `completed` deliveries are the
/// first the controller hears of it, and must be recorded.
async fn a_job_first_heard_of_in_progress_on_a_runner_started_for_another_is_recorded(
    backend: Backend,
) {
    let store = backend.open().await;
    let mut runner = runner_named("gha-acme-1", "acme");
    runner.for_job = Some(5);
    store.upsert_runner(runner).await.unwrap();
    store
        .record_webhook(
            delivery("q5"),
            WebhookEffect::Job(job(5, JobState::Queued, 1)),
        )
        .await
        .unwrap();
    let mut started = job(9, JobState::InProgress, 20);
    started.runner_name = Some("gha-acme-1".into());
    store
        .record_webhook(delivery("i9"), WebhookEffect::Job(started))
        .await
        .unwrap();
    let mut done = job(9, JobState::Completed, 30);
    done.runner_name = Some("gha-acme-1".into());
    done.conclusion = Some("success".into());
    store
        .record_webhook(delivery("c9"), WebhookEffect::Job(done))
        .await
        .unwrap();
    let stored = store.job(&Owner::new("acme"), 9).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Completed);
}
