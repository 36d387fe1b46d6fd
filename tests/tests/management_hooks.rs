//! Repository webhook endpoints against the simulator: list, create, get, delete, test (a ping
//! signed with our secret), ensure (idempotent, rotates the secret, leaves foreign hooks alone),
//! and GitHub's errors passed on as typed JSON.

mod management_support;

use std::time::Duration;

use management_support::{
    Api, SECRET, assert_no_secret, controller, is_our_hook, repo_hooks, sim_and_receiver,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::github_sim::{RestFault, WebhookRecorder, signature_256};

const FOREIGN: &str = "http://127.0.0.1:9/foreign-ci";

/// The `n`-th delivery the receiver got is a ping signed with `secret`.
async fn nth_ping_signed_with(rx: &WebhookRecorder, n: usize, secret: &str) {
    let got = rx.wait_for(n, Duration::from_secs(10)).await;
    assert!(got.len() >= n, "only {} deliveries arrived", got.len());
    let ping = &got[n - 1];
    assert_eq!(ping.header("x-github-event"), Some("ping"));
    assert_eq!(
        ping.header("x-hub-signature-256"),
        Some(signature_256(secret, &ping.body).as_str()),
        "the delivery is signed with {secret}"
    );
}

#[tokio::test]
async fn list_create_get_test_delete_and_github_errors() {
    let (sim, rx) = sim_and_receiver().await;
    sim.add_org("acme", &["alice"], &[]);
    let app = sim.add_repo("acme", "app", true);
    let token = sim.classic_token("alice", &["repo"]);
    let (c, _dir) = controller(
        &sim,
        &[
            ("REPO_OWNER", "acme".into()),
            ("REPO_NAME", "app".into()),
            ("GITHUB_TOKEN", token.clone()),
            ("WEBHOOK_SECRET", SECRET.into()),
            ("WEBHOOK_URL", rx.url().into()),
        ],
    )
    .await;
    let api = Api::of(&c);
    // Start-up setup made our hook, and GitHub's creation ping was signed with our secret.
    let report = api.startup_report("acme").await;
    assert_eq!(report["summary"]["create"], 1, "{report}");
    nth_ping_signed_with(&rx, 1, SECRET).await;

    let base = "/api/v1/repos/acme/app/hooks";
    let (s, list) = api.get(base).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["count"], 1);
    let ours = &list["hooks"][0];
    assert_eq!(ours["ours"], true);
    assert_eq!(ours["secret_set"], true);
    assert_eq!(ours["url"], rx.url());
    assert_eq!(ours["content_type"], "json");
    let our_id = ours["id"].as_u64().unwrap();
    assert_no_secret(&list, SECRET);
    assert_no_secret(&list, &token);

    // Someone else's hook: created as asked, with its own secret, never ours.
    let (s, foreign) = api
        .post(
            base,
            Some(json!({"url": FOREIGN, "events": ["push"], "secret": "their-secret"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{foreign}");
    assert_eq!(foreign["ours"], false);
    assert_eq!(foreign["events"], json!(["push"]));
    assert_no_secret(&foreign, "their-secret");
    let foreign_id = foreign["id"].as_u64().unwrap();
    let stored = repo_hooks(&sim, app);
    let stored_foreign = stored.iter().find(|h| h.id == foreign_id).unwrap();
    assert_eq!(stored_foreign.secret.as_deref(), Some("their-secret"));

    // A second hook of ours with the same events: GitHub's 422, passed on with its details.
    let (s, err) = api.post(base, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"], "github_validation_failed");
    assert!(
        err["details"][0]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{err}"
    );

    // Our own checks, before GitHub is asked.
    for (body, needle) in [
        (json!({"secret": "x"}), "always signed"),
        (
            json!({"content_type": "xml", "url": FOREIGN}),
            "content_type",
        ),
        (json!({"colour": "blue"}), "unknown field"),
        (json!({"url": "ftp://x"}), "http(s)"),
    ] {
        let (s, err) = api.post(base, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(err["message"].as_str().unwrap().contains(needle), "{err}");
    }

    let (s, one) = api.get(&format!("{base}/{foreign_id}")).await;
    assert_eq!((s, one["id"].as_u64()), (StatusCode::OK, Some(foreign_id)));
    let (s, err) = api.get(&format!("{base}/999999")).await;
    assert_eq!(
        (s, err["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("github_not_found"))
    );
    let (s, err) = api.get(&format!("{base}/abc")).await;
    assert_eq!(
        (s, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );

    // Test: GitHub pings our hook, signed with our secret.
    let (s, body) = api.post(&format!("{base}/{our_id}/test"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["event"], "ping");
    nth_ping_signed_with(&rx, 2, SECRET).await;

    // Delete the foreign hook; ours stays.
    let (s, body) = api
        .call(Method::DELETE, &format!("{base}/{foreign_id}"), None)
        .await;
    assert_eq!((s, body["deleted"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(
        api.get(&format!("{base}/{foreign_id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let ids: Vec<u64> = repo_hooks(&sim, app).iter().map(|h| h.id).collect();
    assert_eq!(ids, vec![our_id]);

    // A repository GitHub does not show: 404, typed.
    let (s, err) = api.get("/api/v1/repos/acme/nope/hooks").await;
    assert_eq!(
        (s, err["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("github_not_found"))
    );

    // GitHub's primary rate limit: 429 with when it lifts, and Retry-After.
    sim.fail_rest(
        "/repos/acme/app/hooks",
        1,
        RestFault::PrimaryRateLimit {
            reset_in: Duration::from_secs(3600),
        },
    );
    let (s, retry, err) = api.call_full(Method::GET, base, None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{err}");
    assert_eq!(err["error"], "github_rate_limited");
    assert!(err["until"].as_str().unwrap().ends_with('Z'), "{err}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((3000..=3600).contains(&retry), "{retry}");
}

#[tokio::test]
async fn a_token_without_hook_permission_gets_a_typed_403_with_what_to_grant() {
    let (sim, _rx) = sim_and_receiver().await;
    sim.add_user("bob");
    sim.add_repo("bob", "tool", false);
    let token = sim.classic_token("bob", &["read:user"]);
    let (c, _dir) = controller(
        &sim,
        &[
            ("REPO_OWNER", "bob".into()),
            ("REPO_NAME", "tool".into()),
            ("GITHUB_TOKEN", token),
            ("WEBHOOK_SECRET", SECRET.into()),
        ],
    )
    .await;
    let (s, err) = Api::of(&c).get("/api/v1/repos/bob/tool/hooks").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["error"], "github_forbidden");
    assert!(
        err["grant"]["scopes"]
            .as_str()
            .unwrap()
            .contains("admin:repo_hook"),
        "{err}"
    );
}

#[tokio::test]
async fn ensure_is_idempotent_rotates_the_secret_and_leaves_foreign_hooks_alone() {
    let (sim, rx) = sim_and_receiver().await;
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "svc", true);
    let app = sim.add_repo("acme", "app", true);
    let fresh = sim.add_repo("acme", "fresh", false);
    let token = sim.classic_token("alice", &["repo"]);
    // A foreign hook, and an old hook of ours with the wrong shape and no secret.
    let foreign = sim.add_hook(
        "acme",
        Some("app"),
        FOREIGN,
        Some("theirs"),
        "form",
        &["workflow_job"],
    );
    let old = sim.add_hook("acme", Some("app"), rx.url(), None, "form", &["push"]);
    let foreign_before = repo_hooks(&sim, app)
        .into_iter()
        .find(|h| h.id == foreign)
        .unwrap();
    let vars = |secret: &str| {
        vec![
            ("REPO_OWNER", "acme".to_owned()),
            // Start-up setup serves `svc` only: `app` and `fresh` are left to `ensure`.
            ("REPO_NAME", "svc".into()),
            ("GITHUB_TOKEN", token.clone()),
            ("WEBHOOK_SECRET", secret.into()),
            ("WEBHOOK_URL", rx.url().into()),
        ]
    };
    let (mut c, _dir) = controller(&sim, &vars(SECRET)).await;
    let api = Api::of(&c);
    api.startup_report("acme").await;
    let ensure = "/api/v1/repos/acme/app/hooks/ensure";

    let (s, body) = api.call(Method::PUT, ensure, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["action"], "update");
    assert_eq!(
        body["hook"]["id"].as_u64(),
        Some(old),
        "the old hook of ours is kept"
    );
    assert_eq!(body["foreign_hooks"], 1);
    let reasons = body["reasons"].to_string();
    for needle in ["events are [push]", "content type is form", "no secret"] {
        assert!(reasons.contains(needle), "{needle}: {reasons}");
    }
    assert_no_secret(&body, SECRET);

    // Twice (and a third time): still one hook of ours, nothing to do.
    for _ in 0..2 {
        let (s, body) = api.call(Method::PUT, ensure, None).await;
        assert_eq!(
            (s, body["action"].as_str()),
            (StatusCode::OK, Some("nothing")),
            "{body}"
        );
    }
    let hooks = repo_hooks(&sim, app);
    assert_eq!(hooks.len(), 2, "ours and the foreign one");
    assert!(is_our_hook(
        hooks.iter().find(|h| h.id == old).unwrap(),
        rx.url(),
        SECRET
    ));
    let foreign_after = hooks.iter().find(|h| h.id == foreign).unwrap();
    assert_eq!(
        (
            &foreign_after.url,
            &foreign_after.secret,
            &foreign_after.events,
            &foreign_after.content_type,
            &foreign_after.updated_at
        ),
        (
            &foreign_before.url,
            &foreign_before.secret,
            &foreign_before.events,
            &foreign_before.content_type,
            &foreign_before.updated_at
        ),
        "the foreign hook is untouched"
    );

    // A repository without hooks: created (201).
    let (s, body) = api
        .call(Method::PUT, "/api/v1/repos/acme/fresh/hooks/ensure", None)
        .await;
    assert_eq!(
        (s, body["action"].as_str()),
        (StatusCode::CREATED, Some("create")),
        "{body}"
    );
    assert_eq!(repo_hooks(&sim, fresh).len(), 1);

    // Rotation: a controller with a new secret sets it on ensure, and deliveries are signed with it.
    c.stop().await;
    let rotated = "second-webhook-secret";
    let (c2, _dir2) = controller(&sim, &vars(rotated)).await;
    let api = Api::of(&c2);
    api.startup_report("acme").await;
    let (s, body) = api.call(Method::PUT, ensure, None).await;
    assert_eq!(
        (s, body["action"].as_str()),
        (StatusCode::OK, Some("update")),
        "{body}"
    );
    assert!(
        body["reasons"]
            .to_string()
            .contains("never shows a hook's secret"),
        "{body}"
    );
    let stored = repo_hooks(&sim, app)
        .into_iter()
        .find(|h| h.id == old)
        .unwrap();
    assert_eq!(stored.secret.as_deref(), Some(rotated));
    assert!(sim.deliveries_settled(Duration::from_secs(10)).await);
    let before = rx.received().len();
    let (s, _) = api
        .post(&format!("/api/v1/repos/acme/app/hooks/{old}/test"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    nth_ping_signed_with(&rx, before + 1, rotated).await;
    assert_eq!(repo_hooks(&sim, app).len(), 2, "still one hook of ours");
}

#[tokio::test]
async fn without_webhook_url_ensure_preview_and_setup_say_how_to_turn_it_on() {
    let (sim, _rx) = sim_and_receiver().await;
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", true);
    let token = sim.classic_token("alice", &["repo"]);
    let (c, _dir) = controller(
        &sim,
        &[
            ("REPO_OWNER", "acme".into()),
            ("ALL_REPOS", "true".into()),
            ("GITHUB_TOKEN", token),
            ("WEBHOOK_SECRET", SECRET.into()),
        ],
    )
    .await;
    let api = Api::of(&c);
    for (method, path) in [
        (Method::PUT, "/api/v1/repos/acme/app/hooks/ensure"),
        (Method::POST, "/api/v1/owners/acme/webhooks/preview"),
        (Method::POST, "/api/v1/owners/acme/webhooks/setup"),
        (Method::POST, "/api/v1/repos/acme/app/hooks"),
    ] {
        let (s, err) = api.call(method, path, None).await;
        assert_eq!(s, StatusCode::CONFLICT, "{path}: {err}");
        assert_eq!(err["error"], "webhook_url_not_configured");
        assert!(err["message"].as_str().unwrap().contains("WEBHOOK_URL"));
    }
    let (s, body) = api.get("/api/v1/owners/acme/webhooks/setup").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["automatic"], false);
    assert!(body["last_run"].is_null());
    assert!(sim.hooks().is_empty(), "nothing was created");
}
