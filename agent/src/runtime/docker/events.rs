//! The engine's container events, the only source of `running` and `exited` reports.
//!
//! One task subscribes to `/events` filtered by this agent's labels, always with `since`: the
//! first time from the engine's clock read just before subscribing, afterwards from just after
//! the last event seen. So nothing that happens while the engine is still registering the
//! subscription, or while the stream is down (engine restarted, socket gone), is missed: the
//! engine replays it. Each subscription reconciles once against the container list, which also
//! catches what the engine could no longer replay; health says when the stream is down. An
//! exited container is reported with its exit code first, then removed with its anonymous
//! volumes; exactly one task (the event handler or an inventory) reads and reports each exit.

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
use super::{Claim, Inner, Tracked, labels, short};
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
    // Where the next subscription starts (engine time, nanoseconds): just after the last event
    // seen, so a resubscription replays what happened meanwhile.
    let mut since: Option<i64> = None;
    loop {
        let why = match inner.engine.client().await {
            Err(e) => error_chain(&e),
            Ok(docker) => match subscribe_from(&docker, since).await {
                Err(e) => error_chain(&inner.engine.classify("read the engine's clock", e)),
                Ok(from) => {
                    since = Some(from);
                    watch_from(&inner, &docker, from, &mut since, &mut backoff).await
                }
            },
        };
        if inner.stop.is_cancelled() {
            return;
        }
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

/// Where a subscription starts: after the last event seen, or, the first time, the engine's
/// own clock now. The engine registers a subscription some time after it receives the request
/// (later still through a slow or proxied socket), so subscribing "from now" would lose what
/// happens in between — a runner's `start`, say — and no later inventory would tell. Asking
/// from an instant read before the request closes that gap: the engine replays what happened
/// since. (Not the agent's clock: the engine's may differ, and an instant before the agent
/// started would replay events about containers an inventory already settled.)
async fn subscribe_from(
    docker: &Docker,
    since: Option<i64>,
) -> Result<i64, bollard::errors::Error> {
    if let Some(t) = since {
        return Ok(t);
    }
    let info = docker.info().await?;
    Ok(info
        .system_time
        .as_deref()
        .and_then(parse_engine_time)
        .unwrap_or_else(|| {
            debug!("the engine did not give its time; using ours");
            shared::runner::now_ms().saturating_mul(1_000_000)
        }))
}

/// The engine's `SystemTime` (RFC 3339 with nanoseconds, `Z` or an offset) as Unix nanoseconds.
fn parse_engine_time(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// One subscription from `from`: reconciles against the container list once the request is
/// made (everything from `from` on arrives on the stream, so the list may be read at any time
/// after it), then handles events until the stream breaks. Returns why it broke.
async fn watch_from(
    inner: &Arc<Inner>,
    docker: &Docker,
    from: i64,
    since: &mut Option<i64>,
    backoff: &mut Backoff,
) -> String {
    let mut filters = labels::agent_filter(&inner.agent, inner.installation.as_deref());
    filters.insert("type".into(), vec!["container".into()]);
    filters.insert(
        "event".into(),
        vec!["start".into(), "die".into(), "oom".into(), "destroy".into()],
    );
    let mut stream = docker.events(Some(EventsOptions {
        since: Some(since_arg(from)),
        until: None,
        filters: Some(filters),
    }));
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
        // The stream tells whether the engine is really away.
        Err(e) => debug!(error = %error_chain(&e), "reconcile failed"),
    }
    loop {
        let item = tokio::select! {
            _ = inner.stop.cancelled() => return "stopped".to_owned(),
            item = stream.next() => item,
        };
        match item {
            Some(Ok(event)) => {
                if let Some(t) = event.time_nano {
                    // `since` is inclusive: resume just after this event.
                    *since = Some(t + 1);
                }
                handle(inner, docker, event).await;
            }
            Some(Err(e)) => return error_chain(&e),
            None => return "the engine ended the event stream".to_owned(),
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
            if let Finished::Exit(state) = finished(inner, docker, &id, &container).await {
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

/// What became of an exited container's report (see [`finished`]).
#[derive(Debug)]
pub(super) enum Finished {
    /// Its exit, read now: report it, then remove the container.
    Exit(RunnerState),
    /// Another task (the event handler, or an inventory) is reporting it right now.
    Elsewhere,
    /// Reported before; only its removal may still be due.
    AlreadyReported,
    /// Already removed, and not a runner we knew.
    Gone,
}

/// The final state of an exited container (exit code from the engine), forgetting the runner
/// and releasing its caches. Exactly one caller reads and reports each container's exit
/// (claimed under the lock), so a concurrent inventory can never remove the container under
/// the reader and make it report exit -1.
pub(super) async fn finished(
    inner: &Arc<Inner>,
    docker: &Docker,
    id: &RunnerId,
    container: &str,
) -> Finished {
    match inner.claim_finish(container) {
        Claim::Mine => {}
        Claim::InProgress => return Finished::Elsewhere,
        Claim::Reported => return Finished::AlreadyReported,
    }
    let mut inspected = docker.inspect_container(container, None).await;
    // A failure other than "gone" (a busy or briefly unreachable engine) is retried a few
    // times before the exit is reported as unknown.
    for delay in [100, 400, 1_600] {
        match &inspected {
            Err(e) if status_of(e) != Some(404) => {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                inspected = docker.inspect_container(container, None).await;
            }
            _ => break,
        }
    }
    let tracked = inner.forget(id);
    inner.mark_finished(container);
    let (exit_code, oom, name, unknown) = match inspected {
        Ok(c) => {
            let state = c.state.as_ref();
            (
                state.and_then(|s| s.exit_code).unwrap_or(-1) as i32,
                state.and_then(|s| s.oom_killed).unwrap_or(false),
                c.config
                    .as_ref()
                    .and_then(|cfg| cfg.labels.as_ref())
                    .and_then(|l| l.get(labels::RUNNER_NAME).cloned()),
                None,
            )
        }
        Err(e) if status_of(&e) == Some(404) && tracked.is_none() => return Finished::Gone,
        Err(e) if status_of(&e) == Some(404) => (
            -1,
            false,
            None,
            Some("its container was removed before its exit code could be read".to_owned()),
        ),
        Err(e) => (
            -1,
            false,
            None,
            Some(format!(
                "its exit code could not be read: {}",
                error_chain(&inner.engine.classify("inspect container", e))
            )),
        ),
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
        .or(unknown)
        .unwrap_or_default();
    info!(runner = %id, exit_code, reason = %state.reason, "runner exited");
    Finished::Exit(state)
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
