use super::*;

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

#[tokio::test]
async fn a_delivery_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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

#[tokio::test]
async fn job_states_only_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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
    let stored = store.job(1).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Completed);
    assert_eq!(stored.runner_name.as_deref(), Some("gha-r1"));
    assert!(store.queued_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn queued_jobs_come_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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

#[tokio::test]
async fn concurrent_writes_are_all_durable_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
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
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.queued_jobs().await.unwrap().len(), 500);
}

#[tokio::test]
async fn run_fetches_are_kept_until_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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

#[tokio::test]
async fn runners_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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

#[tokio::test]
async fn a_join_token_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
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

#[tokio::test]
async fn an_expired_join_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    store.insert_join_token(token(100), 0).await.unwrap();
    assert_eq!(
        store
            .take_join_token("abcd", "s3cret", 100, "x")
            .await
            .unwrap(),
        Err(JoinRefusal::Expired)
    );
}
