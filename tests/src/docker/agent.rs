//! [`DockerAgent`]: a real agent with the Docker runtime, killable like a process.

use std::time::Duration;

use agent::AgentStatus;
use agent::config::AgentConfig;
use agent::runtime::docker::DockerRuntime;
use agent::runtime::docker::config::DockerSettings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{DOCKER_SOCKET, TestRun};
use crate::harness::{AgentTls, vars};

/// A real agent with the Docker runtime, on a runtime of its own.
pub struct DockerAgent {
    pub name: String,
    pub status: watch::Receiver<AgentStatus>,
    pub drain: CancellationToken,
    shutdown: CancellationToken,
    tokio: Option<tokio::runtime::Runtime>,
    outcome: Option<tokio::task::JoinHandle<Result<(), agent::AgentError>>>,
}

impl DockerAgent {
    /// Starts an agent named `name` (its certificate's identity) with `extra` variables
    /// (`DOCKER_HOST`, `RUNNER_NETWORK`, …) on top of the test's defaults; the run's label is
    /// put on everything it creates.
    pub fn start(
        controller_url: &str,
        tls: &AgentTls,
        name: &str,
        run: &TestRun,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut env = vars(&[
            ("CONTROLLER_URL", controller_url.to_owned()),
            ("TLS_CA_FILE", tls.ca.display().to_string()),
            ("TLS_CERT_FILE", tls.cert.display().to_string()),
            ("TLS_KEY_FILE", tls.key.display().to_string()),
            ("AGENT_ARCH", "amd64".into()),
            ("RECONNECT_MIN_BACKOFF", "50ms".into()),
            ("RECONNECT_MAX_BACKOFF", "300ms".into()),
            ("DOCKER_HOST", format!("unix://{DOCKER_SOCKET}")),
            ("RUNNER_NETWORK", "host".into()),
            ("RUNNER_STOP_GRACE", "1s".into()),
            ("RUNNER_CONTAINER_LABELS", run.label_pair()),
            ("CACHE_VOLUME_PREFIX", format!("gha-test-{}", run.id)),
        ]);
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let config = AgentConfig::from_env(&env).expect("valid agent config");
        let settings = DockerSettings::from_env(&env).expect("valid docker settings");
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("agent runtime");
        let agent = {
            let _inside = tokio.enter();
            agent::Agent::new(config, |sink| DockerRuntime::new(settings, name, sink))
        };
        let status = agent.status();
        let drain = agent.drain_token();
        let shutdown = CancellationToken::new();
        let outcome = tokio.spawn(agent.run(shutdown.clone()));
        Self {
            name: name.to_owned(),
            status,
            drain,
            shutdown,
            tokio: Some(tokio),
            outcome: Some(outcome),
        }
    }

    /// Kills the agent like a process: every task and socket dropped at once. Its containers
    /// are left as they are.
    pub fn kill(&mut self) {
        if let Some(rt) = self.tokio.take() {
            rt.shutdown_background();
        }
    }

    /// Asks the agent to stop (gracefully, as on SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.outcome.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        self.kill();
    }

    /// Waits until the agent's status satisfies `f`.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&AgentStatus) -> bool,
    ) -> AgentStatus {
        let mut rx = self.status.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| f(s))).await {
            Ok(Ok(s)) => s.clone(),
            _ => panic!(
                "timed out after {timeout:?} waiting for agent {}: {what}; last: {:?}",
                self.name,
                *self.status.borrow()
            ),
        }
    }

    /// Waits for the agent's run to end and returns how it ended.
    pub async fn exited(&mut self, timeout: Duration) -> Result<(), agent::AgentError> {
        let handle = self.outcome.take().expect("agent outcome taken once");
        tokio::time::timeout(timeout, handle)
            .await
            .expect("agent exits in time")
            .expect("agent task did not panic")
    }

    /// Whether the agent's run has ended.
    pub fn has_exited(&self) -> bool {
        self.outcome.as_ref().is_none_or(|h| h.is_finished())
    }
}

impl Drop for DockerAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
}
