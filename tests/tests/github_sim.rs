//! The simulator's own behaviour: GitHub-compatible signatures, the event sequence of a job, the
//! runner protocol, and delivery faults.

use std::time::Duration;

use shared::github::{
    Credentials, GithubApi, GithubClient, JitConfigRequest, RepoRef, Scope, Secret,
};
use tests::github_sim::{DeliveryFault, GithubSim, Received, WebhookRecorder, signature_256};
use url::Url;

const WAIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/src/github_sim/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

#[test]
fn signatures_match_githubs_test_vector_and_every_fixture() {
    let known: serde_json::Value = serde_json::from_slice(&fixture("signatures.json")).unwrap();
    let secret = known["secret"].as_str().unwrap();
    assert_eq!(
        signature_256(
            secret,
            known["docs_test_vector"]["payload"]
                .as_str()
                .unwrap()
                .as_bytes()
        ),
        known["docs_test_vector"]["X-Hub-Signature-256"]
            .as_str()
            .unwrap()
    );
    assert_eq!(
        signature_256("It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let files = known["files"].as_object().unwrap();
    assert!(files.len() >= 18);
    for (name, expected) in files {
        let body = fixture(name);
        assert_eq!(
            body.len() as u64,
            expected["bytes"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            signature_256(secret, &body),
            expected["X-Hub-Signature-256"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            tests::github_sim::signature_1(secret, &body),
            expected["X-Hub-Signature"].as_str().unwrap(),
            "{name}"
        );
    }
}

/// Checks a delivery the way a receiver must: the HMAC of the exact body bytes.
fn assert_signed(r: &Received, secret: &str) {
    assert_eq!(
        r.header("x-hub-signature-256").unwrap(),
        signature_256(secret, &r.body)
    );
    assert!(
        r.header("user-agent")
            .unwrap()
            .starts_with("GitHub-Hookshot/")
    );
    assert_eq!(r.header("x-github-delivery").unwrap().len(), 36);
    assert!(r.header("x-github-hook-id").unwrap().parse::<u64>().is_ok());
    assert!(r.header("x-github-hook-installation-target-id").is_some());
}

async fn setup() -> (GithubSim, WebhookRecorder, GithubClient) {
    shared::tls::install_crypto_provider();
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", true);
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    let recorder = WebhookRecorder::start().await.unwrap();
    let gh = GithubClient::builder(&Url::parse(sim.api_url()).unwrap())
        .owner("acme", Credentials::Token(Secret::new(token)))
        .build()
        .unwrap();
    (sim, recorder, gh)
}

#[tokio::test]
async fn a_job_queued_claimed_and_completed_produces_githubs_event_sequence() {
    let (sim, recorder, gh) = setup().await;
    let org_hook = sim.add_hook(
        "acme",
        None,
        recorder.url(),
        Some("org-secret"),
        "json",
        &["workflow_job", "workflow_run"],
    );
    let (run_id, job_id) = sim.queue_job("acme", "app", &["self-hosted", "gpu"]);

    // The controller's side: a JIT runner for the job's labels, over the REST API.
    let scope = Scope::Org("acme".into());
    let jit = gh
        .generate_jit_config(
            &scope,
            &JitConfigRequest {
                name: "eph-1".into(),
                runner_group_id: 1,
                labels: vec!["self-hosted".into(), "gpu".into()],
                work_folder: None,
            },
        )
        .await
        .unwrap();
    // The fake runner process speaks the simulator's runner protocol over HTTP.
    let http = reqwest::Client::new();
    let base = format!("http://{}", sim.addr());
    let reg: serde_json::Value = http
        .post(format!("{base}/_sim/runners/register"))
        .json(&serde_json::json!({"jitconfig": jit.encoded_jit_config.expose()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, credential) = (
        reg["id"].as_u64().unwrap(),
        reg["credential"].as_str().unwrap().to_owned(),
    );
    assert_eq!(gh.get_runner(&scope, id).await.unwrap().status, "online");
    let claimed: serde_json::Value = http
        .post(format!("{base}/_sim/runners/{id}/claim"))
        .bearer_auth(&credential)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claimed["id"].as_u64(), Some(job_id));
    assert!(gh.get_runner(&scope, id).await.unwrap().busy);
    let done = http
        .post(format!("{base}/_sim/runners/{id}/complete"))
        .bearer_auth(&credential)
        .json(&serde_json::json!({"conclusion": "success"}))
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success());
    // Ephemeral: removed after its one job.
    assert!(gh.get_runner(&scope, id).await.unwrap_err().is_not_found());

    let got = recorder.wait_for(6, WAIT).await;
    let kinds: Vec<String> = got.iter().map(Received::kind).collect();
    assert_eq!(
        kinds,
        [
            "workflow_run.requested",
            "workflow_job.queued",
            "workflow_run.in_progress",
            "workflow_job.in_progress",
            "workflow_job.completed",
            "workflow_run.completed"
        ]
    );
    for r in &got {
        assert_signed(r, "org-secret");
        assert_eq!(r.header("x-github-hook-id").unwrap(), org_hook.to_string());
        assert_eq!(
            r.header("x-github-hook-installation-target-type"),
            Some("organization")
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["repository"]["full_name"], "acme/app");
        assert_eq!(body["organization"]["login"], "acme");
    }
    let guids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_owned())
        .collect();
    assert_eq!(guids.len(), 6, "a fresh GUID per delivery");

    let run_requested = got[0].json();
    assert_eq!(
        run_requested["workflow_run"]["status"], "queued",
        "requested carries status queued"
    );
    assert_eq!(run_requested["workflow_run"]["id"].as_u64(), Some(run_id));
    let queued = got[1].json();
    assert_eq!(
        queued["workflow_job"]["labels"],
        serde_json::json!(["self-hosted", "gpu"])
    );
    assert_eq!(
        queued["workflow_job"]["runner_name"],
        serde_json::Value::Null,
        "null while queued"
    );
    assert_eq!(queued["workflow_job"]["run_id"].as_u64(), Some(run_id));
    let in_progress = got[3].json();
    assert_eq!(in_progress["workflow_job"]["runner_name"], "eph-1");
    assert_eq!(in_progress["workflow_job"]["runner_id"].as_u64(), Some(id));
    let completed = got[4].json();
    assert_eq!(completed["workflow_job"]["conclusion"], "success");
    assert_eq!(completed["workflow_job"]["runner_name"], "eph-1");
    assert_eq!(got[5].json()["workflow_run"]["conclusion"], "success");
}

#[tokio::test]
async fn any_matching_runner_takes_the_job_and_labels_must_be_a_subset() {
    let (sim, _recorder, gh) = setup().await;
    let scope = Scope::Repo(RepoRef::new("acme", "app"));
    let (_, job_a) = sim.queue_job("acme", "app", &["self-hosted", "gpu"]);
    let token = gh.registration_token(&scope).await.unwrap();
    let cpu = sim
        .register_runner(token.token.expose(), "cpu", &["cpu"], false)
        .unwrap();
    assert_eq!(sim.claim_job(cpu.id).unwrap(), None, "labels not a subset");
    // A runner made "for" another job still takes the first job it matches.
    let gpu2 = sim
        .register_runner(token.token.expose(), "gpu-2", &["GPU", "big"], true)
        .unwrap();
    let (_, _job_b) = sim.queue_job("acme", "app", &["gpu"]);
    assert_eq!(sim.claim_job(gpu2.id).unwrap(), Some(job_a));
    sim.complete_job(gpu2.id, "failure").unwrap();
    assert!(
        sim.runners().iter().all(|r| r.id != gpu2.id),
        "ephemeral runner removed"
    );
    assert_eq!(sim.job(job_a).unwrap().conclusion, Some("failure"));
    assert!(sim.register_runner("bogus", "x", &[], false).is_err());
}

#[tokio::test]
async fn form_hooks_get_a_signed_payload_field() {
    let (sim, recorder, _gh) = setup().await;
    sim.add_hook(
        "acme",
        Some("app"),
        recorder.url(),
        Some("repo-secret"),
        "form",
        &["*"],
    );
    sim.queue_job("acme", "app", &["self-hosted"]);
    let got = recorder.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(
            r.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert!(r.body.starts_with(b"payload="));
        assert_signed(r, "repo-secret");
        assert_eq!(
            r.header("x-github-hook-installation-target-type"),
            Some("repository")
        );
    }
    assert_eq!(got[1].json()["workflow_job"]["status"], "queued");
}

#[tokio::test]
async fn dropped_deliveries_are_recorded_as_failed_and_can_be_redelivered() {
    let (sim, recorder, gh) = setup().await;
    let hook = sim.add_hook(
        "acme",
        Some("app"),
        recorder.url(),
        Some("s"),
        "json",
        &["workflow_job"],
    );
    sim.fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
    sim.queue_job("acme", "app", &["self-hosted"]);
    assert!(sim.deliveries_settled(WAIT).await);
    assert!(recorder.received().is_empty());

    let scope = Scope::Repo(RepoRef::new("acme", "app"));
    let deliveries = gh.list_hook_deliveries(&scope, hook).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert!(!deliveries[0].succeeded());
    assert_eq!(deliveries[0].action.as_deref(), Some("queued"));
    gh.redeliver(&scope, hook, deliveries[0].id).await.unwrap();
    let got = recorder.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("x-github-delivery"),
        Some(deliveries[0].guid.as_str())
    );
    assert_eq!(got[0].kind(), "workflow_job.queued");
}

#[tokio::test]
async fn duplicated_reordered_and_delayed_deliveries() {
    let (sim, recorder, _gh) = setup().await;
    sim.add_hook(
        "acme",
        None,
        recorder.url(),
        Some("s"),
        "json",
        &["workflow_job", "workflow_run"],
    );

    sim.fault_delivery("workflow_job", Some("queued"), DeliveryFault::Duplicate);
    sim.queue_job("acme", "app", &["self-hosted"]);
    let got = recorder.wait_for(3, WAIT).await;
    assert_eq!(
        got.iter().map(Received::kind).collect::<Vec<_>>(),
        [
            "workflow_run.requested",
            "workflow_job.queued",
            "workflow_job.queued"
        ]
    );
    assert_eq!(
        got[1].header("x-github-delivery"),
        got[2].header("x-github-delivery"),
        "a duplicate has the same GUID"
    );

    sim.fault_delivery("workflow_run", Some("requested"), DeliveryFault::Reorder);
    sim.queue_job("acme", "app", &["self-hosted"]);
    let got = recorder.wait_for(5, WAIT).await;
    assert_eq!(
        got[3..].iter().map(Received::kind).collect::<Vec<_>>(),
        ["workflow_job.queued", "workflow_run.requested"]
    );

    sim.fault_delivery(
        "workflow_run",
        Some("requested"),
        DeliveryFault::Delay(Duration::from_millis(500)),
    );
    sim.queue_job("acme", "app", &["self-hosted"]);
    let got = recorder.wait_for(7, WAIT).await;
    assert_eq!(
        got[5..].iter().map(Received::kind).collect::<Vec<_>>(),
        ["workflow_job.queued", "workflow_run.requested"]
    );

    // A receiver answering 500: recorded with its status, not retried.
    recorder.respond_with(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    sim.queue_job("acme", "app", &["self-hosted"]);
    assert!(sim.deliveries_settled(WAIT).await);
    let last = sim.deliveries().pop().unwrap();
    assert_eq!(
        (last.status_code, last.status.as_str()),
        (500, "Invalid HTTP Response: 500")
    );
    assert_eq!(recorder.received().len(), 9);
}

#[tokio::test]
async fn deliveries_are_cursor_paginated() {
    let (sim, recorder, gh) = setup().await;
    let hook = sim.add_hook(
        "acme",
        Some("app"),
        recorder.url(),
        None,
        "json",
        &["workflow_job", "workflow_run"],
    );
    for _ in 0..60 {
        sim.queue_job("acme", "app", &["self-hosted"]);
    }
    assert!(sim.deliveries_settled(WAIT).await);
    let scope = Scope::Repo(RepoRef::new("acme", "app"));
    let all = gh.list_hook_deliveries(&scope, hook).await.unwrap();
    assert_eq!(all.len(), 120);
    let ids: std::collections::HashSet<u64> = all.iter().map(|d| d.id).collect();
    assert_eq!(
        ids.len(),
        120,
        "no delivery listed twice across cursor pages"
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}
