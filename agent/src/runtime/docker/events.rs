//! The engine's container events, the only source of `running` and `exited` reports.
//!
//! One task subscribes to `/events` filtered by this agent's labels. When the stream breaks
//! (engine restarted, socket gone) it says so through `health`, resubscribes with backoff from
//! the last event's time (the engine replays what we missed) and reconciles once against the
//! container list, which also catches what the engine could not replay. An exited container is
//! reported with its exit code first, then removed with its anonymous volumes.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, RemoveContainerOptions};
use futures::StreamExt;
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tracing::{debug, info, warn};

use super::engine::status_of;
use super::{Inner, Tracked, labels, short};
use crate::backoff::Backoff;
use crate::connection::error_chain;

/// `seconds.nanoseconds`, the form `since` takes.
fn since_arg(time_nano: i64) -> String {
    format!(
        "{}.{:09}",
        time_nano / 1_000_000_000,
        time_nano % 1_000_000_000
    )
}

pub(super) async fn watch(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // The time of the last event seen, so a resubscription replays what happened meanwhile.
    let mut since: Option<i64> = None;
    loop {
        let why = match inner.engine.client().await {
            Err(e) => error_chain(&e),
            Ok(docker) => {
                let mut filters = labels::agent_filter(&inner.agent);
                filters.insert("type".into(), vec!["container".into()]);
                filters.insert(
                    "event".into(),
                    vec!["start".into(), "die".into(), "oom".into(), "destroy".into()],
                );
                let mut stream = docker.events(Some(EventsOptions {
                    since: since.map(since_arg),
                    until: None,
                    filters: Some(filters),
                }));
                // The subscription is sent on the first poll; reconcile once it is in place.
                let mut reconciled = false;
                let first = tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    item = stream.next() => Some(item),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => None,
                };
                let mut pending = first.flatten();
                loop {
                    if !reconciled && pending.as_ref().is_none_or(|r| r.is_ok()) {
                        reconciled = true;
                        match inner.inventory().await {
                            Ok(states) => {
                                if inner.lock().watch_error.take().is_some() {
                                    info!("watching container events again");
                                }
                                backoff.reset();
                                for state in states {
                                    inner.sink.report(state).await;
                                }
                            }
                            Err(e) => debug!(error = %error_chain(&e), "reconcile failed"),
                        }
                    }
                    let item = match pending.take() {
                        Some(item) => Some(item),
                        None => tokio::select! {
                            _ = inner.stop.cancelled() => return,
                            item = stream.next() => item,
                        },
                    };
                    match item {
                        Some(Ok(event)) => {
                            if let Some(t) = event.time_nano {
                                // `since` is inclusive: resume just after this event.
                                since = Some(t + 1);
                            }
                            handle(&inner, &docker, event).await;
                        }
                        Some(Err(e)) => break error_chain(&e),
                        None => break "the engine ended the event stream".to_owned(),
                    }
                }
            }
        };
        let first_failure = inner.lock().watch_error.replace(why.clone()).is_none();
        if first_failure {
            warn!(reason = %why, "lost the Docker event stream; runners keep running, retrying");
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn handle(inner: &Arc<Inner>, docker: &Docker, event: EventMessage) {
    let Some(actor) = event.actor else { return };
    let attributes = actor.attributes.unwrap_or_default();
    let (Some(container), Some(id)) = (
        actor.id,
        attributes
            .get(labels::RUNNER_ID)
            .and_then(|v| RunnerId::parse(v).ok()),
    ) else {
        return;
    };
    let name = attributes
        .get(labels::RUNNER_NAME)
        .cloned()
        .unwrap_or_default();
    let action = event.action.unwrap_or_default();
    debug!(runner = %id, %action, container = %short(&container), "container event");
    if inner.is_finished(&container) {
        // A replay (after a resubscription) about a container already reported and removed.
        return;
    }
    match action.as_str() {
        "start" => {
            {
                let mut st = inner.lock();
                let t = st.runners.entry(id.clone()).or_insert_with(|| Tracked {
                    name: name.clone(),
                    container: None,
                    caches: Vec::new(),
                    ending: None,
                    timer: None,
                });
                t.container = Some(container.clone());
            }
            inner
                .sink
                .report(RunnerState::new(id, name, RunnerPhase::Running))
                .await;
        }
        "oom" => {
            if let Some(t) = inner.lock().runners.get_mut(&id) {
                t.ending.get_or_insert_with(|| "out of memory".into());
            }
        }
        "die" => {
            if let Some(state) = finished(inner, docker, &id, &container).await {
                inner.sink.report(state).await;
                remove(inner, docker, &container).await;
            }
        }
        "destroy" => {
            // Our own removals come after the runner was forgotten; anything else is a
            // container removed behind our back before we saw it exit.
            if let Some(t) = inner.forget(&id) {
                let mut lost = RunnerState::new(id, t.name, RunnerPhase::Failed);
                lost.reason = "its container was removed outside the agent".into();
                inner.sink.report(lost).await;
            }
        }
        _ => {}
    }
}

/// The final state of an exited container (exit code from the engine), forgetting the runner
/// and releasing its caches; `None` when the container is already gone and was not tracked.
pub(super) async fn finished(
    inner: &Arc<Inner>,
    docker: &Docker,
    id: &RunnerId,
    container: &str,
) -> Option<RunnerState> {
    if inner.is_finished(container) {
        return None;
    }
    let inspected = docker.inspect_container(container, None).await;
    let tracked = inner.forget(id);
    inner.mark_finished(container);
    let (exit_code, oom, name) = match &inspected {
        Ok(c) => {
            let state = c.state.as_ref();
            (
                state.and_then(|s| s.exit_code).unwrap_or(-1) as i32,
                state.and_then(|s| s.oom_killed).unwrap_or(false),
                c.config
                    .as_ref()
                    .and_then(|cfg| cfg.labels.as_ref())
                    .and_then(|l| l.get(labels::RUNNER_NAME).cloned()),
            )
        }
        Err(e) if status_of(e) == Some(404) && tracked.is_none() => return None,
        Err(_) => (-1, false, None),
    };
    let name = tracked
        .as_ref()
        .map(|t| t.name.clone())
        .or(name)
        .unwrap_or_default();
    let mut state = RunnerState::new(id.clone(), name, RunnerPhase::Exited);
    state.exit_code = Some(exit_code);
    state.reason = tracked
        .and_then(|t| t.ending)
        .or_else(|| oom.then(|| "out of memory".to_owned()))
        .unwrap_or_default();
    info!(runner = %id, exit_code, reason = %state.reason, "runner exited");
    Some(state)
}

/// Removes a container and its anonymous volumes.
pub(super) async fn remove(inner: &Inner, docker: &Docker, container: &str) {
    let removed = docker
        .remove_container(
            container,
            Some(RemoveContainerOptions {
                v: true,
                force: true,
                link: false,
            }),
        )
        .await;
    match removed {
        Ok(()) => debug!(container = %short(container), "removed runner container"),
        Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
        Err(e) => warn!(
            container = %short(container),
            error = %error_chain(&inner.engine.classify("remove container", e)),
            "cannot remove a runner container"
        ),
    }
}
