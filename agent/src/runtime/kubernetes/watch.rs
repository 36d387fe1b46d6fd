//! The runtime's one long-lived task: it watches this agent's pods with kube-runtime's
//! [`watcher`] (list, then watch from the list's resourceVersion; a dropped stream is resumed
//! from the last version seen, a stale version relists) and keeps a reflector store of them.
//!
//! On every pod change it reports the runner's state if it moved, and deletes a finished pod
//! once its end is reported (its Secret follows through the owner reference). A pod being
//! deleted reports its end from the Delete event. Once the first list is complete, and then on a
//! timer, it sweeps: pods stuck Pending past the limit are failed and deleted, and registration
//! Secrets without an owner are handed to their pod, or deleted when old and podless.
//! Everything it does is idempotent, so a relist after a gap just catches up.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, LogParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::objects;
use super::status::{pending_reason, pod_phase, runner_of, runner_state};
use super::{Context, api_message, is_not_found};

/// A Secret without an owner this old lost its pod (the agent stopped between the two).
const ORPHAN_SECRET_AGE: Duration = Duration::from_secs(120);
/// How much of a failed runner's log is kept (in the agent's log) before its pod goes, and how
/// long the watch waits for it.
const LOG_TAIL_LINES: i64 = 20;
const LOG_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) struct PodWatch {
    ctx: Arc<Context>,
    /// What was last reported per runner, so unchanged pod updates are not re-sent.
    reported: HashMap<RunnerId, RunnerState>,
    /// Runners listed since the last `Init`; at `InitDone` the others are known to be gone.
    relisted: Option<HashSet<RunnerId>>,
    /// Whether the store holds a complete list yet: sweeping before would take every secret
    /// for an orphan.
    listed: bool,
}

impl PodWatch {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            reported: HashMap::new(),
            relisted: None,
            listed: false,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let config = watcher::Config::default().labels(&self.ctx.who.selector());
        let (store, writer) = reflector::store();
        let events = reflector::reflector(writer, watcher::watcher(self.ctx.pods(), config))
            .default_backoff();
        let mut events = pin!(events);
        let period = (self.ctx.settings.pending_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let first_list = matches!(event, Event::InitDone) && !self.listed;
                        self.on_event(event).await;
                        if first_list {
                            // Right after (re)starting: clean up what was left meanwhile.
                            self.listed = true;
                            self.sweep(&store).await;
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "the pod watch failed; it resumes after a backoff"),
                    None => break,
                },
                _ = sweep.tick(), if self.listed => self.sweep(&store).await,
            }
        }
        debug!("pod watch stopped");
    }

    async fn on_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(seen), Some((id, _))) = (self.relisted.as_mut(), runner_of(&pod)) {
                    seen.insert(id);
                }
                self.observe(&pod).await;
            }
            Event::InitDone => {
                let seen = self.relisted.take().unwrap_or_default();
                let gone: Vec<RunnerState> = self
                    .reported
                    .values()
                    .filter(|s| !seen.contains(&s.id))
                    .cloned()
                    .collect();
                for state in gone {
                    self.gone(state.id.clone(), state.name.clone()).await;
                }
            }
            Event::Apply(pod) => self.observe(&pod).await,
            Event::Delete(pod) => self.deleted(&pod).await,
        }
    }

    /// Reports a pod's state if it changed; deletes it once finished.
    async fn observe(&mut self, pod: &Pod) {
        let Some(state) = runner_state(pod) else {
            warn!(pod = ?pod.metadata.name, "a pod with our labels but no runner annotations; leaving it alone");
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            // Being deleted (a stop, or someone's `kubectl delete`): the container may be
            // dying of the SIGTERM. Its end is reported from the Delete event, which knows why.
            return;
        }
        self.report(state.clone()).await;
        if state.phase == RunnerPhase::Failed {
            self.log_tail(pod, &state.id).await;
        }
        if state.phase.is_terminal() {
            self.delete_pod(pod, &state.id).await;
        }
    }

    /// Logs the end of a failed runner's output: deleting its pod is about to lose it. (Only in
    /// the agent's log: runner output is not for the controller.)
    async fn log_tail(&self, pod: &Pod, id: &RunnerId) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let params = LogParams {
            container: Some(objects::RUNNER_CONTAINER.into()),
            tail_lines: Some(LOG_TAIL_LINES),
            ..LogParams::default()
        };
        match tokio::time::timeout(LOG_TIMEOUT, self.ctx.pods().logs(name, &params)).await {
            Ok(Ok(tail)) => {
                warn!(runner = %id, pod = %name, log = %tail.trim_end(), "runner pod failed; the end of its log")
            }
            Ok(Err(e)) => {
                debug!(runner = %id, pod = %name, error = %api_message(&e), "cannot read a failed runner's log")
            }
            Err(_) => debug!(runner = %id, pod = %name, "reading a failed runner's log timed out"),
        }
    }

    /// A runner's pod was deleted: a stop ends as one; otherwise the pod's last status says
    /// how the runner ended, if it did.
    async fn deleted(&mut self, pod: &Pod) {
        let Some(state) = runner_state(pod) else {
            return;
        };
        let stopped = self.ctx.stopping().contains(&state.id);
        if state.phase.is_terminal() && !stopped {
            self.report(state.clone()).await;
        }
        self.gone(state.id, state.name).await;
    }

    /// A runner's pod is gone: if its end was not reported yet, report it now.
    async fn gone(&mut self, id: RunnerId, name: String) {
        let stopped = self.ctx.stopping().remove(&id);
        let finished = self
            .reported
            .remove(&id)
            .is_some_and(|s| s.phase.is_terminal());
        if finished {
            return;
        }
        let state = if stopped {
            let mut s = RunnerState::new(id, name, RunnerPhase::Exited);
            s.exit_code = Some(143);
            s.reason = "stopped by the controller".into();
            s
        } else {
            let mut s = RunnerState::new(id, name, RunnerPhase::Failed);
            s.reason = "its pod was deleted before the runner finished".into();
            s
        };
        self.ctx.sink.report(state).await;
    }

    async fn report(&mut self, state: RunnerState) {
        let changed = self.reported.get(&state.id).is_none_or(|last| {
            (last.phase, last.exit_code, &last.reason)
                != (state.phase, state.exit_code, &state.reason)
        });
        if !changed {
            return;
        }
        if state.phase.is_terminal() || !state.reason.is_empty() {
            info!(runner = %state.id, phase = ?state.phase, reason = %state.reason, exit_code = ?state.exit_code, "runner pod state");
        }
        self.reported.insert(state.id.clone(), state.clone());
        self.ctx.sink.report(state).await;
    }

    async fn delete_pod(&self, pod: &Pod, id: &RunnerId) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        match self.ctx.pods().delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(runner = %id, pod = %name, "finished runner pod deleted"),
            Err(e) if is_not_found(&e) => {}
            // The next event or relist for this pod tries again.
            Err(e) => {
                warn!(runner = %id, pod = %name, error = %api_message(&e), "cannot delete a finished runner pod")
            }
        }
    }

    /// Fails pods stuck Pending past the limit and deletes orphaned registration Secrets.
    async fn sweep(&mut self, store: &Store<Pod>) {
        let limit = self.ctx.settings.pending_timeout;
        for pod in store.state() {
            if pod_phase(&pod) != "Pending" || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(created) = pod.metadata.creation_timestamp.as_ref() else {
                continue;
            };
            if age(created.0) < limit {
                continue;
            }
            let Some(mut state) = runner_state(&pod) else {
                continue;
            };
            let why = pending_reason(&pod).unwrap_or_else(|| "no reason given".into());
            state.phase = RunnerPhase::Failed;
            state.reason = format!(
                "still Pending after {} ({why}); the pod was deleted",
                humantime::format_duration(limit)
            );
            self.report(state.clone()).await;
            self.delete_pod(&pod, &state.id).await;
        }
        self.sweep_secrets(store).await;
    }

    /// Secrets without an owner: given to their pod if it exists (the agent stopped between
    /// creating the pod and handing it the secret), deleted once old enough otherwise.
    async fn sweep_secrets(&self, store: &Store<Pod>) {
        let secrets = match self
            .ctx
            .secrets()
            .list(&ListParams::default().labels(&self.ctx.who.selector()))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                debug!(error = %api_message(&e), "cannot list secrets for the orphan sweep");
                return;
            }
        };
        for secret in secrets {
            let owned = secret
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            let old = secret
                .metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| age(t.0) >= ORPHAN_SECRET_AGE);
            let Some(name) = secret.metadata.name.as_deref() else {
                continue;
            };
            if owned {
                continue;
            }
            let pod = name
                .strip_suffix(objects::SECRET_SUFFIX)
                .and_then(|pod| store.get(&ObjectRef::new(pod).within(&self.ctx.namespace)));
            if let Some(pod) = pod {
                if let Err(e) = self.ctx.own_secret(name, &pod).await {
                    warn!(secret = %name, error = %e, "cannot hand a secret to its pod");
                }
                continue;
            }
            if !old {
                continue;
            }
            match self
                .ctx
                .secrets()
                .delete(name, &DeleteParams::default())
                .await
            {
                Ok(_) => info!(secret = %name, "deleted a registration secret left without a pod"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    warn!(secret = %name, error = %api_message(&e), "cannot delete an orphaned secret")
                }
            }
        }
    }
}

fn age(since: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_since(since)).unwrap_or_default()
}
