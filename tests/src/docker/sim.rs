//! [`SimRunners`]: the GitHub simulator handing out registration material for runner specs.

use std::collections::BTreeMap;
use std::time::Duration;

use shared::arch::Arch;
use shared::command::{CacheSettings, Registration, RunnerSpec};
use shared::ids::RunnerId;

use crate::github_sim::GithubSim;

/// The GitHub simulator with organization `acme`, repository `acme/app` and an admin's PAT,
/// handing out runner registration material the way the controller will.
pub struct SimRunners {
    pub sim: GithubSim,
    /// The owner's PAT: it must never reach a runner container.
    pub pat: String,
    http: reqwest::Client,
}

impl SimRunners {
    /// On 127.0.0.1 (runners on the host network reach it).
    pub async fn start() -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// On `ip`, e.g. the gateway of a Docker network the test created.
    pub async fn start_on(ip: std::net::IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("simulator binds");
        let sim = GithubSim::serve(listener, "").expect("simulator starts");
        sim.add_org("acme", &["alice"], &[]);
        sim.add_repo("acme", "app", true);
        let pat = sim.classic_token("alice", &["repo", "admin:org"]);
        Self {
            sim,
            pat,
            http: reqwest::Client::new(),
        }
    }

    /// Queues a one-job run of `acme/app` whose job takes `duration` on its runner.
    pub fn queue(&self, labels: &[&str], duration: Duration) -> u64 {
        let (_, job) = self.sim.queue_job("acme", "app", labels);
        self.sim.set_job_duration(job, duration);
        job
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.http
            .post(format!("{}{path}", self.sim.api_url()))
            .bearer_auth(&self.pat)
            .json(&body)
            .send()
            .await
            .expect("simulator answers")
            .error_for_status()
            .expect("simulator accepts")
            .json()
            .await
            .expect("JSON answer")
    }

    /// A JIT config for a runner `name` with `labels` (what the controller asks GitHub for).
    pub async fn jit_config(&self, name: &str, labels: &[&str]) -> String {
        let answer = self
            .post(
                "/repos/acme/app/actions/runners/generate-jitconfig",
                serde_json::json!({"name": name, "runner_group_id": 1, "labels": labels}),
            )
            .await;
        answer["encoded_jit_config"]
            .as_str()
            .expect("encoded_jit_config")
            .to_owned()
    }

    /// A repository registration token (myoung34-style images).
    pub async fn registration_token(&self) -> String {
        let answer = self
            .post(
                "/repos/acme/app/actions/runners/registration-token",
                serde_json::json!({}),
            )
            .await;
        answer["token"].as_str().expect("token").to_owned()
    }

    /// `http://127.0.0.1:PORT/acme/app`, the repository URL runners register to.
    pub fn repo_url(&self) -> String {
        format!("http://{}/acme/app", self.sim.addr())
    }

    /// A runner spec for `image` with a JIT config from the simulator.
    pub async fn jit_spec(&self, id: &str, image: &str, labels: &[&str]) -> RunnerSpec {
        let name = format!("gha-{id}");
        let jit = self.jit_config(&name, labels).await;
        runner_spec(id, &name, image, Registration::JitConfig(jit), labels)
    }

    /// A runner spec for `image` with a registration token from the simulator.
    pub async fn token_spec(&self, id: &str, image: &str, labels: &[&str]) -> RunnerSpec {
        let token = self.registration_token().await;
        runner_spec(
            id,
            &format!("gha-{id}"),
            image,
            Registration::Token {
                token,
                url: self.repo_url(),
                runner_group: String::new(),
            },
            labels,
        )
    }
}

/// A spec with a one-hour timeout, no caches, for owner `acme`'s repository `app` on amd64.
pub fn runner_spec(
    id: &str,
    name: &str,
    image: &str,
    registration: Registration,
    labels: &[&str],
) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).expect("runner id"),
        name: name.to_owned(),
        image: image.to_owned(),
        launch: Default::default(),
        registration,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(3600),
        cache: CacheSettings::default(),
        arch: Arch::Amd64,
        owner: "acme".into(),
        repository: Some("app".into()),
    }
}
