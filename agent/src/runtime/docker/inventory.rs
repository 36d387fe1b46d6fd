//! Inventory and strays: which containers of this agent exist, adopting the running ones.
//!
//! Run when the agent starts and whenever the event stream is (re)established, so a restarted
//! agent, or one whose engine was away, picks up exactly where the engine is: running
//! containers adopted (tracked, timeout re-armed), exited ones reported and removed,
//! never-started ones removed. Strays (created for another controller id) go after a grace
//! period.

use std::sync::Arc;

use bollard::models::ContainerSummaryStateEnum;
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tracing::{info, warn};

use super::engine::DockerError;
use super::{Inner, Tracked, events, labels, short, unix_now};

impl Inner {
    /// Every container of this agent as a runner state; running ones are adopted (tracked,
    /// timeout re-armed), exited ones are reported and removed, never-started ones removed.
    pub(super) async fn inventory(self: &Arc<Self>) -> Result<Vec<RunnerState>, DockerError> {
        let docker = self.engine.client().await?;
        let containers = docker
            .list_containers(Some(self.list_options()))
            .await
            .map_err(|e| self.engine.classify("list runner containers", e))?;
        let mut states = Vec::new();
        for c in containers {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(id), Some(container)) = (
                labels
                    .get(labels::RUNNER_ID)
                    .and_then(|v| RunnerId::parse(v).ok()),
                c.id.clone(),
            ) else {
                continue;
            };
            let name = labels.get(labels::RUNNER_NAME).cloned().unwrap_or_default();
            match c.state {
                Some(
                    ContainerSummaryStateEnum::RUNNING
                    | ContainerSummaryStateEnum::PAUSED
                    | ContainerSummaryStateEnum::RESTARTING,
                ) => {
                    let adopted = {
                        let mut st = self.lock();
                        let fresh = !st.runners.contains_key(&id);
                        let entry = st.runners.entry(id.clone()).or_insert_with(|| Tracked {
                            name: name.clone(),
                            container: None,
                            caches: Vec::new(),
                            ending: None,
                            timer: None,
                        });
                        entry.container = Some(container.clone());
                        entry.caches = labels
                            .get(labels::CACHE_VOLUMES)
                            .map(|v| v.split(',').map(str::to_owned).collect())
                            .unwrap_or_default();
                        fresh
                    };
                    if adopted {
                        info!(runner = %id, container = %short(&container), "adopted a running runner");
                        let deadline = labels
                            .get(labels::DEADLINE)
                            .and_then(|d| d.parse().ok())
                            .unwrap_or(i64::MAX / 2);
                        self.arm_timeout(&id, deadline);
                    }
                    states.push(RunnerState::new(id, name, RunnerPhase::Running));
                }
                Some(ContainerSummaryStateEnum::CREATED)
                    if self.lock().runners.contains_key(&id) =>
                {
                    // Being started right now by this agent.
                }
                Some(ContainerSummaryStateEnum::CREATED) => {
                    let mut failed = RunnerState::new(id, name, RunnerPhase::Failed);
                    failed.reason = "its container was created but never started".into();
                    states.push(failed);
                    events::remove(self, &docker, &container).await;
                }
                _ => {
                    // Reported before it is removed, so an agent that dies in between reports
                    // it again next time.
                    match events::finished(self, &docker, &id, &container).await {
                        events::Finished::Exit(state) => {
                            self.sink.report(state.clone()).await;
                            states.push(state);
                            events::remove(self, &docker, &container).await;
                        }
                        // Reported before: its removal may have failed (engine away).
                        events::Finished::AlreadyReported => {
                            events::remove(self, &docker, &container).await;
                        }
                        // The event handler reports and removes it; removing it here could
                        // take it away before the handler read its exit code.
                        events::Finished::Elsewhere | events::Finished::Gone => {}
                    }
                }
            }
        }
        Ok(states)
    }

    /// Removes containers of this agent that the current controller cannot know: created for
    /// another controller id, older than the grace period.
    pub(super) async fn sweep_strays(self: &Arc<Self>) -> Result<(), DockerError> {
        let controller = self.lock().controller.clone();
        if controller.is_empty() {
            return Ok(());
        }
        let docker = self.engine.client().await?;
        let containers = docker
            .list_containers(Some(self.list_options()))
            .await
            .map_err(|e| self.engine.classify("list runner containers", e))?;
        let grace = self.settings.stray_grace.as_secs() as i64;
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let theirs = labels.get(labels::CONTROLLER).cloned().unwrap_or_default();
            let old_enough = c.created.is_some_and(|t| unix_now() - t >= grace);
            let (Some(container), true, true) = (c.id, theirs != controller, old_enough) else {
                continue;
            };
            warn!(
                container = %short(&container),
                created_for = %theirs,
                "removing a stray runner container: it was created for another controller"
            );
            if let Some(id) = labels
                .get(labels::RUNNER_ID)
                .and_then(|v| RunnerId::parse(v).ok())
                && let Some(t) = self.lock().runners.get_mut(&id)
            {
                t.ending = Some(format!("stray: created for controller {theirs:?}"));
            }
            self.stop_container(&container).await;
            events::remove(self, &docker, &container).await;
        }
        Ok(())
    }
}
