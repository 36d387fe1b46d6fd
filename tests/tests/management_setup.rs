//! Webhook setup against the simulator: the start-up task, preview and setup over an owner's
//! repositories (all pages), the organization hook, GitHub App credentials, the rate-limit budget.

mod management_support;

use management_support::{
    Api, SECRET, app_key, controller, is_our_hook, org_hooks, repo_hooks, sim_and_receiver,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use shared::github::AppKey;
use tests::github_sim::{Access, Role};

const FOREIGN: &str = "http://127.0.0.1:9/foreign-ci";

fn target<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets in {report}"))
        .iter()
        .find(|t| t["target"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {report}"))
}

fn action<'a>(report: &'a Value, name: &str) -> &'a str {
    target(report, name)["action"].as_str().unwrap()
}

#[tokio::test]
async fn startup_preview_and_setup_across_an_organization() {
    let (sim, rx) = sim_and_receiver().await;
    let org = sim.add_org("acme", &["boss"], &["alice"]);
    let x = sim.add_repo("acme", "x", true);
    let y = sim.add_repo("acme", "y", true);
    let z = sim.add_repo("acme", "z", false);
    sim.add_collaborator("acme", "x", "alice", Role::Admin);
    sim.add_collaborator("acme", "y", "alice", Role::Write);
    sim.add_collaborator("acme", "z", "alice", Role::Admin);
    // On z: a foreign hook and two hooks of ours splitting our events between them.
    let foreign = sim.add_hook("acme", Some("z"), FOREIGN, Some("theirs"), "json", &["*"]);
    sim.add_hook("acme", Some("z"), rx.url(), None, "json", &["workflow_job"]);
    sim.add_hook("acme", Some("z"), rx.url(), None, "json", &["workflow_run"]);
    let token = sim.classic_token("alice", &["repo"]);
    let vars = |secret: &str| {
        vec![
            ("REPO_OWNER", "acme".to_owned()),
            ("ALL_REPOS", "true".into()),
            ("GITHUB_TOKEN", token.clone()),
            ("WEBHOOK_SECRET", secret.into()),
            ("WEBHOOK_URL", rx.url().into()),
        ]
    };
    let (mut c, _dir) = controller(&sim, &vars(SECRET)).await;
    let api = Api::of(&c);

    // Start-up (in the background): org hook not allowed, so one hook per repository.
    let report = api.startup_report("acme").await;
    assert_eq!(report["mode"], "setup");
    let org_target = target(&report, "acme");
    assert_eq!(org_target["action"], "skip", "{report}");
    assert!(
        org_target["reasons"].to_string().contains("admin:org_hook"),
        "{org_target}"
    );
    assert_eq!(action(&report, "acme/x"), "create");
    assert_eq!(action(&report, "acme/y"), "skip");
    assert!(
        target(&report, "acme/y")["reasons"]
            .to_string()
            .contains("not an admin")
    );
    assert_eq!(action(&report, "acme/z"), "update");
    assert_eq!(
        target(&report, "acme/z")["removed_hooks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(target(&report, "acme/z")["foreign_hooks"], 1);
    assert_eq!(report["summary"]["failed"], 0, "{report}");

    assert!(org_hooks(&sim, org).is_empty());
    assert!(repo_hooks(&sim, y).is_empty(), "no admin: skipped");
    for repo in [x, z] {
        let ours: Vec<_> = repo_hooks(&sim, repo)
            .into_iter()
            .filter(|h| h.url == rx.url())
            .collect();
        assert_eq!(ours.len(), 1, "exactly one hook of ours on {repo}");
        assert!(is_our_hook(&ours[0], rx.url(), SECRET), "{:?}", ours[0]);
    }
    let foreign_hook = repo_hooks(&sim, z)
        .into_iter()
        .find(|h| h.id == foreign)
        .unwrap();
    assert_eq!(
        (foreign_hook.url.as_str(), foreign_hook.secret.as_deref()),
        (FOREIGN, Some("theirs"))
    );
    assert_eq!(foreign_hook.events, ["*"]);

    // Drift: our hook on x deleted, a new repository w. Preview says so and changes nothing.
    let w = sim.add_repo("acme", "w", true);
    sim.add_collaborator("acme", "w", "alice", Role::Admin);
    let x_hook = repo_hooks(&sim, x)[0].id;
    let (s, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/repos/acme/x/hooks/{x_hook}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let before = sim.hooks().len();
    let (s, preview) = api.post("/api/v1/owners/acme/webhooks/preview", None).await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert_eq!(preview["mode"], "preview");
    assert_eq!(action(&preview, "acme/x"), "create");
    assert_eq!(action(&preview, "acme/w"), "create");
    assert_eq!(action(&preview, "acme/z"), "nothing", "{preview}");
    assert_eq!(action(&preview, "acme/y"), "skip");
    assert!(target(&preview, "acme/x").get("outcome").is_none());
    assert_eq!(sim.hooks().len(), before, "preview writes nothing");

    let (s, setup) = api.post("/api/v1/owners/acme/webhooks/setup", None).await;
    assert_eq!(s, StatusCode::OK, "{setup}");
    assert_eq!(target(&setup, "acme/w")["outcome"], "applied");
    assert_eq!(setup["summary"]["create"], 2, "{setup}");
    assert_eq!(setup["summary"]["nothing"], 1);
    assert_eq!(repo_hooks(&sim, w).len(), 1);
    assert_eq!(repo_hooks(&sim, x).len(), 1);

    // Twice: nothing more to do, no new hooks.
    let count = sim.hooks().len();
    let (_, again) = api.post("/api/v1/owners/acme/webhooks/setup", None).await;
    assert_eq!(again["summary"]["create"], 0, "{again}");
    assert_eq!(again["summary"]["update"], 0, "{again}");
    assert_eq!(again["summary"]["nothing"], 3);
    assert_eq!(sim.hooks().len(), count);
    let (_, last) = api.get("/api/v1/owners/acme/webhooks/setup").await;
    assert_eq!(last["automatic"], true);
    assert_eq!(last["last_run"]["summary"], again["summary"]);

    // Rotation: the next controller's start-up sets the new secret on every hook of ours.
    c.stop().await;
    let rotated = "rotated-webhook-secret";
    let (c2, _dir2) = controller(&sim, &vars(rotated)).await;
    let report = Api::of(&c2).startup_report("acme").await;
    assert_eq!(report["summary"]["update"], 3, "{report}");
    for repo in [x, z, w] {
        let ours: Vec<_> = repo_hooks(&sim, repo)
            .into_iter()
            .filter(|h| h.url == rx.url())
            .collect();
        assert_eq!(ours.len(), 1);
        assert!(is_our_hook(&ours[0], rx.url(), rotated));
    }
    assert_eq!(sim.hooks().len(), count, "rotation creates nothing");
}

#[tokio::test]
async fn an_organization_gets_one_org_hook_when_the_token_may() {
    let (sim, rx) = sim_and_receiver().await;
    let org = sim.add_org("acme", &["alice"], &[]);
    let a = sim.add_repo("acme", "a", true);
    sim.add_repo("acme", "b", false);
    let foreign = sim.add_hook("acme", None, FOREIGN, None, "json", &["workflow_job"]);
    let token = sim.classic_token("alice", &["repo", "admin:org", "admin:org_hook"]);
    let (c, _dir) = controller(
        &sim,
        &[
            ("REPO_OWNER", "acme".into()),
            ("ALL_REPOS", "true".into()),
            ("GITHUB_TOKEN", token),
            ("WEBHOOK_SECRET", SECRET.into()),
            ("WEBHOOK_URL", rx.url().into()),
        ],
    )
    .await;
    let report = Api::of(&c).startup_report("acme").await;
    assert_eq!(report["targets"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(target(&report, "acme")["kind"], "organization");
    assert_eq!(action(&report, "acme"), "create");
    let hooks = org_hooks(&sim, org);
    assert_eq!(hooks.len(), 2);
    assert!(is_our_hook(
        hooks.iter().find(|h| h.id != foreign).unwrap(),
        rx.url(),
        SECRET
    ));
    assert!(
        repo_hooks(&sim, a).is_empty(),
        "no repository hooks besides the org hook"
    );
}

#[tokio::test]
async fn every_page_of_repositories_is_listed_with_permissions() {
    let (sim, _rx) = sim_and_receiver().await;
    sim.add_user("alice");
    for i in 0..105 {
        sim.add_repo("alice", &format!("repo-{i:03}"), i % 2 == 0);
    }
    sim.add_org("other", &["alice"], &[]);
    sim.add_repo("other", "not-alices", true);
    let token = sim.classic_token("alice", &["repo"]);
    let (c, _dir) = controller(
        &sim,
        &[
            ("REPO_OWNER", "alice".into()),
            ("REPO_NAME", "repo-007".into()),
            ("GITHUB_TOKEN", token),
            ("WEBHOOK_SECRET", SECRET.into()),
        ],
    )
    .await;
    let (s, v) = Api::of(&c).get("/api/v1/owners/alice/repositories").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["count"], 105, "more than one page of 100, only alice's");
    let repos = v["repositories"].as_array().unwrap();
    assert!(repos.iter().all(|r| r["permissions"]["admin"] == true));
    assert_eq!(repos.iter().filter(|r| r["private"] == true).count(), 53);
    let served: Vec<_> = repos.iter().filter(|r| r["served"] == true).collect();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0]["name"], "repo-007");
}

#[tokio::test]
async fn app_credentials_set_up_hooks_or_say_what_to_grant() {
    let (sim, rx) = sim_and_receiver().await;
    sim.add_org("good-org", &["alice"], &[]);
    let good_repo = sim.add_repo("good-org", "app", true);
    sim.add_repo("good-org", "hidden", true);
    sim.add_org("bare-org", &["alice"], &[]);
    sim.add_repo("bare-org", "app", true);
    let dir = tempfile::tempdir().unwrap();
    let key_file = app_key(dir.path());
    sim.add_app(
        55,
        AppKey::from_pem_file(&key_file).unwrap().public_key_der(),
    );
    sim.install_app(
        55,
        "good-org",
        &[("repository_hooks", Access::Write)],
        Some(&["app"]),
    );
    sim.install_app(55, "bare-org", &[("actions", Access::Read)], None);
    let (c, _dir) = controller(
        &sim,
        &[
            ("OWNERS", "good-org,bare-org".into()),
            ("APP_ID", "55".into()),
            ("APP_PRIVATE_KEY_FILE", key_file.display().to_string()),
            ("ALL_REPOS", "true".into()),
            ("WEBHOOK_SECRET", SECRET.into()),
            ("WEBHOOK_URL", rx.url().into()),
        ],
    )
    .await;
    let api = Api::of(&c);
    let good = api.startup_report("good-org").await;
    assert!(
        target(&good, "good-org")["reasons"]
            .to_string()
            .contains("organization_hooks")
    );
    assert_eq!(action(&good, "good-org/app"), "create", "{good}");
    assert_eq!(
        good["targets"].as_array().unwrap().len(),
        2,
        "the installation sees only app"
    );
    assert!(is_our_hook(
        &repo_hooks(&sim, good_repo)[0],
        rx.url(),
        SECRET
    ));

    let bare = api.startup_report("bare-org").await;
    let t = target(&bare, "bare-org/app");
    assert_eq!(t["action"], "skip", "{bare}");
    let reasons = t["reasons"].to_string();
    assert!(
        reasons.contains("repository_hooks=read") && reasons.contains("GitHub App"),
        "{reasons}"
    );
    assert_eq!(t["error"]["code"], "github_forbidden");
}

#[tokio::test]
async fn the_startup_task_leaves_the_rate_limit_to_scaling() {
    let (sim, rx) = sim_and_receiver().await;
    sim.add_user("alice");
    sim.add_repo("alice", "a", true);
    sim.add_repo("alice", "b", true);
    let token = sim.classic_token("alice", &["repo"]);
    // Owner lookup and listing leave one request: at or below the reserve (20 %).
    sim.set_rate_limit(3);
    let (c, _dir) = controller(
        &sim,
        &[
            ("REPO_OWNER", "alice".into()),
            ("ALL_REPOS", "true".into()),
            ("GITHUB_TOKEN", token),
            ("WEBHOOK_SECRET", SECRET.into()),
            ("WEBHOOK_URL", rx.url().into()),
        ],
    )
    .await;
    let report = Api::of(&c).startup_report("alice").await;
    assert!(
        report["rate_limited_until"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{report}"
    );
    // The API budget (issue 11 §4) may hold the background setup back before it lists its
    // targets (a 3-call window has no background share); any target it listed is not attempted.
    for t in report["targets"].as_array().into_iter().flatten() {
        assert_eq!(t["action"], "skip", "{t}");
        assert!(t["reasons"].to_string().contains("not attempted"), "{t}");
    }
    assert!(sim.hooks().is_empty());
}
