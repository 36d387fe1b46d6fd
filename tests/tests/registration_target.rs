//! Where runners register, end to end through the strict GitHub simulator: user accounts
//! (repository runners in every mode an organization has, their private repositories swept with
//! `/user/repos`), `RUNNER_GROUP` by name or id, groups closed to public repositories, GitHub's
//! JIT limits, and GitHub Enterprise Server without JIT.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tests::emulator::RunnerEmulator;
use tests::github_sim::{GithubSim, RestFault};
use tests::harness::{
    AgentTls, TEST_WEBHOOK_SECRET, TestAgent, TestController, controller_env, get_json, init, vars,
    wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    ca: TestCa,
    sim: Arc<GithubSim>,
    controller: TestController,
}

/// A controller for `sim` with `env` (owners and tokens) plus test TLS and state.
async fn start(sim: Arc<GithubSim>, env: HashMap<String, String>) -> Setup {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "test CA");
    let server = ca.server();
    let mut all = controller_env(&dir.path().join("state"), &ca.ca_file(), &server);
    all.insert("GITHUB_API_URL".into(), sim.api_url().to_owned());
    all.insert("WEBHOOK_SECRET".into(), TEST_WEBHOOK_SECRET.into());
    all.extend(env);
    let controller = TestController::start(all).await;
    Setup {
        _dir: dir,
        ca,
        sim,
        controller,
    }
}

impl Setup {
    fn agent(&self, name: &str) -> TestAgent {
        let cert = self.ca.client(name, &[]);
        TestAgent::start(
            &self.controller.grpc_url(),
            &AgentTls {
                ca: self.ca.ca_file(),
                cert: cert.cert,
                key: cert.key,
            },
            &[("MAX_RUNNERS", "10")],
        )
    }

    /// A connected agent with runners emulated against the simulator.
    async fn serve(&self) -> (TestAgent, RunnerEmulator) {
        let agent = self.agent("host-1");
        agent
            .wait_status(WAIT, "connected", |st| st.connected)
            .await;
        let emulator = RunnerEmulator::start(
            self.sim.clone(),
            vec![agent.runtime.clone()],
            Duration::from_millis(50),
        );
        (agent, emulator)
    }

    /// A repository hook (users have no organization hooks) to the controller.
    fn repo_hook(&self, owner: &str, repo: &str) {
        self.sim.add_hook(
            owner,
            Some(repo),
            &format!("http://{}/webhook", self.controller.http_addr),
            Some(TEST_WEBHOOK_SECRET),
            "json",
            &["workflow_job", "workflow_run"],
        );
    }

    fn org_hook(&self, owner: &str) {
        self.sim.add_hook(
            owner,
            None,
            &format!("http://{}/webhook", self.controller.http_addr),
            Some(TEST_WEBHOOK_SECRET),
            "json",
            &["workflow_job", "workflow_run"],
        );
    }

    async fn completed(&self, job: u64) {
        wait_until(WAIT, &format!("job {job} completed"), || async {
            self.sim.job(job).is_some_and(|j| j.status == "completed")
        })
        .await;
    }

    async fn job(&self, job: u64) -> serde_json::Value {
        get_json(&self.controller, &format!("/api/v1/jobs/{job}"))
            .await
            .1
    }

    /// Waits until the job waits for a registration reason; returns its explanation.
    async fn registration_problem(&self, job: u64) -> String {
        wait_until(WAIT, "a registration reason", || async {
            self.job(job).await["waiting"]["reason"] == "registration"
        })
        .await;
        self.job(job).await["explanation"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn user_sim() -> (Arc<GithubSim>, String) {
    let sim = GithubSim::start().await.unwrap();
    sim.add_user("carol");
    sim.add_repo("carol", "app", true);
    sim.add_repo("carol", "lib", true);
    let token = sim.classic_token("carol", &["repo"]);
    (Arc::new(sim), token)
}

/// The name of the runner that took `job`.
fn taken_by(s: &Setup, job: u64) -> String {
    s.sim
        .job(job)
        .and_then(|j| j.runner.map(|(_, name)| name))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_user_with_all_repos_gets_repository_runners() {
    let (sim, token) = user_sim().await;
    let s = start(
        sim,
        vars(&[
            ("REPO_OWNER", "carol".into()),
            ("GITHUB_TOKEN", token),
            ("ALL_REPOS", "true".into()),
        ]),
    )
    .await;
    s.repo_hook("carol", "app");
    s.repo_hook("carol", "lib");
    let (_agent, _emulator) = s.serve().await;
    let (_, a) = s.sim.queue_job("carol", "app", &["self-hosted", "linux"]);
    let (_, b) = s.sim.queue_job("carol", "lib", &["self-hosted"]);
    s.completed(a).await;
    s.completed(b).await;
    assert!(taken_by(&s, a).starts_with("gha-carol-"));

    let (_, status) = get_json(&s.controller, "/status").await;
    let owner = &status["registration"]["owners"][0];
    assert_eq!(owner["kind"], "user", "{status}");
    assert_eq!(owner["level"], "repository", "{status}");
}

#[tokio::test]
async fn a_user_with_one_repository_is_served() {
    let (sim, token) = user_sim().await;
    let s = start(
        sim,
        vars(&[
            ("REPO_OWNER", "carol".into()),
            ("GITHUB_TOKEN", token),
            ("REPO_NAME", "app".into()),
        ]),
    )
    .await;
    s.repo_hook("carol", "app");
    let (_agent, _emulator) = s.serve().await;
    let (_, job) = s.sim.queue_job("carol", "app", &["self-hosted"]);
    s.completed(job).await;
}

#[tokio::test]
async fn a_user_and_an_organization_side_by_side() {
    let (sim, carol) = user_sim().await;
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "web", true);
    let alice = sim.classic_token("alice", &["repo", "admin:org"]);
    let s = start(
        sim,
        vars(&[
            ("OWNERS", "acme,carol".into()),
            ("OWNER_ACME_GITHUB_TOKEN", alice),
            ("OWNER_ACME_ALL_REPOS", "true".into()),
            ("OWNER_CAROL_GITHUB_TOKEN", carol),
            ("OWNER_CAROL_ALL_REPOS", "true".into()),
        ]),
    )
    .await;
    s.org_hook("acme");
    s.repo_hook("carol", "lib");
    let (_agent, _emulator) = s.serve().await;
    let (_, org_job) = s.sim.queue_job("acme", "web", &["self-hosted"]);
    let (_, user_job) = s.sim.queue_job("carol", "lib", &["self-hosted"]);
    s.completed(org_job).await;
    s.completed(user_job).await;
    let (_, status) = get_json(&s.controller, "/status").await;
    let levels: Vec<(String, String)> = status["registration"]["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["owner"].as_str().unwrap().to_owned(),
                o["level"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("acme".to_owned(), "organization".to_owned()),
            ("carol".to_owned(), "repository".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_users_private_repositories_are_swept_and_an_unreadable_one_is_skipped() {
    let (sim, token) = user_sim().await;
    // `app` is listed first and its runs cannot be read: the pass goes on to `lib`.
    sim.fail_rest(
        "/repos/carol/app/actions/runs",
        1000,
        RestFault::ServerError(404),
    );
    let s = start(
        sim,
        vars(&[
            ("REPO_OWNER", "carol".into()),
            ("GITHUB_TOKEN", token),
            ("ALL_REPOS", "true".into()),
            ("RECONCILE_INTERVAL", "300ms".into()),
        ]),
    )
    .await;
    // No hooks at all: only the REST sweep can find the job of the private repository.
    let (_agent, _emulator) = s.serve().await;
    let (_, job) = s.sim.queue_job("carol", "lib", &["self-hosted"]);
    s.completed(job).await;
}

async fn org_sim(public: bool) -> (Arc<GithubSim>, String) {
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", !public);
    sim.add_runner_group("acme", "builders", false, false);
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    (Arc::new(sim), token)
}

fn org_env(token: String, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = vars(&[
        ("REPO_OWNER", "acme".into()),
        ("GITHUB_TOKEN", token),
        ("ALL_REPOS", "true".into()),
    ]);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    env
}

#[tokio::test]
async fn runner_group_by_name_is_resolved_and_used() {
    let (sim, token) = org_sim(false).await;
    let s = start(sim, org_env(token, &[("RUNNER_GROUP", "Builders")])).await;
    s.org_hook("acme");
    // No emulator: the JIT runner stays registered at the simulator, where its group shows.
    let agent = s.agent("host-1");
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "a JIT runner at GitHub", || async {
        !s.sim.runners().is_empty()
    })
    .await;
    let groups: Vec<u64> = s.sim.runners().iter().map(|r| r.group_id).collect();
    assert!(groups.iter().all(|g| *g == 2), "{groups:?}");
    wait_until(WAIT, "the registration published", || async {
        !get_json(&s.controller, "/status").await.1["registration"].is_null()
    })
    .await;
    let (_, status) = get_json(&s.controller, "/status").await;
    assert_eq!(
        status["registration"]["owners"][0]["runner_group"]["name"], "builders",
        "{status}"
    );
}

#[tokio::test]
async fn an_unknown_runner_group_name_is_an_error_on_the_job_never_group_1() {
    let (sim, token) = org_sim(false).await;
    let s = start(sim, org_env(token, &[("RUNNER_GROUP", "no-such-pool")])).await;
    s.org_hook("acme");
    let (_agent, _emulator) = s.serve().await;
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    let why = s.registration_problem(job).await;
    assert!(
        why.contains("no-such-pool")
            && why.contains("does not exist")
            && why.contains("RUNNER_GROUP"),
        "{why}"
    );
    assert!(
        why.contains("\"builders\" (id 2)"),
        "names the groups there are: {why}"
    );
    assert!(
        s.sim.runners().is_empty(),
        "no runner registered in another group"
    );
    let (_, status) = get_json(&s.controller, "/status").await;
    assert!(
        status["registration"]["owners"][0]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("no-such-pool")),
        "{status}"
    );
}

#[tokio::test]
async fn a_public_repository_in_a_group_closed_to_public_repositories_is_explained() {
    let (sim, token) = org_sim(true).await;
    let s = start(sim, org_env(token, &[])).await;
    s.org_hook("acme");
    let (_agent, _emulator) = s.serve().await;
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    let why = s.registration_problem(job).await;
    assert!(
        why.contains("acme/app is public") && why.contains("\"Default\""),
        "{why}"
    );
}

#[tokio::test]
async fn in_token_mode_the_group_goes_by_name_to_the_runner() {
    let (sim, token) = org_sim(false).await;
    let s = start(
        sim,
        org_env(
            token,
            &[("RUNNER_GROUP", "2"), ("RUNNER_REGISTRATION", "token")],
        ),
    )
    .await;
    s.org_hook("acme");
    let (agent, _emulator) = s.serve().await;
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "a runner spec", || async {
        !agent.runtime.runners().is_empty()
    })
    .await;
    let id = agent.runtime.runners()[0].id.clone();
    let spec = agent.runtime.spec(&id).unwrap();
    match spec.registration {
        shared::command::Registration::Token { runner_group, .. } => {
            assert_eq!(runner_group, "builders")
        }
        other => panic!("expected a registration token, got {other:?}"),
    }
    s.completed(job).await;
}

#[tokio::test]
async fn too_many_labels_are_refused_before_asking_github() {
    let (sim, token) = org_sim(false).await;
    let labels: Vec<String> = (0..100).map(|i| format!("l{i}")).collect();
    let labels = labels.join(",");
    let s = start(sim, org_env(token, &[("LABELS", labels.as_str())])).await;
    s.org_hook("acme");
    let (_agent, _emulator) = s.serve().await;
    let (_, job) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    let why = s.registration_problem(job).await;
    assert!(why.contains("1 to 100 labels"), "{why}");
    assert!(s.sim.runners().is_empty());
}

#[tokio::test]
async fn ghes_without_jit_falls_back_to_registration_tokens_once() {
    let sim = GithubSim::start_ghes(3, 9).await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", true);
    let token = sim.classic_token("alice", &["repo", "admin:org"]);
    let s = start(Arc::new(sim), org_env(token, &[])).await;
    s.org_hook("acme");
    let (_agent, _emulator) = s.serve().await;
    let (_, first) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    s.completed(first).await;
    let (_, second) = s.sim.queue_job("acme", "app", &["self-hosted"]);
    s.completed(second).await;
    let (_, status) = get_json(&s.controller, "/status").await;
    let reg = &status["registration"];
    assert_eq!(reg["configured"], "jit", "{status}");
    assert_eq!(reg["mode"], "token", "{status}");
    assert!(
        reg["fallback"]
            .as_str()
            .is_some_and(|f| f.contains("GHES 3.10") && f.contains("RUNNER_REGISTRATION=token")),
        "{status}"
    );
}

#[tokio::test]
async fn a_users_leftover_registrations_are_swept_in_the_repositories_its_runners_used() {
    let (sim, token) = user_sim().await;
    let s = start(
        sim,
        vars(&[
            ("REPO_OWNER", "carol".into()),
            ("GITHUB_TOKEN", token),
            ("ALL_REPOS", "true".into()),
            ("OFFLINE_RUNNER_GRACE", "300ms".into()),
        ]),
    )
    .await;
    s.repo_hook("carol", "app");
    let (_agent, _emulator) = s.serve().await;
    // A job in `app` makes it a repository our runners use.
    let (_, a) = s.sim.queue_job("carol", "app", &["self-hosted"]);
    s.completed(a).await;
    // Left in `app` by a start that failed half-way (named with this installation's tag); a
    // foreign one beside it.
    let (_, status) = get_json(&s.controller, "/status").await;
    let installation = status["config"]["installation"]
        .as_str()
        .unwrap_or_default();
    let ours = s.sim.add_offline_runner(
        "carol",
        Some("app"),
        &format!("gha-carol-{installation}-0123456789ab"),
    );
    let foreign = s
        .sim
        .add_offline_runner("carol", Some("app"), "build-box-1");
    wait_until(WAIT, "our leftover in carol/app deleted", || async {
        s.sim.runners().iter().all(|r| r.id != ours)
    })
    .await;
    assert!(s.sim.runners().iter().any(|r| r.id == foreign));
    let (_, status) = get_json(&s.controller, "/status").await;
    let sweep = &status["registration_sweeps"][0];
    assert_eq!(sweep["owner"], "carol", "{status}");
    assert_eq!(
        sweep["scopes"], 1,
        "only the repository runners used: {status}"
    );
}
