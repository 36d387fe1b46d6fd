//! [`Census`]: the run's containers as the engine's events tell.

use std::collections::HashMap;

use futures::StreamExt;

use super::{TestRun, docker, label_filter};

/// One container of the run as it was when it started.
#[derive(Debug, Clone)]
pub struct StartedContainer {
    pub name: String,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: HashMap<String, String>,
    pub host_config: Option<bollard::models::HostConfig>,
    pub mounts: Vec<bollard::models::MountPoint>,
}

#[derive(Default)]
struct CensusState {
    alive: std::collections::HashSet<String>,
    max_alive: usize,
    /// The alive ones that are runners (carry a runner id): a run's images, and so the hosts
    /// started from them, carry the run's label too.
    runners_alive: std::collections::HashSet<String>,
    max_runners_alive: usize,
    started: Vec<StartedContainer>,
}

/// Follows the run's containers through the engine's events: how many were alive at most at
/// any moment, and each one's configuration at start (inspected then, before it is removed).
pub struct Census {
    state: std::sync::Arc<std::sync::Mutex<CensusState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Census {
    /// Starts counting from now (events are replayed from this instant, so none is missed).
    pub async fn start(run: &TestRun) -> Self {
        let docker = docker().await;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            .saturating_sub(1);
        let mut filters = label_filter(&run.id);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["start".into(), "die".into()]);
        let state = std::sync::Arc::new(std::sync::Mutex::new(CensusState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = docker.events(Some(bollard::query_parameters::EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(filters),
            }));
            while let Some(Ok(event)) = events.next().await {
                let Some(actor) = event.actor else { continue };
                let attributes = actor.attributes.unwrap_or_default();
                let Some(id) = actor.id else { continue };
                match event.action.as_deref() {
                    Some("start") => {
                        let inspected = docker.inspect_container(&id, None).await.ok();
                        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                        st.alive.insert(id.clone());
                        st.max_alive = st.max_alive.max(st.alive.len());
                        if attributes.contains_key(agent::runtime::docker::labels::RUNNER_ID) {
                            st.runners_alive.insert(id.clone());
                            st.max_runners_alive = st.max_runners_alive.max(st.runners_alive.len());
                        }
                        // Gone before we could look (the census lags on a loaded machine):
                        // still counted, with what the event itself says.
                        let inspected = inspected.or_else(|| {
                            Some(bollard::models::ContainerInspectResponse {
                                name: attributes.get("name").map(|n| format!("/{n}")),
                                config: Some(bollard::models::ContainerConfig {
                                    labels: Some(attributes.clone()),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            })
                        });
                        if let Some(c) = inspected {
                            let config = c.config.unwrap_or_default();
                            st.started.push(StartedContainer {
                                name: c.name.unwrap_or_default(),
                                env: config.env.unwrap_or_default(),
                                cmd: config
                                    .entrypoint
                                    .unwrap_or_default()
                                    .into_iter()
                                    .chain(config.cmd.unwrap_or_default())
                                    .chain(c.args.unwrap_or_default())
                                    .collect(),
                                labels: config.labels.unwrap_or_default(),
                                host_config: c.host_config,
                                mounts: c.mounts.unwrap_or_default(),
                            });
                        }
                    }
                    Some("die") => {
                        let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                        st.alive.remove(&id);
                        st.runners_alive.remove(&id);
                    }
                    _ => {}
                }
            }
        });
        Self { state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CensusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most containers of the run alive at once so far.
    pub fn max_alive(&self) -> usize {
        self.lock().max_alive
    }

    /// The most runner containers (those with a runner id label) alive at once so far.
    pub fn max_runners_alive(&self) -> usize {
        self.lock().max_runners_alive
    }

    /// Containers alive now.
    pub fn alive(&self) -> usize {
        self.lock().alive.len()
    }

    /// Every container that started, in order.
    pub fn started(&self) -> Vec<StartedContainer> {
        self.lock().started.clone()
    }

    /// Panics if `secret` appears in any started container's environment, command or labels.
    pub fn assert_never_given(&self, secret: &str) {
        let started = self.started();
        assert!(!started.is_empty(), "no container was inspected");
        for c in started {
            let everything = c
                .env
                .iter()
                .chain(c.cmd.iter())
                .chain(c.labels.values())
                .any(|v| v.contains(secret));
            assert!(!everything, "container {} was given the secret", c.name);
        }
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        self.task.abort();
    }
}
