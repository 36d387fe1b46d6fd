//! [`DockerAgent`]: a real agent with the Docker runtime, killable like a process.

use agent::config::AgentConfig;
use agent::runtime::docker::DockerRuntime;
use agent::runtime::docker::config::DockerSettings;

use super::{DOCKER_SOCKET, TestRun};
use crate::harness::{AgentTls, IsolatedAgent, agent_env, agent_runtime};

/// A real agent with the Docker runtime, on a runtime of its own.
pub struct DockerAgent {
    agent: IsolatedAgent,
}

impl std::ops::Deref for DockerAgent {
    type Target = IsolatedAgent;

    fn deref(&self) -> &IsolatedAgent {
        &self.agent
    }
}

impl std::ops::DerefMut for DockerAgent {
    fn deref_mut(&mut self) -> &mut IsolatedAgent {
        &mut self.agent
    }
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
        let mut env = agent_env(controller_url, tls);
        for (k, v) in [
            ("DOCKER_HOST", format!("unix://{DOCKER_SOCKET}")),
            ("RUNNER_NETWORK", "host".into()),
            ("RUNNER_STOP_GRACE", "1s".into()),
            ("RUNNER_CONTAINER_LABELS", run.label_pair()),
            ("CACHE_VOLUME_PREFIX", format!("gha-test-{}", run.id)),
        ] {
            env.insert(k.to_owned(), v);
        }
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let config = AgentConfig::from_env(&env).expect("valid agent config");
        let settings = DockerSettings::from_env(&env).expect("valid docker settings");
        let tokio = agent_runtime();
        let agent = {
            let _inside = tokio.enter();
            // As `gha-agent` does: the installation from the CA the agent trusts.
            let installation = agent::runtime::docker::labels::installation_id(
                env.get("INSTALLATION_ID").map(String::as_str),
                &config.tls.ca_file,
            )
            .expect("an installation id");
            agent::Agent::new(config, |sink| {
                DockerRuntime::for_installation(settings, name, Some(installation), sink)
            })
        };
        Self {
            agent: IsolatedAgent::spawn(name, tokio, agent),
        }
    }
}
