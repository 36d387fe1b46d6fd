//! Token validation against the simulator: classic tokens judged by their scopes, fine-grained
//! tokens and GitHub App installations by probing, each permission ok / missing with what to
//! grant; a refused token reported as invalid; never the token itself.

mod management_support;

use management_support::{Api, app_key, assert_no_secret, controller, sim_and_receiver};
use reqwest::StatusCode;
use serde_json::Value;
use shared::github::AppKey;
use tests::github_sim::{Access, Role};

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {body}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {body}"))
}

fn status<'a>(body: &'a Value, name: &str) -> &'a str {
    check(body, name)["status"].as_str().unwrap()
}

#[tokio::test]
async fn classic_tokens_are_judged_by_their_scopes() {
    let (sim, _rx) = sim_and_receiver().await;
    sim.add_org("acme", &["alice"], &["mallory"]);
    sim.add_repo("acme", "app", true);
    sim.add_collaborator("acme", "app", "mallory", Role::Write);
    sim.add_user("bob");
    sim.add_repo("bob", "tool", false);
    sim.add_user("gone");
    let good = sim.classic_token("alice", &["repo", "admin:org"]);
    let weak = sim.classic_token("bob", &["read:user"]);
    let writer = sim.classic_token("mallory", &["repo"]);
    let revoked = sim.classic_token("gone", &["repo"]);
    sim.revoke_token(&revoked);
    let (c, _dir) = controller(
        &sim,
        &[
            ("OWNERS", "acme,bob,gone".into()),
            ("OWNER_ACME_GITHUB_TOKEN", good.clone()),
            ("OWNER_ACME_ALL_REPOS", "true".into()),
            ("OWNER_BOB_GITHUB_TOKEN", weak.clone()),
            ("OWNER_BOB_REPO_NAME", "tool".into()),
            ("OWNER_GONE_GITHUB_TOKEN", revoked.clone()),
            ("OWNER_GONE_REPO_NAME", "x".into()),
            ("WEBHOOK_SECRET", "s".into()),
        ],
    )
    .await;
    let api = Api::of(&c);
    let hooks_before = sim.hooks().len();

    let (s, v) = api.get("/api/v1/owners/acme/token/validate").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["credential"], "classic_token");
    assert_eq!(v["owner_type"], "Organization");
    assert_eq!(v["login"], "alice");
    assert_eq!(v["valid"], true);
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(status(&v, "repository_webhooks"), "ok");
    assert_eq!(status(&v, "organization_runners"), "ok");
    // Optional: without admin:org_hook setup uses one hook per repository.
    let org_hooks = check(&v, "organization_webhooks");
    assert_eq!(
        (
            org_hooks["status"].as_str(),
            org_hooks["required"].as_bool()
        ),
        (Some("missing"), Some(false))
    );
    assert_eq!(org_hooks["grant"], "scope admin:org_hook");
    assert!(v["rate_limit"]["remaining"].as_u64().unwrap() > 0);
    assert_no_secret(&v, &good);

    let (s, v) = api.get("/api/v1/owners/acme/token/scopes").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["scopes"], serde_json::json!(["repo", "admin:org"]));
    assert_no_secret(&v, &good);

    let (_, v) = api.get("/api/v1/owners/bob/token/validate").await;
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["owner_type"], "User");
    let hooks = check(&v, "repository_webhooks");
    assert_eq!(hooks["status"], "missing");
    assert!(
        hooks["grant"].as_str().unwrap().contains("admin:repo_hook"),
        "{hooks}"
    );
    assert_eq!(status(&v, "repository_runners"), "missing");

    // Repository level: the token's user must be an admin.
    let (_, v) = api.get("/api/v1/repos/bob/tool/token/validate").await;
    assert_eq!(v["visible"], true);
    assert_eq!(status(&v, "repository_admin"), "ok");
    let (_, v) = api.get("/api/v1/repos/bob/missing/token/validate").await;
    assert_eq!(
        (v["visible"].as_bool(), v["ready"].as_bool()),
        (Some(false), Some(false)),
        "{v}"
    );

    // A revoked token: reported invalid, not an error of ours.
    let (s, v) = api.get("/api/v1/owners/gone/token/validate").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"]["code"], "github_bad_credentials");
    assert_no_secret(&v, &revoked);
    assert_eq!(
        sim.hooks().len(),
        hooks_before,
        "validation changes nothing"
    );

    // A member with write (not admin) on the repository.
    let (c2, _dir2) = controller(
        &sim,
        &[
            ("REPO_OWNER", "acme".into()),
            ("REPO_NAME", "app".into()),
            ("GITHUB_TOKEN", writer),
            ("WEBHOOK_SECRET", "s".into()),
        ],
    )
    .await;
    let (_, v) = Api::of(&c2)
        .get("/api/v1/repos/acme/app/token/validate")
        .await;
    assert_eq!(v["permissions"]["admin"], false, "{v}");
    let admin = check(&v, "repository_admin");
    assert_eq!(admin["status"], "missing");
    assert!(admin["grant"].as_str().unwrap().contains("admin"));
    assert_eq!(v["ready"], false);
}

#[tokio::test]
async fn fine_grained_tokens_are_probed_for_read_and_write() {
    let (sim, _rx) = sim_and_receiver().await;
    for user in ["carol", "dave", "erin"] {
        sim.add_user(user);
        sim.add_repo(user, "svc", true);
    }
    let full = sim.fine_grained_token(
        "carol",
        &[
            ("repository_hooks", Access::Write),
            ("administration", Access::Write),
            ("actions", Access::Read),
        ],
        None,
    );
    let no_hooks = sim.fine_grained_token(
        "dave",
        &[("administration", Access::Write), ("actions", Access::Read)],
        None,
    );
    let read_hooks = sim.fine_grained_token(
        "erin",
        &[
            ("repository_hooks", Access::Read),
            ("administration", Access::Write),
            ("actions", Access::Read),
        ],
        Some(&["svc"]),
    );
    let vars = [
        ("OWNERS", "carol,dave,erin".to_owned()),
        ("ALL_REPOS", "true".into()),
        ("WEBHOOK_SECRET", "s".into()),
        ("OWNER_CAROL_GITHUB_TOKEN", full.clone()),
        ("OWNER_DAVE_GITHUB_TOKEN", no_hooks),
        ("OWNER_ERIN_GITHUB_TOKEN", read_hooks),
    ];
    let (c, _dir) = controller(&sim, &vars).await;
    let api = Api::of(&c);

    let (s, v) = api.get("/api/v1/owners/carol/token/validate").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["credential"], "fine_grained_token");
    assert_eq!(v["probe_repository"], "carol/svc");
    assert_eq!(v["ready"], true, "{v}");
    for name in ["repository_webhooks", "repository_runners", "actions"] {
        assert_eq!(status(&v, name), "ok", "{name}: {v}");
    }
    assert!(
        check(&v, "repository_webhooks")["detail"]
            .as_str()
            .unwrap()
            .contains("read and write")
    );
    assert_no_secret(&v, &full);
    let (_, v) = api.get("/api/v1/owners/carol/token/scopes").await;
    assert!(v["scopes"].is_null(), "{v}");
    assert_eq!(v["credential"], "fine_grained_token");

    let (_, v) = api.get("/api/v1/owners/dave/token/validate").await;
    assert_eq!(v["ready"], false);
    let hooks = check(&v, "repository_webhooks");
    assert_eq!(hooks["status"], "missing");
    assert!(
        hooks["detail"]
            .as_str()
            .unwrap()
            .contains("repository_hooks=read"),
        "{hooks}"
    );
    assert!(
        hooks["grant"]
            .as_str()
            .unwrap()
            .contains("Webhooks: Read and write")
    );
    assert_eq!(status(&v, "repository_runners"), "ok");

    // Read-only hooks: listing works, the write probe is refused.
    let (_, v) = api.get("/api/v1/repos/erin/svc/token/validate").await;
    let hooks = check(&v, "repository_webhooks");
    assert_eq!(hooks["status"], "missing", "{v}");
    assert!(
        hooks["detail"]
            .as_str()
            .unwrap()
            .contains("repository_hooks=write"),
        "{hooks}"
    );
    assert_eq!(status(&v, "repository_admin"), "ok");
    assert!(sim.hooks().is_empty(), "the write probe created nothing");
}

#[tokio::test]
async fn github_app_installations_are_probed() {
    let (sim, _rx) = sim_and_receiver().await;
    sim.add_org("good-org", &["alice"], &[]);
    sim.add_repo("good-org", "app", true);
    sim.add_org("bare-org", &["alice"], &[]);
    sim.add_repo("bare-org", "app", true);
    let dir = tempfile::tempdir().unwrap();
    let key_file = app_key(dir.path());
    let key = AppKey::from_pem_file(&key_file).unwrap();
    sim.add_app(321, key.public_key_der());
    sim.install_app(
        321,
        "good-org",
        &[
            ("repository_hooks", Access::Write),
            ("actions", Access::Read),
            ("organization_self_hosted_runners", Access::Write),
        ],
        None,
    );
    sim.install_app(321, "bare-org", &[("metadata", Access::Read)], None);
    let key_path = key_file.display().to_string();
    let (c, _dir) = controller(
        &sim,
        &[
            ("OWNERS", "good-org,bare-org".into()),
            ("APP_ID", "321".into()),
            ("APP_PRIVATE_KEY_FILE", key_path),
            ("ALL_REPOS", "true".into()),
            ("WEBHOOK_SECRET", "s".into()),
        ],
    )
    .await;
    let api = Api::of(&c);

    let (s, v) = api.get("/api/v1/owners/good-org/token/validate").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["credential"], "github_app");
    assert!(v["login"].is_null());
    assert_eq!(v["ready"], true, "{v}");
    for name in ["repository_webhooks", "organization_runners", "actions"] {
        assert_eq!(status(&v, name), "ok", "{name}: {v}");
    }
    assert_eq!(status(&v, "organization_webhooks"), "missing");

    let (_, v) = api.get("/api/v1/owners/bare-org/token/validate").await;
    assert_eq!(v["ready"], false, "{v}");
    let runners = check(&v, "organization_runners");
    assert_eq!(runners["status"], "missing");
    assert!(
        runners["detail"]
            .as_str()
            .unwrap()
            .contains("organization_self_hosted_runners")
    );
    assert!(
        runners["grant"]
            .as_str()
            .unwrap()
            .contains("App's settings"),
        "{runners}"
    );
    assert_eq!(status(&v, "repository_webhooks"), "missing");

    let (_, v) = api.get("/api/v1/owners/bare-org/token/scopes").await;
    assert_eq!(
        (v["credential"].as_str(), v["scopes"].is_null()),
        (Some("github_app"), true)
    );
    let (_, v) = api.get("/api/v1/repos/good-org/app/token/validate").await;
    assert!(
        v["permissions"].is_null(),
        "an App has no role of its own: {v}"
    );
    assert_eq!(v["ready"], true, "{v}");
}
