//! The simulator refuses what GitHub refuses (rules and sources: `tests/src/github_sim` module
//! doc), seen through the real client: user accounts have no organization endpoints, public-only
//! `/users/{u}/repos`, runner-group checks on JIT, exact JIT labels, approvals, group-targeted
//! jobs, and the GHES profile.

use std::time::Duration;

use shared::github::{
    Credentials, GithubApi, GithubClient, GithubError, JitConfigRequest, RepoRef, RepoSource,
    Scope, Secret,
};
use tests::github_sim::{GithubSim, WebhookRecorder};
use url::Url;

const WAIT: Duration = Duration::from_secs(10);

fn client(sim: &GithubSim, owner: &str, token: String) -> GithubClient {
    shared::tls::install_crypto_provider();
    GithubClient::builder(&Url::parse(sim.api_url()).unwrap())
        .owner(owner, Credentials::Token(Secret::new(token)))
        .build()
        .unwrap()
}

fn jit(name: &str, group: u64, labels: &[&str]) -> JitConfigRequest {
    JitConfigRequest {
        name: name.into(),
        runner_group_id: group,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        work_folder: None,
    }
}

#[tokio::test]
async fn a_user_account_has_no_org_endpoints_and_only_public_repos_under_users() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_user("carol");
    sim.add_repo("carol", "secret", true);
    sim.add_repo("carol", "site", false);
    let gh = client(&sim, "carol", sim.classic_token("carol", &["repo"]));

    let org_jit = gh
        .generate_jit_config(&Scope::Org("carol".into()), &jit("r1", 1, &["self-hosted"]))
        .await;
    assert!(
        matches!(org_jit, Err(GithubError::NotFound { .. })),
        "{org_jit:?}"
    );
    assert!(
        gh.list_runner_groups("carol")
            .await
            .unwrap_err()
            .is_not_found()
    );

    let names = |repos: Vec<shared::github::Repository>| {
        let mut n: Vec<String> = repos.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    };
    // Even the owner's own token sees only public repositories under /users/{u}/repos.
    let public = gh
        .list_repositories("carol", RepoSource::User)
        .await
        .unwrap();
    assert_eq!(names(public), ["site"]);
    let owned = gh
        .list_repositories("carol", RepoSource::AuthenticatedUserOwned)
        .await
        .unwrap();
    assert_eq!(names(owned), ["secret", "site"]);
}

#[tokio::test]
async fn affiliation_owner_leaves_out_other_peoples_repositories() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_user("carol");
    sim.add_org("acme", &[], &["carol"]);
    sim.add_repo("carol", "mine", true);
    sim.add_repo("acme", "theirs", true);
    let gh = client(&sim, "carol", sim.classic_token("carol", &["repo"]));
    let all = gh
        .list_repositories("carol", RepoSource::AuthenticatedUser)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let owned = gh
        .list_repositories("carol", RepoSource::AuthenticatedUserOwned)
        .await
        .unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].name, "mine");
}

#[tokio::test]
async fn jit_refuses_unknown_and_hosted_groups_and_adds_no_labels() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", true);
    let builders = sim.add_runner_group("acme", "builders", false, false);
    let hosted = sim.add_runner_group("acme", "larger", true, true);
    let gh = client(
        &sim,
        "acme",
        sim.classic_token("alice", &["repo", "admin:org"]),
    );
    let org = Scope::Org("acme".into());

    let unknown = gh.generate_jit_config(&org, &jit("r1", 999, &["x"])).await;
    assert!(
        matches!(unknown, Err(GithubError::NotFound { .. })),
        "{unknown:?}"
    );
    let hosted_err = gh
        .generate_jit_config(&org, &jit("r2", hosted, &["x"]))
        .await;
    assert!(
        matches!(hosted_err, Err(GithubError::Forbidden { .. })),
        "{hosted_err:?}"
    );
    let repo = Scope::Repo(RepoRef::new("acme", "app"));
    let repo_group = gh
        .generate_jit_config(&repo, &jit("r3", builders, &["x"]))
        .await;
    assert!(
        repo_group.unwrap_err().is_not_found(),
        "repositories have only group 1"
    );

    let made = gh
        .generate_jit_config(&org, &jit("r4", builders, &["self-hosted", "gpu"]))
        .await
        .unwrap();
    let labels: Vec<&str> = made.runner.label_names().collect();
    assert_eq!(labels, ["self-hosted", "gpu"], "no implied Linux/X64");
    assert_eq!(made.runner.runner_group_id, Some(builders));

    let groups = gh.list_runner_groups("acme").await.unwrap();
    let names: Vec<(&str, bool, bool)> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.allows_public_repositories, g.is_hosted()))
        .collect();
    assert_eq!(
        names,
        [
            ("Default", false, false),
            ("builders", false, false),
            ("larger", true, true)
        ]
    );
}

#[tokio::test]
async fn org_runners_of_a_closed_group_never_take_public_jobs_and_group_jobs_need_their_group() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "site", false);
    sim.add_repo("acme", "app", true);
    let open = sim.add_runner_group("acme", "open", true, false);
    let gh = client(
        &sim,
        "acme",
        sim.classic_token("alice", &["repo", "admin:org"]),
    );
    let org = Scope::Org("acme".into());

    let (_, public_job) = sim.queue_job("acme", "site", &["self-hosted"]);
    let closed = gh
        .generate_jit_config(&org, &jit("closed", 1, &["self-hosted"]))
        .await
        .unwrap();
    let closed = sim
        .register_jit_runner(closed.encoded_jit_config.expose())
        .unwrap();
    assert_eq!(
        sim.claim_job(closed.id).unwrap(),
        None,
        "Default does not allow public repositories"
    );

    let (_, group_job) = sim.queue_group_job("acme", "app", "open");
    assert!(sim.job(group_job).unwrap().labels.is_empty());
    assert_eq!(
        sim.claim_job(closed.id).unwrap(),
        None,
        "a group-targeted job goes only to its group"
    );
    let opened = gh
        .generate_jit_config(&org, &jit("open-1", open, &["self-hosted"]))
        .await
        .unwrap();
    let opened = sim
        .register_jit_runner(opened.encoded_jit_config.expose())
        .unwrap();
    let first = sim.claim_job(opened.id).unwrap();
    sim.complete_job(opened.id, "success").unwrap();
    assert!(
        first == Some(public_job) || first == Some(group_job),
        "{first:?}"
    );
}

#[tokio::test]
async fn an_approval_job_is_waiting_then_queued_again() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", true);
    let recorder = WebhookRecorder::start().await.unwrap();
    sim.add_hook(
        "acme",
        None,
        recorder.url(),
        Some("s"),
        "json",
        &["workflow_job"],
    );
    let gh = client(
        &sim,
        "acme",
        sim.classic_token("alice", &["repo", "admin:org"]),
    );
    let made = gh
        .generate_jit_config(&Scope::Org("acme".into()), &jit("r", 1, &["self-hosted"]))
        .await
        .unwrap();
    let runner = sim
        .register_jit_runner(made.encoded_jit_config.expose())
        .unwrap();

    let (_, job) = sim.queue_job_awaiting_approval("acme", "app", &["self-hosted"]);
    assert_eq!(
        sim.claim_job(runner.id).unwrap(),
        None,
        "nobody takes a waiting job"
    );
    assert!(sim.approve_job(job));
    assert!(!sim.approve_job(job), "approving twice does nothing");
    assert_eq!(sim.claim_job(runner.id).unwrap(), Some(job));

    assert!(sim.deliveries_settled(WAIT).await);
    let seen: Vec<(String, String)> = recorder
        .received()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (
                body["action"].as_str().unwrap().to_owned(),
                body["workflow_job"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = seen.iter().map(|(a, s)| (a.as_str(), s.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("queued", "waiting"),
            ("waiting", "waiting"),
            ("queued", "queued"),
            ("in_progress", "in_progress")
        ]
    );
}

#[tokio::test]
async fn ghes_has_no_rate_limit_endpoint_and_no_jit_before_3_10() {
    let old = GithubSim::start_ghes(3, 9).await.unwrap();
    old.add_org("acme", &["alice"], &[]);
    let gh = client(
        &old,
        "acme",
        old.classic_token("alice", &["repo", "admin:org"]),
    );
    let status = gh.rate_limit("acme").await.unwrap();
    assert!(status.disabled && status.resources.is_empty(), "{status:?}");
    let org = Scope::Org("acme".into());
    let refused = gh.generate_jit_config(&org, &jit("r", 1, &["x"])).await;
    assert!(
        matches!(refused, Err(GithubError::NotFound { .. })),
        "{refused:?}"
    );
    assert!(
        gh.registration_token(&org).await.is_ok(),
        "tokens exist on every GHES"
    );

    let new = GithubSim::start_ghes(3, 10).await.unwrap();
    new.add_org("acme", &["alice"], &[]);
    let gh = client(
        &new,
        "acme",
        new.classic_token("alice", &["repo", "admin:org"]),
    );
    assert!(
        gh.generate_jit_config(&org, &jit("r", 1, &["x"]))
            .await
            .is_ok()
    );
}

/// "No more than 100 concurrent requests are allowed" (GitHub docs, "Rate limits for the REST
/// API", secondary rate limits): the 101st request of one token in flight is refused with 403.
#[tokio::test]
async fn more_than_100_requests_of_one_token_at_once_meet_the_secondary_limit() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_user("carol");
    let token = sim.classic_token("carol", &["repo"]);
    sim.set_rest_latency(Duration::from_millis(500));
    let http = reqwest::Client::new();
    let url = format!("{}/user", sim.api_url());
    let answers = futures::future::join_all((0..110).map(|_| {
        http.get(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("user-agent", "test")
            .send()
    }))
    .await;
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert!(refused >= 10, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count() + refused,
        110
    );
    assert_eq!(sim.concurrency_refusals(), refused as u64);
    assert!(sim.max_requests_in_flight("GET /") >= 101);
}
