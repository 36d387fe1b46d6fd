//! The GitHub client against the simulator: every operation, pagination, App tokens, rate limits,
//! permission errors and a GHES base URL.

use std::time::Duration;

use shared::github::{
    AppCredentials, AppKey, Credentials, GithubApi, GithubClient, GithubError, HookParams,
    JitConfigRequest, RateLimitKind, RepoRef, RepoSource, RetryPolicy, RunStatus, Scope, Secret,
};
use tests::github_sim::{Access, GithubSim, RestFault, WebhookRecorder};
use url::Url;

fn client(sim: &GithubSim, owner: &str, token: &str) -> GithubClient {
    shared::tls::install_crypto_provider();
    let url = Url::parse(sim.api_url()).unwrap();
    GithubClient::builder(&url)
        .owner(owner, Credentials::Token(Secret::new(token)))
        .retry_policy(RetryPolicy {
            backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

/// An org `acme` owned by alice with a private repo `app`, and alice's classic token.
async fn acme() -> (GithubSim, String) {
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &["bob"]);
    sim.add_repo("acme", "app", true);
    let token = sim.classic_token("alice", &["repo", "admin:org", "admin:org_hook"]);
    (sim, token)
}

#[tokio::test]
async fn runner_operations_for_repo_and_org() {
    let (sim, token) = acme().await;
    let gh = client(&sim, "acme", &token);
    // Owner and repository names compare case-insensitively.
    let repo = Scope::Repo(RepoRef::new("ACME", "App"));
    let org = Scope::Org("acme".into());

    for scope in [&repo, &org] {
        let reg = gh.registration_token(scope).await.unwrap();
        assert!(!reg.token.expose().is_empty());
        assert!(reg.expires_at.ends_with('Z'), "{}", reg.expires_at);
        gh.remove_token(scope).await.unwrap();

        let jit = gh
            .generate_jit_config(
                scope,
                &JitConfigRequest {
                    name: "r-1".into(),
                    runner_group_id: 1,
                    labels: vec!["gpu".into()],
                    work_folder: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(jit.runner.name, "r-1");
        assert_eq!(jit.runner.ephemeral, Some(true));
        assert_eq!(jit.runner.status, "offline");
        let labels: Vec<&str> = jit.runner.label_names().collect();
        // A JIT runner carries exactly the labels requested (issue 10 §5).
        assert_eq!(labels, ["gpu"]);

        // A second runner with the same name is a conflict, as on GitHub.
        let dup = gh
            .generate_jit_config(
                scope,
                &JitConfigRequest {
                    name: "r-1".into(),
                    runner_group_id: 1,
                    labels: vec!["x".into()],
                    work_folder: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(dup, GithubError::Conflict { .. }), "{dup:?}");
        // No labels: GitHub's minItems 1.
        let invalid = gh
            .generate_jit_config(
                scope,
                &JitConfigRequest {
                    name: "r-2".into(),
                    runner_group_id: 1,
                    labels: vec![],
                    work_folder: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(invalid, GithubError::Validation { .. }),
            "{invalid:?}"
        );

        let listed = gh.list_runners(scope).await.unwrap();
        assert_eq!(listed.len(), 1);
        let got = gh.get_runner(scope, jit.runner.id).await.unwrap();
        assert_eq!(got, listed[0]);
        gh.delete_runner(scope, jit.runner.id).await.unwrap();
        let gone = gh.get_runner(scope, jit.runner.id).await.unwrap_err();
        assert!(gone.is_not_found(), "{gone:?}");
    }
}

#[tokio::test]
async fn runs_and_jobs() {
    let (sim, token) = acme().await;
    let gh = client(&sim, "acme", &token);
    let repo = RepoRef::new("acme", "app");
    let (run_id, jobs) = sim.queue_run(
        "acme",
        "app",
        "CI",
        &[
            ("build", &["self-hosted", "linux"]),
            ("test", &["self-hosted"]),
        ],
    );
    let (done_run, _) = sim.queue_job("acme", "app", &["self-hosted"]);
    let reg = gh
        .registration_token(&Scope::Repo(repo.clone()))
        .await
        .unwrap();
    let runner = sim
        .register_runner(reg.token.expose(), "solo", &[], false)
        .unwrap();
    // The oldest matching job is taken first.
    assert_eq!(sim.claim_job(runner.id).unwrap(), Some(jobs[0]));
    sim.complete_job(runner.id, "success").unwrap();
    assert_eq!(sim.claim_job(runner.id).unwrap(), Some(jobs[1]));
    sim.complete_job(runner.id, "failure").unwrap();

    let queued = gh
        .list_workflow_runs(&repo, Some(RunStatus::Queued))
        .await
        .unwrap();
    assert_eq!(queued.iter().map(|r| r.id).collect::<Vec<_>>(), [done_run]);
    let completed = gh
        .list_workflow_runs(&repo, Some(RunStatus::Completed))
        .await
        .unwrap();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].id, run_id);
    assert_eq!(completed[0].conclusion.as_deref(), Some("failure"));
    assert_eq!(gh.list_workflow_runs(&repo, None).await.unwrap().len(), 2);

    let listed = gh.list_run_jobs(&repo, run_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].labels, ["self-hosted", "linux"]);
    assert_eq!(listed[0].runner_name.as_deref(), Some("solo"));
    let job = gh.get_job(&repo, jobs[1]).await.unwrap();
    assert_eq!(
        (job.status.as_str(), job.conclusion.as_deref()),
        ("completed", Some("failure"))
    );
    assert_eq!(job.run_id, run_id);
}

#[tokio::test]
async fn repositories_owners_and_credentials() {
    let (sim, token) = acme().await;
    sim.add_repo("acme", "public-site", false);
    sim.add_user("carol");
    sim.add_repo("carol", "dotfiles", false);
    sim.add_repo("carol", "secret", true);
    let gh = client(&sim, "acme", &token);

    let repo = gh
        .get_repository(&RepoRef::new("acme", "app"))
        .await
        .unwrap();
    assert_eq!(repo.full_name, "acme/app");
    assert!(repo.private);
    assert!(repo.permissions.unwrap().admin);
    assert!(repo.owner.is_organization());

    let org = gh.list_repositories("acme", RepoSource::Org).await.unwrap();
    assert_eq!(
        org.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["app", "public-site"]
    );
    let mine = gh
        .list_repositories("acme", RepoSource::AuthenticatedUser)
        .await
        .unwrap();
    assert_eq!(mine.len(), 2);
    // Another user's private repository is not listed for alice.
    let carol = client(&sim, "carol", &token);
    let theirs = carol
        .list_repositories("carol", RepoSource::User)
        .await
        .unwrap();
    assert_eq!(
        theirs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["dotfiles"]
    );
    assert!(
        carol
            .get_repository(&RepoRef::new("carol", "secret"))
            .await
            .unwrap_err()
            .is_not_found()
    );

    assert_eq!(gh.get_owner("ACME").await.unwrap().kind, "Organization");
    assert_eq!(carol.get_owner("carol").await.unwrap().kind, "User");
    // An owner without credentials (and no default token) is a typed error, not a guess.
    assert!(matches!(
        gh.get_owner("carol").await.unwrap_err(),
        GithubError::NoCredentials { .. }
    ));

    let me = gh.authenticated_user("acme").await.unwrap();
    assert_eq!(me.account.login, "alice");
    assert_eq!(me.scopes.unwrap(), ["repo", "admin:org", "admin:org_hook"]);
    let fine = sim.fine_grained_token("alice", &[("administration", Access::Read)], None);
    let me = client(&sim, "acme", &fine)
        .authenticated_user("acme")
        .await
        .unwrap();
    assert_eq!(me.scopes, None, "fine-grained tokens have no scopes");

    let limits = gh.rate_limit("acme").await.unwrap();
    assert_eq!(limits.resources["core"].limit, 5000);
    // Remaining quota is exported for metrics.
    let quotas = gh.quotas();
    let (owner, core) = quotas.iter().find(|(_, q)| q.resource == "core").unwrap();
    assert_eq!(owner, "acme");
    assert!(core.remaining < 5000 && core.limit == 5000, "{core:?}");
}

#[tokio::test]
async fn webhooks_crud_ping_test_deliveries_and_redelivery() {
    let (sim, token) = acme().await;
    let gh = client(&sim, "acme", &token);
    let recorder = WebhookRecorder::start().await.unwrap();
    let repo = RepoRef::new("acme", "app");
    for scope in [Scope::Repo(repo.clone()), Scope::Org("acme".into())] {
        let params = HookParams::json(
            recorder.url(),
            Some(Secret::new("s3cret")),
            &["workflow_job", "push"],
        );
        let hook = gh.create_hook(&scope, &params).await.unwrap();
        assert_eq!(
            hook.config.secret.as_deref(),
            Some("********"),
            "the secret never reads back"
        );
        assert_eq!(hook.config.content_type.as_deref(), Some("json"));
        let again = gh.create_hook(&scope, &params).await.unwrap_err();
        assert!(matches!(again, GithubError::Validation { .. }), "{again:?}");

        assert_eq!(
            gh.list_hooks(&scope).await.unwrap(),
            vec![gh.get_hook(&scope, hook.id).await.unwrap()]
        );
        let updated = gh
            .update_hook(
                &scope,
                hook.id,
                &HookParams {
                    events: Some(vec!["workflow_job".into()]),
                    ..HookParams::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.events, ["workflow_job"]);
        assert_eq!(
            updated.config.secret.as_deref(),
            Some("********"),
            "PATCH without config keeps the secret"
        );

        gh.ping_hook(&scope, hook.id).await.unwrap();
        assert!(sim.deliveries_settled(Duration::from_secs(10)).await);
        let deliveries = gh.list_hook_deliveries(&scope, hook.id).await.unwrap();
        // Creation pinged once, then the explicit ping.
        assert_eq!(deliveries.len(), 2);
        assert!(
            deliveries
                .iter()
                .all(|d| d.event == "ping" && d.status == "OK" && d.succeeded())
        );

        gh.redeliver(&scope, hook.id, deliveries[0].id)
            .await
            .unwrap();
        assert!(sim.deliveries_settled(Duration::from_secs(10)).await);
        let after = gh.list_hook_deliveries(&scope, hook.id).await.unwrap();
        assert_eq!(after.len(), 3);
        assert!(after[0].redelivery);
        assert_eq!(
            after[0].guid, deliveries[0].guid,
            "a redelivery keeps its GUID"
        );

        if let Scope::Repo(repo) = &scope {
            // Not subscribed to push any more: a test sends nothing.
            gh.test_hook(repo, hook.id).await.unwrap();
            gh.update_hook(
                &scope,
                hook.id,
                &HookParams {
                    events: Some(vec!["push".into()]),
                    ..HookParams::default()
                },
            )
            .await
            .unwrap();
            gh.test_hook(repo, hook.id).await.unwrap();
            assert!(sim.deliveries_settled(Duration::from_secs(10)).await);
            let events: Vec<String> = gh
                .list_hook_deliveries(&scope, hook.id)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.event)
                .collect();
            assert_eq!(events.iter().filter(|e| *e == "push").count(), 1);
        }
        gh.delete_hook(&scope, hook.id).await.unwrap();
        assert!(
            gh.get_hook(&scope, hook.id)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
    assert_eq!(recorder.received().len(), 7);
}

#[tokio::test]
async fn lists_are_paginated_over_250_items() {
    let (sim, token) = acme().await;
    for i in 0..249 {
        sim.add_repo("acme", &format!("r{i:03}"), false);
    }
    let gh = client(&sim, "acme", &token);
    let before = sim.counters().rest_requests;
    let repos = gh.list_repositories("acme", RepoSource::Org).await.unwrap();
    assert_eq!(repos.len(), 250);
    let mut names: Vec<_> = repos.iter().map(|r| r.name.clone()).collect();
    names.dedup();
    assert_eq!(names.len(), 250, "no page repeated");
    assert_eq!(
        sim.counters().rest_requests - before,
        3,
        "per_page=100 → 3 pages"
    );
}

#[tokio::test]
async fn ghes_base_url_with_a_path_prefix() {
    let sim = GithubSim::start_with_prefix("/api/v3").await.unwrap();
    assert!(sim.api_url().ends_with("/api/v3"));
    sim.add_org("acme", &["alice"], &[]);
    for i in 0..150 {
        sim.add_repo("acme", &format!("r{i}"), false);
    }
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    let gh = client(&sim, "acme", &token);
    assert_eq!(
        gh.list_repositories("acme", RepoSource::Org)
            .await
            .unwrap()
            .len(),
        150
    );
    let scope = Scope::Org("acme".into());
    gh.registration_token(&scope).await.unwrap();
    assert_eq!(
        gh.authenticated_user("acme").await.unwrap().account.login,
        "alice"
    );
}

#[tokio::test]
async fn a_403_that_is_not_a_rate_limit_is_not_retried() {
    let (sim, _) = acme().await;
    let fine = sim.fine_grained_token("alice", &[("actions", Access::Read)], None);
    let gh = client(&sim, "acme", &fine);
    let before = sim.counters().rest_requests;
    let err = gh
        .registration_token(&Scope::Repo(RepoRef::new("acme", "app")))
        .await
        .unwrap_err();
    match &err {
        GithubError::Forbidden {
            message,
            accepted_permissions,
            ..
        } => {
            assert_eq!(message, "Resource not accessible by personal access token");
            assert_eq!(
                accepted_permissions.as_deref(),
                Some("administration=write")
            );
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(err.to_string().contains("administration=write"), "{err}");
    assert!(
        !err.to_string().contains(&fine) && !format!("{err:?}").contains(&fine),
        "no token in errors"
    );
    assert_eq!(
        sim.counters().rest_requests - before,
        1,
        "a permission 403 is not retried"
    );

    // A classic token lacking admin rights names the scopes it would need.
    let bob = sim.classic_token("bob", &["repo"]);
    let err = client(&sim, "acme", &bob)
        .list_runners(&Scope::Org("acme".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            GithubError::Forbidden {
                accepted_scopes: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    // Unknown token: 401, typed.
    let err = client(&sim, "acme", "ghp_nope")
        .get_owner("acme")
        .await
        .unwrap_err();
    assert!(matches!(err, GithubError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn rate_limits_are_waited_out_with_paused_time() {
    let (sim, token) = acme().await;
    let gh = client(&sim, "acme", &token);
    let scope = Scope::Repo(RepoRef::new("acme", "app"));

    // Primary: wait until x-ratelimit-reset, then the request (a POST, body resent) succeeds.
    sim.fail_rest(
        "/registration-token",
        1,
        RestFault::PrimaryRateLimit {
            reset_in: Duration::from_secs(120),
        },
    );
    let start = tokio::time::Instant::now();
    gh.registration_token(&scope).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(115) && waited < Duration::from_secs(130),
        "{waited:?}"
    );

    // A retried POST resends its body: the JIT runner gets the name and labels asked for.
    sim.fail_rest(
        "/generate-jitconfig",
        1,
        RestFault::SecondaryRateLimit {
            retry_after: Some(Duration::from_secs(5)),
        },
    );
    let jit = gh
        .generate_jit_config(
            &scope,
            &JitConfigRequest {
                name: "after-limit".into(),
                runner_group_id: 1,
                labels: vec!["big".into()],
                work_folder: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(jit.runner.name, "after-limit");
    assert!(jit.runner.label_names().any(|l| l == "big"));

    // Secondary with retry-after: wait exactly that long.
    sim.fail_rest(
        "/actions/runners",
        1,
        RestFault::SecondaryRateLimit {
            retry_after: Some(Duration::from_secs(30)),
        },
    );
    let start = tokio::time::Instant::now();
    gh.list_runners(&scope).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(35),
        "{waited:?}"
    );

    // Secondary without a hint: one minute, then doubling.
    sim.fail_rest(
        "/actions/runners",
        2,
        RestFault::SecondaryRateLimit { retry_after: None },
    );
    let start = tokio::time::Instant::now();
    gh.list_runners(&scope).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(180) && waited < Duration::from_secs(190),
        "{waited:?}"
    );

    // 5xx: retried with back-off; the retries are bounded.
    sim.fail_rest("/actions/runners", 2, RestFault::ServerError(502));
    gh.list_runners(&scope).await.unwrap();
    sim.fail_rest("/actions/runners", 10, RestFault::ServerError(503));
    let err = gh.list_runners(&scope).await.unwrap_err();
    assert!(
        matches!(err, GithubError::Server { status: 503, .. }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_too_far_away_is_returned_not_waited() {
    let (sim, token) = acme().await;
    let gh = client(&sim, "acme", &token);
    sim.fail_rest(
        "/rate_limit",
        1,
        RestFault::PrimaryRateLimit {
            reset_in: Duration::from_secs(3000),
        },
    );
    let start = tokio::time::Instant::now();
    let err = gh.rate_limit("acme").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    match err {
        GithubError::RateLimited {
            kind,
            until: Some(until),
            ..
        } => {
            assert_eq!(kind, RateLimitKind::Primary);
            let left = until.duration_since(std::time::SystemTime::now()).unwrap();
            assert!(left > Duration::from_secs(2900), "{left:?}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // The real primary limit, from the bucket itself.
    sim.set_rate_limit(3);
    let other = sim.classic_token("alice", &["repo"]);
    // No reserve held back by the budget, so the client meets GitHub's own limit.
    let gh = GithubClient::builder(&Url::parse(sim.api_url()).unwrap())
        .owner("acme", Credentials::Token(Secret::new(&other)))
        .budget_policy(shared::github::BudgetPolicy {
            background_share_pct: 100,
            reserve_pct: 0,
        })
        .build()
        .unwrap();
    // Three different reads (a repeated one would be a free 304).
    gh.get_owner("acme").await.unwrap();
    gh.get_repository(&RepoRef::new("acme", "app"))
        .await
        .unwrap();
    gh.authenticated_user("acme").await.unwrap();
    let err = gh.get_owner("acme").await.unwrap_err();
    assert!(
        matches!(
            err,
            GithubError::RateLimited {
                kind: RateLimitKind::Primary,
                ..
            }
        ),
        "{err:?}"
    );
}

/// An RSA key made for this test run (never committed).
fn app_key(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("app.pem");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    path
}

#[tokio::test]
async fn app_installation_tokens_are_cached_refreshed_and_replaced_after_revocation() {
    shared::tls::install_crypto_provider();
    let (sim, _) = acme().await;
    let dir = tempfile::tempdir().unwrap();
    let key = AppKey::from_pem_file(&app_key(dir.path())).unwrap();
    sim.add_app(4242, key.public_key_der());
    sim.install_app(
        4242,
        "acme",
        &[("administration", Access::Write), ("actions", Access::Read)],
        None,
    );
    sim.set_installation_token_ttl(Duration::from_secs(3));

    let url = Url::parse(sim.api_url()).unwrap();
    let gh = GithubClient::builder(&url)
        .owner(
            "acme",
            Credentials::App(AppCredentials {
                app_id: "4242".into(),
                key: key.into(),
                installation_id: None,
            }),
        )
        .refresh_before(Duration::from_secs(1))
        .build()
        .unwrap();
    let scope = Scope::Repo(RepoRef::new("acme", "app"));

    gh.list_runners(&scope).await.unwrap();
    gh.list_runners(&scope).await.unwrap();
    assert_eq!(sim.counters().installation_tokens, 1, "the token is cached");

    // Refreshed before it expires (3 s lifetime, 1 s margin): poll with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while sim.counters().installation_tokens < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "token never refreshed"
        );
        gh.list_runners(&scope).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Revoked early: the 401 makes the client mint a new one and retry.
    sim.set_installation_token_ttl(Duration::from_secs(3600));
    let current = sim.installation_tokens().pop().unwrap();
    sim.revoke_token(&current);
    let minted = sim.counters().installation_tokens;
    gh.list_runners(&scope).await.unwrap();
    assert!(sim.counters().installation_tokens > minted);

    // An App without the permission gets a typed 403 naming it.
    let err = gh.list_hooks(&scope).await.unwrap_err();
    match err {
        GithubError::Forbidden {
            message,
            accepted_permissions,
            ..
        } => {
            assert_eq!(message, "Resource not accessible by integration");
            assert_eq!(
                accepted_permissions.as_deref(),
                Some("repository_hooks=read")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn app_installation_listing() {
    shared::tls::install_crypto_provider();
    let (sim, _) = acme().await;
    sim.add_repo("acme", "other", true);
    let dir = tempfile::tempdir().unwrap();
    let key = AppKey::from_pem_file(&app_key(dir.path())).unwrap();
    sim.add_app(7, key.public_key_der());
    let inst = sim.install_app(7, "acme", &[("metadata", Access::Read)], Some(&["app"]));
    let url = Url::parse(sim.api_url()).unwrap();
    let gh = GithubClient::builder(&url)
        .owner(
            "acme",
            Credentials::App(AppCredentials {
                app_id: "7".into(),
                key: key.into(),
                installation_id: Some(inst),
            }),
        )
        .build()
        .unwrap();
    let repos = gh
        .list_repositories("acme", RepoSource::Installation)
        .await
        .unwrap();
    assert_eq!(
        repos.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["app"]
    );
    // GET /user is not for installations.
    assert!(matches!(
        gh.authenticated_user("acme").await.unwrap_err(),
        GithubError::Forbidden { .. }
    ));
}

#[tokio::test]
async fn client_from_the_environment_contract() {
    let (sim, _) = acme().await;
    sim.add_user("solo");
    sim.add_repo("solo", "tool", true);
    let dir = tempfile::tempdir().unwrap();
    let key_path = app_key(dir.path());
    let key = AppKey::from_pem_file(&key_path).unwrap();
    sim.add_app(99, key.public_key_der());
    sim.install_app(
        99,
        "acme",
        &[("organization_self_hosted_runners", Access::Write)],
        None,
    );
    let solo_token = sim.classic_token("solo", &["repo"]);
    // The seed's variables, parsed by the controller's configuration (the one parser).
    let vars: std::collections::HashMap<String, String> = [
        ("GITHUB_API_URL", sim.api_url().to_owned()),
        ("GITHUB_TOKEN", solo_token.clone()),
        ("OWNERS", "acme,solo".to_owned()),
        ("ALL_REPOS", "true".to_owned()),
        ("ALLOW_UNSIGNED_WEBHOOKS", "true".to_owned()),
        ("OWNER_ACME_APP_ID", "99".to_owned()),
        (
            "OWNER_ACME_APP_PRIVATE_KEY_FILE",
            key_path.display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = controller::config::Config::from_env(&vars).unwrap();
    let gh = controller::github::client(&config).unwrap();
    // acme through the App (installation looked up), solo through GITHUB_TOKEN.
    gh.registration_token(&Scope::Org("acme".into()))
        .await
        .unwrap();
    assert_eq!(sim.counters().installation_tokens, 1);
    let repo = gh
        .get_repository(&RepoRef::new("solo", "tool"))
        .await
        .unwrap();
    assert!(repo.permissions.unwrap().admin);
}

#[tokio::test]
async fn repeated_lists_are_conditional_and_a_304_costs_no_quota() {
    let (sim, token) = acme().await;
    sim.add_repo("acme", "web", true);
    let gh = client(&sim, "acme", &token);
    let repo = RepoRef::new("acme", "app");
    let remaining = |gh: &GithubClient| {
        gh.quotas()
            .into_iter()
            .find(|(_, q)| q.resource == "core")
            .map(|(_, q)| q.remaining)
            .unwrap()
    };
    let first = gh
        .list_workflow_runs(&repo, Some(RunStatus::Queued))
        .await
        .unwrap();
    assert!(first.is_empty());
    let after_first = remaining(&gh);
    // Unchanged: answered 304, from the cache, and GitHub gives the unit back.
    for _ in 0..3 {
        assert!(
            gh.list_workflow_runs(&repo, Some(RunStatus::Queued))
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(sim.counters().not_modified, 3);
    assert_eq!(remaining(&gh), after_first, "304s do not count");
    // A change is a 200 with the new content, and costs.
    let (run, _) = sim.queue_job("acme", "app", &["self-hosted"]);
    let now = gh
        .list_workflow_runs(&repo, Some(RunStatus::Queued))
        .await
        .unwrap();
    assert_eq!(now.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run]);
    assert_eq!(sim.counters().not_modified, 3);
    assert_eq!(remaining(&gh), after_first - 1);
    // Paginated lists keep working from the cache: every page is its own conditional request.
    let repos = gh.list_repositories("acme", RepoSource::Org).await.unwrap();
    let again = gh.list_repositories("acme", RepoSource::Org).await.unwrap();
    assert_eq!(repos.len(), 2);
    assert_eq!(again.len(), 2);
    assert_eq!(sim.counters().not_modified, 4);
    let app = again.iter().find(|r| r.name == "app").unwrap();
    assert!(app.pushed_at.is_some(), "queuing a run moved pushed_at");
    let web = again.iter().find(|r| r.name == "web").unwrap();
    assert_eq!(web.pushed_at, None, "never pushed");
    // The budget counted by kind and outcome.
    let counts = gh.budget().counts();
    let n = |outcome: shared::github::Outcome| {
        counts
            .iter()
            .filter(|c| c.2 == outcome)
            .map(|c| c.3)
            .sum::<u64>()
    };
    assert_eq!(n(shared::github::Outcome::NotModified), 4);
}

#[tokio::test]
async fn the_simulator_answers_304_only_to_a_matching_etag() {
    let (sim, token) = acme().await;
    let http = reqwest::Client::new();
    let url = format!("{}/repos/acme/app/actions/runs", sim.api_url());
    let get = |etag: Option<&str>, auth: bool| {
        let mut req = http.get(&url).header("user-agent", "t");
        if auth {
            req = req.bearer_auth(&token);
        }
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        req.send()
    };
    let first = get(None, true).await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let remaining = |r: &reqwest::Response| -> u64 {
        r.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = remaining(&first);
    let hit = get(Some(&etag), true).await.unwrap();
    assert_eq!(hit.status(), 304);
    assert_eq!(hit.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(remaining(&hit), before, "an authorized 304 is free");
    assert!(hit.bytes().await.unwrap().is_empty());
    // The strong form of the same tag matches too (weak comparison).
    let strong = etag.trim_start_matches("W/");
    assert_eq!(get(Some(strong), true).await.unwrap().status(), 304);
    let miss = get(Some("W/\"other\""), true).await.unwrap();
    assert_eq!(miss.status(), 200);
    assert_eq!(remaining(&miss), before - 1);
    assert_eq!(sim.counters().not_modified, 2);
    // Without credentials the private repository is not there: no 304 for it.
    assert_ne!(get(Some(&etag), false).await.unwrap().status(), 304);
}
