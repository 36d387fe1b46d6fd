//! [`DockerSetup`]: a controller, the simulator, the run guard and the runner image.

use std::time::{Duration, Instant};

use shared::command::RunnerSpec;

use super::{DockerAgent, RunnerLayout, SimRunners, TestRun, WEBHOOK_PATH};

/// The seed's default `RUNNER_IMAGE`.
pub const SEED_DEFAULT_IMAGE: &str = "myoung34/github-runner:ubuntu-noble";
use crate::harness::AgentTls;

/// Everything a Docker test needs: a controller (with its own controller id), the simulator,
/// the run's label guard and runner image, and the test's PKI.
pub struct DockerSetup {
    pub controller: crate::harness::TestController,
    pub sim: SimRunners,
    pub ca: crate::pki::TestCa,
    pub image: String,
    /// Dropped after the controller: removes what the test created.
    pub run: TestRun,
    pub dir: tempfile::TempDir,
}

impl DockerSetup {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra controller variables (`CONTROLLER_ID`, …).
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_inner(extra, false, false).await
    }

    /// The whole system for the scheduler's end-to-end tests (issue 4): a controller that
    /// uses the simulator as its GitHub (`GITHUB_API_URL`, owner `acme` with the simulator's
    /// PAT, all repositories), runs the test runner image (`RUNNER_IMAGE`) with `max_runners`
    /// runners at most, and an organization hook from the simulator to its `/webhook`
    /// ([`WEBHOOK_PATH`]) for `workflow_job` and `workflow_run`, signed with
    /// [`crate::harness::TEST_WEBHOOK_SECRET`]. `extra` adds or overrides controller variables
    /// (`RUNNER_REGISTRATION=token`, …).
    pub async fn start_e2e(max_runners: u32, extra: &[(&str, &str)]) -> Self {
        let max = max_runners.to_string();
        let mut vars: Vec<(&str, &str)> = vec![("MAX_RUNNERS", max.as_str())];
        vars.extend_from_slice(extra);
        Self::start_inner(&vars, true, false).await
    }

    /// [`Self::start_e2e`] with the seed's `.env` as it is: no `RUNNER_IMAGE`, so the controller
    /// runs its default [`SEED_DEFAULT_IMAGE`], which this makes locally with the myoung34
    /// layout (removed with the run). Only one test may use it at a time: the tag is global.
    pub async fn start_e2e_default_image(max_runners: u32, extra: &[(&str, &str)]) -> Self {
        let max = max_runners.to_string();
        let mut vars: Vec<(&str, &str)> = vec![("MAX_RUNNERS", max.as_str())];
        vars.extend_from_slice(extra);
        Self::start_inner(&vars, true, true).await
    }

    async fn start_inner(extra: &[(&str, &str)], wired: bool, default_image: bool) -> Self {
        crate::harness::init();
        let run = TestRun::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = crate::pki::TestCa::new(&dir.path().join("pki"), "test CA");
        let server = ca.server();
        let image = if default_image {
            run.import(RunnerLayout::Myoung34, SEED_DEFAULT_IMAGE).await;
            SEED_DEFAULT_IMAGE.to_owned()
        } else {
            run.runner_image().await
        };
        let sim = SimRunners::start().await;
        let mut env =
            crate::harness::controller_env(&dir.path().join("state"), &ca.ca_file(), &server);
        env.insert("CONTROLLER_ID".into(), format!("ctl-{}", run.id));
        if wired {
            for (k, v) in [
                ("REPO_OWNER", "acme".to_owned()),
                ("ALL_REPOS", "true".to_owned()),
                ("GITHUB_TOKEN", sim.pat.clone()),
                (
                    "WEBHOOK_SECRET",
                    crate::harness::TEST_WEBHOOK_SECRET.to_owned(),
                ),
                ("GITHUB_API_URL", sim.sim.api_url().to_owned()),
            ] {
                env.insert(k.into(), v);
            }
            if !default_image {
                env.insert("RUNNER_IMAGE".into(), image.clone());
            }
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let controller = crate::harness::TestController::start(env).await;
        if wired {
            sim.sim.add_hook(
                "acme",
                None,
                &format!("http://{}{WEBHOOK_PATH}", controller.http_addr),
                Some(crate::harness::TEST_WEBHOOK_SECRET),
                "json",
                &["workflow_job", "workflow_run"],
            );
        }
        Self {
            controller,
            sim,
            ca,
            image,
            run,
            dir,
        }
    }

    /// Queues one single-job run per entry of `labels` (cycled `count` times), each job taking
    /// `duration` on its runner; returns the job ids.
    pub fn queue_mixed(&self, count: usize, labels: &[&[&str]], duration: Duration) -> Vec<u64> {
        (0..count)
            .map(|i| self.sim.queue(labels[i % labels.len()], duration))
            .collect()
    }

    /// Waits until every job in `jobs` is completed in the simulator.
    pub async fn wait_jobs_completed(&self, jobs: &[u64], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let pending: Vec<u64> = jobs
                .iter()
                .copied()
                .filter(|j| {
                    self.sim
                        .sim
                        .job(*j)
                        .is_none_or(|job| job.status != "completed")
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "jobs not completed after {timeout:?}: {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// TLS files for an agent named `name`.
    pub fn tls(&self, name: &str) -> AgentTls {
        let cert = self.ca.client(name, &[]);
        AgentTls {
            ca: self.ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        }
    }

    /// A Docker agent named `name` for this controller.
    pub fn agent(&self, name: &str, extra: &[(&str, &str)]) -> DockerAgent {
        DockerAgent::start(
            &self.controller.grpc_url(),
            &self.tls(name),
            name,
            &self.run,
            extra,
        )
    }

    /// Sends a command to agent `name` through the controller.
    pub fn send(&self, agent: &str, command: shared::command::AgentCommand) {
        let name = shared::ids::AgentName::parse(agent).expect("agent name");
        self.controller
            .registry
            .send(&name, command)
            .expect("command queued for the agent");
    }

    /// Starts `spec` on agent `name`.
    pub fn start_runner(&self, agent: &str, spec: RunnerSpec) {
        self.send(
            agent,
            shared::command::AgentCommand::StartRunner(Box::new(spec)),
        );
    }

    /// The controller's view of runner `id` on agent `agent`.
    pub async fn runner(&self, agent: &str, id: &str) -> Option<serde_json::Value> {
        self.controller.agent(agent).await.and_then(|a| {
            a["runners"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["id"] == id).cloned())
        })
    }

    /// Waits until the controller sees runner `id` in `phase`; returns its view.
    pub async fn wait_runner(
        &self,
        agent: &str,
        id: &str,
        phase: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.runner(agent, id).await;
            if let Some(r) = seen.as_ref().filter(|r| r["phase"] == phase) {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for runner {id} on {agent} to be {phase}; \
                 last seen: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no container of this run is left.
    pub async fn wait_no_containers(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.run.containers().await;
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containers left behind after {timeout:?}: {:?}",
                left.iter()
                    .map(|c| (&c.names, &c.state))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
