//! `AgentService.Session`: one long-lived stream per agent.
//!
//! The agent's identity comes from its verified client certificate ([`PeerInfo`]). The first
//! message must be a registration; the session then lives in its own task, which owns the
//! inbound stream, forwards queued commands outwards, applies reports to the registry, and ends
//! (marking the agent disconnected) when the stream ends, the agent falls silent for longer
//! than the heartbeat timeout, a newer session replaces it, the operator revokes it, or the
//! controller shuts down.
//!
//! Before a session starts, the agent directory decides whether this certificate may act as
//! this name (not revoked, not superseded by a newer enrollment) and with which policy; the
//! session re-checks that every few seconds, so `gha-controller agents revoke`, run as another
//! process, ends a live session too; at the same check it re-reads the operator's drain, so a
//! drain recorded through another replica's API reaches the agent. `AgentService.Renew` ([`renew`]) issues a fresh
//! certificate to an enrolled agent over its mutual-TLS connection.
//!
//! Only the leader serves sessions (see [`crate::leader`]): a standby answers `UNAVAILABLE`
//! with the leader's address in the message and in the `gha-leader-address` metadata
//! ([`not_leader`]), and a leader whose tenure ends ends its sessions the same way. Every
//! message a session sends carries the tenure's generation (`leader_generation`), so an agent
//! can refuse a deposed leader's commands.

mod images;
mod renew;

use std::collections::BTreeMap;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::agent_service_server::AgentService;
use shared::arch::Arch;
use shared::command::AgentCommand;
use shared::ids::AgentName;
use shared::logsafe::Untrusted;
use shared::wire::{self, WireError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::tls::PeerInfo;
use crate::pki::CertificateAuthority;
use crate::registry::{AgentRegistration, AgentRegistry, Heartbeat};
use crate::store::StateStore;
use crate::store::agents::{AgentDirectory, Refusal};

/// Commands waiting for one agent; a full queue is refused by `AgentRegistry::send`.
const COMMAND_QUEUE: usize = 256;
/// How often a live session checks that its agent is still admitted (not revoked).
const ADMISSION_CHECK: Duration = Duration::from_secs(2);

pub struct SessionService {
    pub registry: AgentRegistry,
    /// Enrolled agents: policies, certificates, revocations.
    pub directory: AgentDirectory,
    /// The runners on record, so the registry knows which reported runners are ours.
    pub store: std::sync::Arc<dyn StateStore>,
    /// Signs renewed certificates; `None` with the operator's own PKI and no CA key.
    pub ca: Option<std::sync::Arc<CertificateAuthority>>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub controller_id: String,
    /// The runner images this controller uses (`RUNNER_IMAGE`), sent to every agent of
    /// protocol 1.3 or later at the start of its session so it prepares them.
    pub runner_images: Vec<String>,
    pub shutdown: CancellationToken,
    /// Whether this replica leads; only the leader serves sessions.
    pub leadership: crate::leader::Leadership,
}

/// The metadata key of the leader's address (`ADVERTISE_GRPC_URL`) in a standby's refusal.
pub const LEADER_ADDRESS_KEY: &str = "gha-leader-address";
/// ... and of its replica id.
pub const LEADER_REPLICA_KEY: &str = "gha-leader-replica";

/// The status a standby (or a deposed leader) answers an agent with: `UNAVAILABLE`, retryable,
/// naming the leader when known, so the agent dials it next.
pub fn not_leader(leader: &crate::leader::LeaderView) -> Status {
    let message = match (&leader.replica, &leader.address) {
        (Some(replica), Some(address)) => {
            format!("not leader: this replica is a standby; the leader is {replica} at {address}")
        }
        (Some(replica), None) => format!(
            "not leader: this replica is a standby; the leader is {replica}, which advertises no \
             address (ADVERTISE_GRPC_URL): try another controller URL"
        ),
        _ => "not leader: this replica is a standby and no leader is known yet: try again or \
              another controller URL"
            .to_owned(),
    };
    let mut status = Status::unavailable(message);
    if let Some(address) = &leader.address
        && let Ok(value) = address.parse()
    {
        status.metadata_mut().insert(LEADER_ADDRESS_KEY, value);
    }
    if let Some(replica) = &leader.replica
        && let Ok(value) = replica.parse()
    {
        status.metadata_mut().insert(LEADER_REPLICA_KEY, value);
    }
    status
}

/// The verified agent identity of a request, or the status that refuses it.
pub(crate) fn agent_identity<T>(request: &Request<T>) -> Result<AgentName, Status> {
    let peer = request.extensions().get::<PeerInfo>();
    match peer.and_then(|p| p.identity.clone()) {
        Some(Ok(name)) => Ok(name),
        Some(Err(why)) => {
            warn!(peer = ?peer.map(|p| p.addr), %why, "agent certificate carries no usable name");
            Err(Status::unauthenticated(format!(
                "the client certificate carries no usable agent name: {why}"
            )))
        }
        None => {
            warn!(peer = ?peer.map(|p| p.addr), "agent rejected: no client certificate");
            Err(Status::unauthenticated(
                "a client certificate signed by the controller's CA is required; \
                 enroll with `gha-agent join` or configure TLS_CERT_FILE/TLS_KEY_FILE",
            ))
        }
    }
}

/// The verified certificate fingerprint of a request.
pub(crate) fn agent_certificate<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.cert_sha256.clone())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))
}

/// Whether `name` with certificate `cert` may be served now, and its policy.
pub(crate) async fn admission(
    directory: &AgentDirectory,
    name: &AgentName,
    cert: &str,
) -> Result<Option<crate::agent_policy::AgentPolicy>, Status> {
    match directory.admit(name, cert).await {
        Ok(Ok(policy)) => Ok(policy),
        Ok(Err(refusal)) => {
            warn!(agent = %name, reason = %refusal, "agent refused");
            Err(Status::permission_denied(refusal.to_string()))
        }
        Err(error) => {
            warn!(agent = %name, %error, "cannot read the agent directory");
            Err(Status::unavailable(
                "the controller's store failed; try again",
            ))
        }
    }
}

fn capacity_from_wire(capacity: &[pb::ArchCapacity]) -> Result<BTreeMap<Arch, u32>, WireError> {
    capacity
        .iter()
        .map(|c| {
            Ok((
                wire::arch_from_wire(c.arch, "capacity.arch")?,
                c.max_runners,
            ))
        })
        .collect()
}

fn registration_from_wire(reg: pb::Register) -> Result<AgentRegistration, WireError> {
    let capacity = capacity_from_wire(&reg.capacity)?;
    if capacity.is_empty() {
        return Err(WireError::Missing {
            field: "register.capacity",
        });
    }
    let inventory = reg
        .inventory
        .iter()
        .map(wire::runner_state_from_wire)
        .collect::<Result<_, _>>()?;
    Ok(AgentRegistration {
        capacity,
        runtime: wire::runtime_from_wire(reg.runtime)?,
        max_runners: reg.max_runners,
        labels: reg.labels,
        version: reg.version,
        inventory,
        draining: reg.draining,
        healthy: reg.healthy,
        unhealthy_reason: reg.unhealthy_reason,
        policy: None,
        protocol_minor: reg.protocol_minor,
    })
}

#[tonic::async_trait]
impl AgentService for SessionService {
    type SessionStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let name = agent_identity(&request)?;
        let cert = agent_certificate(&request)?;
        let Some(generation) = self.leadership.acting() else {
            let leader = self.leadership.view();
            info!(agent = %name, leader = ?leader.replica, "turning an agent away: this replica is a standby");
            return Err(not_leader(&leader));
        };
        let policy = admission(&self.directory, &name, &cert).await?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.heartbeat_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no registration received in time"))??;
        let register = match first.and_then(|m| m.msg) {
            Some(pb::agent_message::Msg::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a registration",
                ));
            }
        };
        if !pb::accepts(register.protocol_version, register.protocol_minor) {
            let refusal = protocol_refusal(register.protocol_version, register.protocol_minor);
            warn!(agent = %name, version = register.protocol_version, minor = register.protocol_minor, "refused: {refusal}");
            return Err(Status::failed_precondition(refusal));
        }
        let mut registration = registration_from_wire(register).map_err(|e| {
            warn!(agent = %name, error = %e, "agent sent an invalid registration");
            Status::invalid_argument(format!("invalid registration: {e}"))
        })?;
        if policy.is_none() {
            info!(
                agent = %name,
                "agent has no operator policy (a certificate from your own CA): it serves every \
                 owner with what it reports; restrict it with `gha-controller agents policy`"
            );
        }
        registration.policy = policy;
        let known: Vec<shared::ids::RunnerId> = self
            .store
            .active_runners()
            .await
            .map_err(|e| {
                warn!(agent = %name, error = %e, "cannot read the runners on record");
                Status::unavailable("the controller's store failed; try again")
            })?
            .into_iter()
            .filter(|r| r.agent == name.as_str())
            .filter_map(|r| shared::ids::RunnerId::parse(&r.id).ok())
            .collect();

        let (out_tx, out_rx) = mpsc::channel(COMMAND_QUEUE);
        out_tx
            .send(Ok(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Registered(pb::Registered {
                    agent_name: name.to_string(),
                    heartbeat_interval_ms: u32::try_from(self.heartbeat_interval.as_millis())
                        .unwrap_or(u32::MAX),
                    controller_id: self.controller_id.clone(),
                })),
                leader_generation: generation.0 as u64,
            }))
            .await
            .map_err(|_| Status::unavailable("session closed"))?;

        if registration.protocol_minor >= pb::IMAGES_SINCE_MINOR {
            let prepare = AgentCommand::PrepareImages(self.runner_images.clone());
            out_tx
                .send(Ok(wire::command_to_wire(&prepare)))
                .await
                .map_err(|_| Status::unavailable("session closed"))?;
        }

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        info!(
            agent = %name,
            runtime = %registration.runtime,
            capacity = ?registration.capacity,
            runners = registration.inventory.len(),
            version = %Untrusted(&registration.version),
            "agent connected"
        );
        let handle = self.registry.connect(&name, registration, known, cmd_tx);
        let drains = crate::drain::Drains::new(self.registry.clone(), self.directory.clone());
        let drained = drains.on_connect(&name).await;
        let task = SessionTask {
            drains,
            drained,
            name: name.clone(),
            session: handle.id,
            registry: self.registry.clone(),
            timeout: self.heartbeat_timeout,
            directory: self.directory.clone(),
            cert,
            runner_images: self.runner_images.clone(),
            leadership: self.leadership.clone(),
            generation,
        };
        let span = info_span!("agent_session", agent = %name, session = handle.id);
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                let reason = task
                    .run(inbound, cmd_rx, out_tx, handle.replaced, shutdown)
                    .await;
                task.registry.disconnect(&task.name, task.session, &reason);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        renew::renew(self, request).await
    }
}

struct SessionTask {
    name: AgentName,
    session: u64,
    registry: AgentRegistry,
    timeout: Duration,
    directory: AgentDirectory,
    /// The fingerprint of the certificate this session was admitted with.
    cert: String,
    /// The operator's drains, re-read at each admission check ([`crate::drain::Drains::follow`]).
    drains: crate::drain::Drains,
    /// Whether the directory said the agent is drained when the session started.
    drained: Option<bool>,
    /// The images the agent was asked to prepare: its report is kept for these only.
    runner_images: Vec<String>,
    leadership: crate::leader::Leadership,
    /// The tenure this session was opened under: it ends with it.
    generation: crate::leader::Generation,
}

impl SessionTask {
    /// Runs until the session ends; returns why.
    async fn run(
        &self,
        mut inbound: Streaming<pb::AgentMessage>,
        mut commands: mpsc::Receiver<shared::command::AgentCommand>,
        outbound: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
        replaced: CancellationToken,
        shutdown: CancellationToken,
    ) -> String {
        // Any message from the agent proves it alive; silence past the timeout ends the session.
        let mut deadline = tokio::time::Instant::now() + self.timeout;
        let mut admission = tokio::time::interval(ADMISSION_CHECK);
        admission.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        admission.tick().await;
        let mut drained = self.drained;
        loop {
            tokio::select! {
                _ = admission.tick() => match self.directory.admit(&self.name, &self.cert).await {
                    Ok(Err(refusal)) => {
                        warn!(reason = %refusal, "ending the session of a refused agent");
                        let _ = outbound.try_send(Err(Status::permission_denied(refusal.to_string())));
                        return match refusal {
                            Refusal::Revoked(_) => "revoked by the operator".into(),
                            _ => refusal.to_string(),
                        };
                    }
                    Ok(Ok(_)) => self.drains.follow(&self.name, &mut drained).await,
                    // The next check is the retry; a store hiccup does not end a session.
                    Err(error) => warn!(%error, "cannot re-check the agent's admission"),
                },
                _ = replaced.cancelled() => {
                    warn!("agent session replaced by a newer connection with the same identity");
                    let _ = outbound.try_send(Err(Status::aborted(
                        "replaced by a newer session for the same agent identity \
                         (are two agents using one certificate?)",
                    )));
                    return "replaced by a newer session".into();
                }
                _ = shutdown.cancelled() => {
                    let _ = outbound.try_send(Err(Status::unavailable("controller shutting down")));
                    return "controller shut down".into();
                }
                () = self.leadership.lost(self.generation) => {
                    warn!(generation = self.generation.0, "this replica's tenure ended: ending the agent's session");
                    let _ = outbound.try_send(Err(not_leader(&self.leadership.view())));
                    return "this replica is no longer the leader".into();
                }
                Some(command) = commands.recv() => {
                    // Fencing: nothing leaves after the tenure it was decided in.
                    if self.leadership.acting() != Some(self.generation) {
                        warn!(generation = self.generation.0, "dropping a command: the tenure it was decided in is over");
                        let _ = outbound.try_send(Err(not_leader(&self.leadership.view())));
                        return "this replica is no longer the leader".into();
                    }
                    let mut message = wire::command_to_wire(&command);
                    message.leader_generation = self.generation.0 as u64;
                    if outbound.send(Ok(message)).await.is_err() {
                        warn!("agent stream closed while sending a command");
                        return "stream closed".into();
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(timeout = ?self.timeout, "agent missed its heartbeats; marking it disconnected");
                    return format!("no heartbeat for {:?}", self.timeout);
                }
                received = inbound.message() => match received {
                    Ok(None) => {
                        info!("agent closed its session");
                        return "agent closed the stream".into();
                    }
                    Err(status) => {
                        warn!(error = %status, "agent session failed");
                        return format!("stream error: {}", status.message());
                    }
                    Ok(Some(message)) => {
                        deadline = tokio::time::Instant::now() + self.timeout;
                        self.handle(message);
                    }
                }
            }
        }
    }

    fn handle(&self, message: pb::AgentMessage) {
        use pb::agent_message::Msg;
        match message.msg {
            Some(Msg::Heartbeat(beat)) => {
                let capacity = match capacity_from_wire(&beat.capacity) {
                    Ok(c) if c.is_empty() => None,
                    Ok(c) => Some(c),
                    Err(error) => {
                        warn!(%error, "ignoring an invalid capacity in a heartbeat");
                        None
                    }
                };
                self.registry.heartbeat(
                    &self.name,
                    self.session,
                    Heartbeat {
                        healthy: beat.healthy,
                        unhealthy_reason: beat.unhealthy_reason,
                        draining: beat.draining,
                        capacity,
                    },
                )
            }
            Some(Msg::RunnerStatus(status)) => match wire::runner_state_from_wire(&status) {
                Ok(state) => {
                    info!(runner = %state.id, phase = ?state.phase, exit_code = ?state.exit_code, "runner status");
                    self.registry.runner_status(&self.name, self.session, state);
                }
                Err(error) => warn!(%error, "ignoring an invalid runner status"),
            },
            Some(Msg::Images(report)) => match wire::image_report_from_wire(report) {
                Ok(reported) => {
                    let kept = images::accept(&self.runner_images, reported);
                    for image in &kept {
                        debug!(image = %Untrusted(&image.image), state = %image.state, detail = %Untrusted(&image.detail), "runner image");
                    }
                    self.registry.images(&self.name, self.session, kept);
                }
                Err(error) => warn!(%error, "ignoring an invalid image report"),
            },
            Some(Msg::Register(_)) => warn!("ignoring a second registration on one session"),
            Some(Msg::CommandRefused(refused)) => warn!(
                runner = %Untrusted(&refused.runner_id),
                generation = refused.generation,
                newest_generation = refused.newest_generation,
                reason = %Untrusted(&refused.reason),
                "the agent refused a command of an older leader (another replica leads now?)"
            ),
            None => warn!("ignoring an empty agent message"),
        }
    }
}

/// Why an agent's protocol revision cannot be served, and which side to upgrade.
fn protocol_refusal(major: u32, minor: u32) -> String {
    let (ours, oldest) = (pb::PROTOCOL_MINOR, pb::PROTOCOL_MINOR.saturating_sub(1));
    let serves = format!(
        "this controller serves protocol {v}.{oldest} to {v}.{ours}",
        v = pb::PROTOCOL_VERSION
    );
    if major == pb::PROTOCOL_VERSION && minor > ours {
        format!(
            "protocol version {major}.{minor} is newer than this controller: {serves}; \
             upgrade the controller first, then its agents"
        )
    } else if major == pb::PROTOCOL_VERSION {
        format!("protocol version {major}.{minor} is too old: {serves}; upgrade the agent")
    } else {
        format!("protocol version {major}.{minor} is not supported: {serves}")
    }
}
