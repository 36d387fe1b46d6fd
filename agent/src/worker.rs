//! The agent's one long-lived task: it owns the runner table and the runtime's event stream,
//! keeps a session with the controller open (reconnecting forever with backoff), executes
//! commands idempotently and reports every runner state change.
//!
//! Losing the controller never touches the runners: they keep running, their state changes
//! keep landing in the table, and the next session starts with the full inventory.

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use shared::command::{AgentCommand, RunnerSpec};
use shared::ids::RunnerId;
use shared::image::ImageState;
use shared::runner::{RunnerPhase, RunnerState};
use shared::wire;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, error, info, warn};

use crate::AgentStatus;
use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::connection::{self, AttemptError, error_chain};
use crate::fence::Fence;
use crate::images::{ImageBoard, ImageWatch};
use crate::renew;
use crate::runners::{FINISHED_RETENTION, RunnerTable};
use crate::runtime::{EventSink, RunnerRuntime};
use crate::targets::{Outcome, Targets};

/// Used until the controller says otherwise in `Registered`.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a drained agent waits for the controller to acknowledge its last reports.
const DRAIN_FLUSH: Duration = Duration::from_secs(5);
/// How long a certificate renewal may take before it is retried later.
const RENEW_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Worker<R> {
    pub config: AgentConfig,
    pub runtime: Arc<R>,
    pub sink: EventSink,
    // The runtime (and our own start/stop tasks) hold the sending side through `sink`.
    pub events: mpsc::Receiver<RunnerState>,
    pub table: RunnerTable,
    /// States to send as they are, even though the table already has them (a start's
    /// `Starting`, a replayed command's current state); drained after each command.
    pub outbox: Vec<RunnerState>,
    pub draining: bool,
    /// Cancelled by `gha-agent drain` (through the control socket): drain, then exit once the
    /// last runner has finished.
    pub drain: CancellationToken,
    /// The controller sent `Drain` (not persisted: a restart forgets it, the controller
    /// sends it again).
    pub controller_drain: bool,
    /// `true` while the agent is held drained without exiting (a local drain that outlived a
    /// restart); the sender is the [`crate::Agent`]'s, used by the control socket.
    pub hold: watch::Receiver<bool>,
    pub status: watch::Sender<AgentStatus>,
    /// The runner images the controller asked for (the runtime records their states).
    pub images: ImageBoard,
    /// Wakes the session loop when an image's state changes, to report it.
    pub image_watch: ImageWatch,
    /// The newest leader generation obeyed, across sessions (only this task uses it).
    pub fence: Fence,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl<R: RunnerRuntime> Worker<R> {
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), String> {
        match self.runtime.inventory().await {
            Ok(runners) => {
                info!(count = runners.len(), "adopted existing runners");
                for r in runners {
                    self.table.apply(r);
                }
                self.publish();
            }
            Err(e) => warn!(error = %e, "cannot list existing runners; starting with none"),
        }
        self.apply_hold();
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        // `CONTROLLER_URL` is never empty once parsed (`AgentConfig::from_env`).
        let mut targets = Targets::new(self.config.controller_urls.clone());
        loop {
            if self.drained() {
                return Ok(());
            }
            let url = targets.current().to_owned();
            let server_name = targets.server_name();
            let outcome = self
                .attempt(&shutdown, &mut backoff, &url, server_name.as_deref())
                .await;
            targets.after(&match &outcome {
                Ok(SessionEnd::Shutdown) => Outcome::Connected,
                Err(AttemptError::NotLeader { leader, .. }) => Outcome::NotLeader {
                    hint: leader.clone(),
                },
                Ok(SessionEnd::Lost(_)) | Err(_) => Outcome::Failed,
            });
            match outcome {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::Lost(reason)) => {
                    warn!(%reason, controller = %url, "lost the controller; runners keep running, reconnecting");
                    self.set_disconnected(reason);
                }
                Err(AttemptError::NotLeader { leader, message }) => {
                    info!(controller = %url, leader = ?leader, %message, "not the leader; following");
                    self.set_disconnected(message);
                }
                Err(AttemptError::Local(reason)) => {
                    error!(%reason, "cannot connect with this agent's TLS material");
                    self.set_disconnected(reason.clone());
                    return Err(reason);
                }
                Err(AttemptError::Rejected(reason)) => {
                    error!(%reason, "the controller rejected this agent; retrying slowly");
                    self.set_disconnected(reason);
                    backoff.give_up_fast_retries();
                }
                Err(AttemptError::Unreachable(reason)) => {
                    warn!(%reason, "controller unreachable; retrying");
                    self.set_disconnected(reason);
                }
            }
            let delay = backoff.next_delay();
            debug!(?delay, "waiting before reconnecting");
            if !self.idle(delay, &shutdown).await {
                return Ok(());
            }
        }
    }

    fn set_disconnected(&self, reason: String) {
        self.status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(reason);
        });
    }

    /// Waits `delay` while still recording runner events; false once shutdown is asked for
    /// (or a local drain has finished).
    async fn idle(&mut self, delay: Duration, shutdown: &CancellationToken) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            if self.drained() {
                return false;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = &mut sleep => return true,
                _ = self.drain.cancelled(), if !self.draining => self.start_draining(),
                Ok(()) = self.hold.changed() => {
                    self.apply_hold();
                }
                Some(state) = self.events.recv() => {
                    self.table.apply(state);
                    self.publish();
                }
            }
        }
    }

    /// Accepts no new runners from now on.
    fn start_draining(&mut self) {
        if !self.draining {
            info!(
                active = self.table.active(),
                "draining: no new runners will be accepted"
            );
        }
        self.draining = true;
        self.publish();
    }

    /// Follows the hold: held means draining; released means accepting runners again unless
    /// something else (the controller, a live local drain) still drains. True if it changed.
    fn apply_hold(&mut self) -> bool {
        let held = *self.hold.borrow_and_update();
        if held && !self.draining {
            info!(
                "held drained (drained before a restart): accepting no runners until `gha-agent undrain`"
            );
            self.start_draining();
            return true;
        }
        if !held && self.draining && !self.controller_drain && !self.drain.is_cancelled() {
            info!("undrained: accepting runners again");
            self.draining = false;
            self.publish();
            return true;
        }
        false
    }

    /// A local drain was asked for and no runner is left: the agent may exit.
    fn drained(&self) -> bool {
        self.drain.is_cancelled() && self.draining && self.table.active() == 0
    }

    /// Publishes the runners, their count and the draining flag in the status.
    fn publish(&self) {
        let active = self.table.active();
        let draining = self.draining;
        let runners = self.table.active_list();
        self.status.send_if_modified(|s| {
            let changed =
                s.active_runners != active || s.draining != draining || s.runners != runners;
            s.active_runners = active;
            s.draining = draining;
            s.runners = runners;
            changed
        });
    }

    async fn attempt(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        url: &str,
        server_name: Option<&str>,
    ) -> Result<SessionEnd, AttemptError> {
        self.status.send_modify(|s| s.attempts += 1);
        let channel = tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            channel = connection::connect(&self.config, url, server_name) => channel?,
        };
        let (out, out_rx) = mpsc::channel::<pb::AgentMessage>(256);
        let health = self.health().await;
        let capacity = self
            .runtime_capacity()
            .await
            .unwrap_or_else(|| vec![(self.config.arch, self.config.max_runners)]);
        let register = pb::Register {
            protocol_version: pb::PROTOCOL_VERSION,
            protocol_minor: pb::PROTOCOL_MINOR,
            capacity: capacity_to_wire(capacity),
            runtime: wire::runtime_to_wire(self.runtime.kind()) as i32,
            max_runners: self.config.max_runners,
            labels: self.config.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            inventory: self
                .table
                .inventory()
                .iter()
                .map(wire::runner_state_to_wire)
                .collect(),
            draining: self.draining,
            healthy: health.is_ok(),
            unhealthy_reason: health.err().unwrap_or_default(),
        };
        let _ = out
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Register(register)),
            })
            .await;
        let renewal_channel = channel.clone();
        let mut client = AgentServiceClient::new(channel);
        let response = client
            .session(ReceiverStream::new(out_rx))
            .await
            .map_err(classify_early)?;
        let mut inbound = response.into_inner();
        let (registered, generation) = match inbound.message().await.map_err(classify_early)? {
            Some(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Registered(r)),
                leader_generation,
            }) => (r, leader_generation),
            _ => {
                return Err(AttemptError::Unreachable(
                    "the controller did not acknowledge the registration".into(),
                ));
            }
        };
        if let Err(stale) = self.fence.admit(generation) {
            // A deposed leader that does not know it yet: tell it, and look for the leader.
            warn!(controller = %url, %stale, "refusing a session with an older leader");
            let _ = send(&out, refused("", stale)).await;
            return Err(AttemptError::NotLeader {
                leader: None,
                message: stale.to_string(),
            });
        }
        let heartbeat = match registered.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        info!(agent = %registered.agent_name, controller = %registered.controller_id, "registered with the controller");
        self.runtime.registered(&registered.controller_id);
        backoff.reset();
        self.status.send_modify(|s| {
            s.connected = true;
            s.agent_name = Some(registered.agent_name.clone());
            s.last_error = None;
            s.sessions += 1;
        });

        // The controller learns the images' states on every session (it asks again right after
        // `registered`; an unchanged set is not prepared twice).
        let images = self.image_watch.current();
        if !images.is_empty()
            && !send(
                &out,
                pb::agent_message::Msg::Images(wire::image_report_to_wire(&images)),
            )
            .await
        {
            return Ok(SessionEnd::Lost(
                "the session's outgoing stream closed".into(),
            ));
        }

        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // The certificate is renewed over this session at 2/3 of its life (see `renew`).
        let renewal = tokio::time::sleep(self.next_renewal(None));
        tokio::pin!(renewal);
        loop {
            if self.drained() {
                info!("drained: the last runner has finished; exiting");
                // Close our half after what is queued and wait (bounded) for the controller to
                // close its own: it has then recorded every report, the last exit included.
                drop(out);
                let _ = tokio::time::timeout(DRAIN_FLUSH, async {
                    while let Ok(Some(_)) = inbound.message().await {}
                })
                .await;
                return Ok(SessionEnd::Shutdown);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                () = &mut renewal => {
                    let outcome = tokio::time::timeout(
                        RENEW_TIMEOUT,
                        renew::renew(renewal_channel.clone(), &self.config.tls),
                    )
                    .await;
                    let failed = match outcome {
                        Ok(Ok(validity)) => {
                            info!(not_after = validity.not_after, "renewed the agent certificate");
                            None
                        }
                        Ok(Err(error)) => Some(error.to_string()),
                        Err(_) => Some("the controller did not answer the renewal in time".into()),
                    };
                    if let Some(error) = &failed {
                        warn!(%error, "cannot renew the agent certificate; the current one stays in use");
                    }
                    let next = self.next_renewal(failed.as_deref());
                    renewal.as_mut().reset(tokio::time::Instant::now() + next);
                }
                _ = self.drain.cancelled(), if !self.draining => {
                    self.start_draining();
                    let health = self.health().await;
                    let beat = pb::Heartbeat {
                        healthy: health.is_ok(),
                        unhealthy_reason: health.err().unwrap_or_default(),
                        draining: true,
                        capacity: Vec::new(),
                    };
                    if !send(&out, pb::agent_message::Msg::Heartbeat(beat)).await {
                        return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                    }
                }
                Ok(()) = self.hold.changed() => {
                    if self.apply_hold() {
                        let health = self.health().await;
                        let beat = pb::Heartbeat {
                            healthy: health.is_ok(),
                            unhealthy_reason: health.err().unwrap_or_default(),
                            draining: self.draining,
                            capacity: Vec::new(),
                        };
                        if !send(&out, pb::agent_message::Msg::Heartbeat(beat)).await {
                            return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                        }
                    }
                }
                _ = ticker.tick() => {
                    self.table.prune(FINISHED_RETENTION);
                    let health = self.health().await;
                    let beat = pb::Heartbeat {
                        healthy: health.is_ok(),
                        unhealthy_reason: health.err().unwrap_or_default(),
                        draining: self.draining,
                        capacity: self.runtime_capacity().await.map(capacity_to_wire).unwrap_or_default(),
                    };
                    if !send(&out, pb::agent_message::Msg::Heartbeat(beat)).await {
                        return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                    }
                }
                true = self.image_watch.changed() => {
                    let images = self.image_watch.current();
                    if !send(&out, pb::agent_message::Msg::Images(wire::image_report_to_wire(&images))).await {
                        return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                    }
                }
                Some(state) = self.events.recv() => {
                    let applied = self.table.apply(state.clone());
                    self.publish();
                    if applied {
                        debug!(runner = %state.id, phase = ?state.phase, "runner state changed");
                        if !send(&out, pb::agent_message::Msg::RunnerStatus(wire::runner_state_to_wire(&state))).await {
                            return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                        }
                    }
                }
                received = inbound.message() => match received {
                    Ok(Some(message)) => {
                        if let Err(stale) = self.fence.admit(message.leader_generation) {
                            let runner = runner_of(&message);
                            warn!(runner = %runner, %stale, "refusing a command of an older leader");
                            if !send(&out, refused(&runner, stale)).await {
                                return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                            }
                            continue;
                        }
                        match wire::command_from_wire(message) {
                            Ok(Some(command)) => {
                                self.execute(command).await;
                                for state in std::mem::take(&mut self.outbox) {
                                    let status = wire::runner_state_to_wire(&state);
                                    if !send(&out, pb::agent_message::Msg::RunnerStatus(status)).await {
                                        return Ok(SessionEnd::Lost("the session's outgoing stream closed".into()));
                                    }
                                }
                            }
                            Ok(None) => {}
                            Err(e) => warn!(error = %e, "ignoring an invalid command"),
                        }
                    }
                    Ok(None) => return Ok(SessionEnd::Lost("the controller ended the session".into())),
                    Err(status) if status.code() == Code::Aborted => return Err(AttemptError::Rejected(format!(
                        "the controller ended the session: {}", status_text(&status)
                    ))),
                    Err(status) => return match not_leader(&status) {
                        Some(not_leader) => Err(not_leader),
                        None => Ok(SessionEnd::Lost(format!("session failed: {}", status_text(&status)))),
                    },
                }
            }
        }
    }

    /// The runtime's own view of its capacity per architecture (bounded like the health
    /// check); `None` when it has none (the configured `AGENT_ARCH` and `MAX_RUNNERS` apply).
    /// How long until the next renewal attempt: at 2/3 of the certificate's life, or (after a
    /// failure) a bounded retry; a certificate that cannot be read is looked at again hourly.
    fn next_renewal(&self, failed: Option<&str>) -> Duration {
        let now = std::time::SystemTime::now();
        match renew::current(&self.config.tls) {
            Ok(validity) if failed.is_some() => renew::retry_after(validity.not_after, now),
            Ok(validity) => renew::due(&validity)
                .duration_since(now)
                .unwrap_or(Duration::ZERO),
            Err(_) => Duration::from_secs(3600),
        }
    }

    async fn runtime_capacity(&self) -> Option<Vec<(shared::arch::Arch, u32)>> {
        tokio::time::timeout(
            HEALTH_CHECK_TIMEOUT,
            self.runtime.capacity(self.config.max_runners),
        )
        .await
        .ok()
        .flatten()
    }

    async fn health(&self) -> Result<(), String> {
        tokio::time::timeout(HEALTH_CHECK_TIMEOUT, self.runtime.health())
            .await
            .unwrap_or_else(|_| Err("the runtime's health check timed out".into()))
    }

    /// Executes one command. Idempotent by runner id; never waits on the runtime (starts and
    /// stops run in their own tasks and report through the event sink).
    async fn execute(&mut self, command: AgentCommand) {
        match command {
            AgentCommand::StartRunner(spec) => self.start(*spec).await,
            AgentCommand::StopRunner { id, reason } => self.stop(id, reason).await,
            AgentCommand::Drain => {
                self.controller_drain = true;
                self.start_draining();
            }
            AgentCommand::PrepareImages(images) => self.prepare_images(images),
            AgentCommand::Undrain => {
                self.controller_drain = false;
                let held = *self.hold.borrow();
                if self.draining && !held && !self.drain.is_cancelled() {
                    info!("undrained by the controller: accepting runners again");
                    self.draining = false;
                    self.publish();
                } else if self.draining {
                    info!(
                        "the controller lifted its drain; still draining (a local `gha-agent drain`, \
                         lifted by `gha-agent undrain`)"
                    );
                }
            }
        }
    }

    /// Hands the runtime the controller's images, unless it has this very set already and
    /// none of it failed (a failed one is tried again on the next session).
    fn prepare_images(&mut self, images: Vec<String>) {
        let current = self.images.current();
        let mut wanted: Vec<&String> = Vec::new();
        for image in &images {
            if !wanted.contains(&image) {
                wanted.push(image);
            }
        }
        let same = current.len() == wanted.len()
            && current.iter().zip(&wanted).all(|(c, w)| &c.image == *w)
            && current.iter().all(|c| c.state != ImageState::Failed);
        if same {
            debug!(images = ?images, "runner images unchanged");
            return;
        }
        info!(images = ?images, "preparing the controller's runner images");
        let reporter = self.images.replace(&images, self.config.arch);
        self.runtime.prepare_images(reporter);
    }

    async fn start(&mut self, spec: RunnerSpec) {
        if let Some(known) = self.table.get(&spec.id) {
            debug!(runner = %spec.id, "start for a known runner: re-reporting its state");
            self.outbox.push(known.clone());
            return;
        }
        let refuse = if self.draining {
            Some("the agent is draining".to_owned())
        } else if self.table.active() >= self.config.max_runners as usize {
            Some(format!(
                "the agent is at capacity (MAX_RUNNERS={})",
                self.config.max_runners
            ))
        } else {
            None
        };
        if let Some(reason) = refuse {
            warn!(runner = %spec.id, %reason, "refusing to start a runner");
            let mut failed =
                RunnerState::new(spec.id.clone(), spec.name.clone(), RunnerPhase::Failed);
            failed.reason = reason;
            self.sink.report(failed).await;
            return;
        }
        info!(runner = %spec.id, name = %spec.name, image = %spec.image, "starting runner");
        debug!(target: shared::stage::TARGET, stage = shared::stage::names::START_RECEIVED,
               runner = %spec.name, "stage");
        let starting = RunnerState::new(spec.id.clone(), spec.name.clone(), RunnerPhase::Starting);
        // Recorded now, so a repeated start that arrives before the task runs is recognised.
        self.table.apply(starting.clone());
        self.publish();
        self.outbox.push(starting);
        let runtime = self.runtime.clone();
        let sink = self.sink.clone();
        tokio::spawn(async move {
            let (id, name) = (spec.id.clone(), spec.name.clone());
            if let Err(e) = runtime.start(spec).await {
                error!(runner = %id, error = %e, "runner failed to start");
                let mut failed = RunnerState::new(id, name, RunnerPhase::Failed);
                failed.reason = e.to_string();
                sink.report(failed).await;
            }
        });
    }

    async fn stop(&mut self, id: RunnerId, reason: String) {
        match self.table.get(&id) {
            None => {
                debug!(runner = %id, "stop for an unknown runner");
                let mut gone = RunnerState::new(id, "", RunnerPhase::Failed);
                gone.reason = "no such runner on this agent".into();
                self.sink.report(gone).await;
            }
            Some(state) if state.phase.is_terminal() => self.outbox.push(state.clone()),
            Some(_) => {
                info!(runner = %id, %reason, "stopping runner");
                let runtime = self.runtime.clone();
                tokio::spawn(async move {
                    if let Err(e) = runtime.stop(&id).await {
                        error!(runner = %id, error = %e, "cannot stop runner");
                    }
                });
            }
        }
    }
}

fn capacity_to_wire(capacity: Vec<(shared::arch::Arch, u32)>) -> Vec<pb::ArchCapacity> {
    capacity
        .into_iter()
        .map(|(arch, max_runners)| pb::ArchCapacity {
            arch: wire::arch_to_wire(arch) as i32,
            max_runners,
        })
        .collect()
}

async fn send(out: &mpsc::Sender<pb::AgentMessage>, msg: pb::agent_message::Msg) -> bool {
    out.send(pb::AgentMessage { msg: Some(msg) }).await.is_ok()
}

fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&error_chain(source));
    }
    text
}

/// Classifies a failure before the controller acknowledged the registration. A connection
/// that breaks at that point is, in practice, the controller refusing our certificate: with
/// TLS 1.3 the client learns of it only when the server hangs up, and the alert's text is lost.
/// (A controller that is down fails earlier, at connect.)
fn classify_early(status: tonic::Status) -> AttemptError {
    // A status with a source is a transport failure, not an answer from the controller.
    if std::error::Error::source(&status).is_some() {
        return AttemptError::Rejected(format!(
            "the connection broke before the controller registered us; it most likely refused \
             our client certificate (signed by another CA, expired, revoked by the operator, or \
             not a client certificate): \
             see the controller's log ({})",
            status_text(&status)
        ));
    }
    classify_status(status)
}

/// The metadata key in which a standby names the leader's address (the controller's
/// `grpc::session::LEADER_ADDRESS_KEY`).
const LEADER_ADDRESS_KEY: &str = "gha-leader-address";

/// A standby's "not leader" answer, with the leader's address when it named one.
fn not_leader(status: &tonic::Status) -> Option<AttemptError> {
    if status.code() != Code::Unavailable || !status.message().starts_with("not leader") {
        return None;
    }
    let leader = status
        .metadata()
        .get(LEADER_ADDRESS_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Some(AttemptError::NotLeader {
        leader,
        message: status.message().to_owned(),
    })
}

/// The runner a controller message is about, if any (for a refusal report).
fn runner_of(message: &pb::ControllerMessage) -> String {
    use pb::controller_message::Msg;
    match &message.msg {
        Some(Msg::StartRunner(s)) => s.runner_id.clone(),
        Some(Msg::StopRunner(s)) => s.runner_id.clone(),
        _ => String::new(),
    }
}

fn refused(runner_id: &str, stale: crate::fence::Stale) -> pb::agent_message::Msg {
    pb::agent_message::Msg::CommandRefused(pb::CommandRefused {
        runner_id: runner_id.to_owned(),
        generation: stale.generation,
        newest_generation: stale.newest,
        reason: stale.to_string(),
    })
}

fn classify_status(status: tonic::Status) -> AttemptError {
    if let Some(not_leader) = not_leader(&status) {
        return not_leader;
    }
    let text = status_text(&status);
    match status.code() {
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::InvalidArgument => {
            AttemptError::Rejected(format!("the controller refused the session: {text}"))
        }
        _ if connection::is_certificate_problem(&text) => {
            AttemptError::Rejected(format!("the controller refused our certificate: {text}"))
        }
        _ => AttemptError::Unreachable(format!("session failed: {text}")),
    }
}
