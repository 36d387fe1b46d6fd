//! "A field we read is a field GitHub sends": the client's types parse GitHub's own REST examples,
//! and the simulator's webhook payloads carry every key of the real payloads they are built from.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::github::{
    Hook, HookDelivery, JitConfig, Job, RateLimitStatus, Repository, Runner, RunnerToken,
    WorkflowRun,
};
use tests::github_sim::{GithubSim, Received, WebhookRecorder};

fn fixture(path: &str) -> Value {
    let path = format!(
        "{}/src/github_sim/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn parse<T: DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(value.clone()).unwrap()
}

#[test]
fn client_types_parse_githubs_rest_examples() {
    let runners = fixture("rest/actions__list-self-hosted-runners-for-repo__200__default.json");
    let runners: Vec<Runner> = parse(&runners["runners"]);
    assert_eq!(runners.len(), 2);
    assert!(runners[0].busy && runners[0].ephemeral == Some(false));
    assert_eq!(runners[1].label_names().last(), Some("no-gpu"));

    let jit: JitConfig = parse(&fixture(
        "rest/actions__generate-runner-jitconfig-for-repo__201__default.json",
    ));
    assert_eq!(jit.encoded_jit_config.expose(), "abc123");
    assert_eq!(jit.runner.version, None, "never connected: no version");

    let token: RunnerToken = parse(&fixture(
        "rest/actions__create-registration-token-for-repo__201__default.json",
    ));
    assert_eq!(token.expires_at, "2020-01-22T12:13:35.123-08:00");

    let jobs = fixture("rest/actions__list-jobs-for-workflow-run__200__default.json");
    let jobs: Vec<Job> = parse(&jobs["jobs"]);
    assert_eq!(jobs[0].labels, ["self-hosted", "foo", "bar"]);
    assert_eq!(
        jobs[0].runner_group_name.as_deref(),
        Some("my runner group")
    );

    let runs = fixture("rest/actions__list-workflow-runs-for-repo__200__default.json");
    let runs: Vec<WorkflowRun> = parse(&runs["workflow_runs"]);
    assert_eq!(runs[0].status.as_deref(), Some("queued"));

    let repos: Vec<Repository> = parse(&fixture("rest/repos__list-for-org__200__default.json"));
    assert_eq!(repos[0].full_name, "octocat/Hello-World");
    assert!(repos[0].permissions.is_some());
    let repo: Repository = parse(&fixture("rest/repos__get__200__default-response.json"));
    assert_eq!(repo.owner.login, "octocat");
    let inst = fixture("rest/apps__list-repos-accessible-to-installation__200__default.json");
    let _: Vec<Repository> = parse(&inst["repositories"]);

    let hooks: Vec<Hook> = parse(&fixture("rest/repos__list-webhooks__200__default.json"));
    assert_eq!(hooks[0].kind.as_deref(), Some("Repository"));
    let org_hooks: Vec<Hook> = parse(&fixture("rest/orgs__list-webhooks__200__default.json"));
    assert_eq!(org_hooks[0].kind.as_deref(), Some("Organization"));

    let deliveries: Vec<HookDelivery> = parse(&fixture(
        "rest/repos__list-webhook-deliveries__200__default.json",
    ));
    assert_eq!(
        deliveries[0].guid, deliveries[1].guid,
        "redelivery keeps the GUID"
    );
    assert!(deliveries[1].redelivery && deliveries[0].succeeded());

    let limits: RateLimitStatus = parse(&fixture("rest/rate-limit__get__200__default.json"));
    assert_eq!(limits.resources["actions_runner_registration"].limit, 10000);
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Keys of `real` missing from `ours`.
fn missing(real: &Value, ours: &Value) -> Vec<String> {
    keys(real).difference(&keys(ours)).cloned().collect()
}

#[tokio::test]
async fn simulated_webhooks_carry_every_key_of_the_real_payloads() {
    let sim = GithubSim::start().await.unwrap();
    sim.add_org("acme", &["alice"], &[]);
    sim.add_repo("acme", "app", false);
    let recorder = WebhookRecorder::start().await.unwrap();
    sim.add_hook("acme", None, recorder.url(), None, "json", &["*"]);
    let (_, _) = sim.queue_job("acme", "app", &["self-hosted"]);
    let got = recorder.wait_for(2, Duration::from_secs(10)).await;
    let by_kind = |k: &str| -> Value {
        got.iter()
            .find(|r| r.kind() == k)
            .map(Received::json)
            .unwrap()
    };

    let real_run = fixture("webhooks/workflow_run.requested.json");
    let ours = by_kind("workflow_run.requested");
    assert_eq!(missing(&real_run, &ours), Vec::<String>::new());
    assert_eq!(
        missing(&real_run["workflow_run"], &ours["workflow_run"]),
        Vec::<String>::new()
    );
    assert_eq!(
        missing(&real_run["workflow"], &ours["workflow"]),
        Vec::<String>::new()
    );

    let real_job = fixture("webhooks/workflow_job.completed.success.json");
    let ours = by_kind("workflow_job.queued");
    assert_eq!(missing(&real_job, &ours), Vec::<String>::new());
    assert_eq!(
        missing(&real_job["workflow_job"], &ours["workflow_job"]),
        Vec::<String>::new()
    );
    assert_eq!(
        missing(&real_job["repository"], &ours["repository"]),
        Vec::<String>::new()
    );
    assert_eq!(
        missing(&real_job["organization"], &ours["organization"]),
        Vec::<String>::new()
    );
    assert_eq!(
        missing(&real_job["sender"], &ours["sender"]),
        Vec::<String>::new()
    );
    // No URL still points at github.com.
    let text = ours.to_string();
    assert!(!text.contains("api.github.com"), "{text}");
}
