//! The registry of agents: who is connected, what they can run, and what they run now.
//!
//! Each agent's live session is owned by its session task (see `grpc::session`); the registry
//! keeps what others may read (a snapshot for the API and, later, the scheduler) and a bounded
//! command channel into each live session. A new session for the same identity replaces the old
//! one: the old session is cancelled and its late departure does not mark the agent offline.
//!
//! What an agent reports is limited here by the operator's policy ([`crate::agent_policy`]),
//! so every reader (the scheduler's planner view, the API, `/status`) sees only what the agent
//! is allowed: its capacity clamped, its extra labels filtered, and the owners it serves. The
//! runners it reports are bounded too: runners the controller sent (or had on record when the
//! agent connected) are tracked; others still running, which the scheduler stops as strays, are
//! kept only up to the agent's allowed capacity, and finished ones (whose report may close a
//! record kept from before a restart) are pruned, oldest first, past a fixed number, so a
//! misbehaving agent cannot grow the registry without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use shared::arch::{Arch, RuntimeKind};
use shared::command::AgentCommand;
use shared::ids::{AgentName, RunnerId};
use shared::image::ImageStatus;
use shared::runner::RunnerState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::agent_policy::{self, AgentPolicy};

/// Runner ids sent to one agent that are remembered (oldest forgotten first).
const EXPECTED_LIMIT: usize = 4096;
/// Finished runners kept per agent for readers; older ones are pruned.
const FINISHED_LIMIT: usize = 256;

/// What an agent announced when it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRegistration {
    pub capacity: BTreeMap<Arch, u32>,
    pub runtime: RuntimeKind,
    pub max_runners: u32,
    pub labels: Vec<String>,
    pub version: String,
    pub inventory: Vec<RunnerState>,
    pub draining: bool,
    pub healthy: bool,
    pub unhealthy_reason: String,
    /// The operator's policy for this agent; `None` when none was set (a certificate from the
    /// operator's own CA), in which case the report stands.
    pub policy: Option<AgentPolicy>,
    /// The agent's protocol revision within the major version (`Register.protocol_minor`):
    /// commands newer than it are not sent.
    pub protocol_minor: u32,
}

/// An agent's liveness signal from its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub healthy: bool,
    pub unhealthy_reason: String,
    pub draining: bool,
    /// A new capacity per architecture, when the agent's changed.
    pub capacity: Option<BTreeMap<Arch, u32>>,
}

/// Why a command could not be queued for an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("agent {0} is not connected")]
    NotConnected(AgentName),
    #[error("the command queue of agent {0} is full")]
    QueueFull(AgentName),
    #[error("agent {agent} may not serve owner {owner}")]
    OwnerNotAllowed { agent: AgentName, owner: String },
    #[error(
        "agent {agent} speaks protocol 1.{minor}, which has no such command (since 1.{since}): \
         upgrade the agent"
    )]
    Unsupported {
        agent: AgentName,
        minor: u32,
        since: u32,
    },
}

/// The commands a live session forwards to its agent.
pub type CommandSender = mpsc::Sender<AgentCommand>;

struct LiveSession {
    id: u64,
    // The session task holds the receiving end and forwards each command on the stream.
    commands: CommandSender,
    // Cancelled when a newer session replaces this one.
    replaced: CancellationToken,
}

struct AgentEntry {
    registration: AgentRegistration,
    session: Option<LiveSession>,
    connected_since: SystemTime,
    last_heartbeat: SystemTime,
    disconnected_at: Option<SystemTime>,
    disconnect_reason: Option<String>,
    runners: BTreeMap<RunnerId, RunnerState>,
    /// The agent's last image report, already limited to the images it was asked for (see
    /// `grpc::session`); kept across a disconnect until the next session reports.
    images: Vec<ImageStatus>,
    /// Runner ids the controller sent or had on record, oldest first (with a set to look up).
    expected: VecDeque<RunnerId>,
    expected_set: BTreeSet<RunnerId>,
}

impl AgentEntry {
    fn expect(&mut self, id: RunnerId) {
        if self.expected_set.insert(id.clone()) {
            self.expected.push_back(id);
        }
        while self.expected.len() > EXPECTED_LIMIT {
            if let Some(old) = self.expected.pop_front() {
                self.expected_set.remove(&old);
            }
        }
    }

    fn allowed_max(&self) -> u32 {
        let reg = &self.registration;
        reg.policy
            .as_ref()
            .map_or(reg.max_runners, |p| p.max_runners.min(reg.max_runners))
    }

    /// Applies one reported runner state within the bounds (see the module doc).
    fn report(&mut self, name: &AgentName, state: RunnerState) {
        if let Some(known) = self.runners.get_mut(&state.id) {
            if known.phase.may_become(state.phase) {
                *known = state;
            }
        } else if self.expected_set.contains(&state.id) || state.phase.is_terminal() {
            // An ended runner the controller may have on record from before a restart (it
            // finishes the record from this report); finished ones are bounded below.
            self.runners.insert(state.id.clone(), state);
        } else {
            let unknown = self
                .runners
                .iter()
                .filter(|(id, r)| !self.expected_set.contains(*id) && !r.phase.is_terminal())
                .count();
            if unknown >= self.allowed_max() as usize {
                warn!(
                    agent = %name,
                    runner = %state.id,
                    "ignoring a runner the controller never sent: the agent already reports as \
                     many unknown runners as it may run"
                );
                return;
            }
            self.runners.insert(state.id.clone(), state);
        }
        self.prune_finished();
    }

    fn prune_finished(&mut self) {
        let mut finished: Vec<(i64, RunnerId)> = self
            .runners
            .values()
            .filter(|r| r.phase.is_terminal())
            .map(|r| (r.observed_at_ms, r.id.clone()))
            .collect();
        if finished.len() <= FINISHED_LIMIT {
            return;
        }
        finished.sort();
        for (_, id) in finished.iter().take(finished.len() - FINISHED_LIMIT) {
            self.runners.remove(id);
            if self.expected_set.remove(id) {
                self.expected.retain(|e| e != id);
            }
        }
    }
}

/// Why `command` cannot go to an agent of `registration`'s protocol revision, if it cannot.
fn unsupported(
    name: &AgentName,
    registration: &AgentRegistration,
    command: &AgentCommand,
) -> Option<SendError> {
    let since = match command {
        AgentCommand::Undrain => proto::v1::UNDRAIN_SINCE_MINOR,
        AgentCommand::PrepareImages(_) => proto::v1::IMAGES_SINCE_MINOR,
        _ => return None,
    };
    (registration.protocol_minor < since).then(|| SendError::Unsupported {
        agent: name.clone(),
        minor: registration.protocol_minor,
        since,
    })
}

/// A read-only view of one agent, as `GET /api/v1/agents` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentView {
    pub name: AgentName,
    /// The agent's (first) architecture; `architectures` lists all it serves.
    pub arch: Arch,
    pub architectures: Vec<Arch>,
    pub runtime: RuntimeKind,
    /// Total runners at once.
    pub capacity: u32,
    pub capacity_by_arch: BTreeMap<Arch, u32>,
    /// Extra labels it offers: the reported ones its policy allows.
    pub labels: Vec<String>,
    /// Whether it may serve every owner; else `owners` lists those it may.
    pub all_owners: bool,
    pub owners: Vec<shared::owner::Owner>,
    /// The operator's policy (`null`: none set, the agent's report stands).
    pub policy: Option<AgentPolicy>,
    /// What the agent itself reported, before the policy.
    pub reported: ReportedSupply,
    /// Labels it reported but may not offer (dropped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels_refused: Vec<String>,
    pub version: String,
    pub connected: bool,
    pub healthy: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub unhealthy_reason: String,
    pub draining: bool,
    /// RFC 3339.
    pub connected_since: String,
    pub last_heartbeat: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect_reason: Option<String>,
    pub runners: Vec<RunnerState>,
    /// The runner images it was asked to prepare, each with its state (`present`, `pulling`,
    /// `failed`, `unknown`) and detail, as it last reported them; empty before its first report
    /// (and always for an agent older than protocol 1.3).
    pub images: Vec<ImageStatus>,
    /// `disconnected_at` in ms since the epoch, for the scheduler.
    #[serde(skip)]
    pub disconnected_at_ms: Option<i64>,
}

/// An agent's own claims, shown beside what it is granted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportedSupply {
    pub capacity: u32,
    pub capacity_by_arch: BTreeMap<Arch, u32>,
    pub labels: Vec<String>,
}

impl AgentView {
    /// Whether the agent may run runners for `owner`.
    pub fn serves(&self, owner: &str) -> bool {
        self.all_owners || self.owners.iter().any(|o| o == owner)
    }
}

/// A handle to the registry; clones share it.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    // Short critical sections only; never held across an await.
    agents: Arc<Mutex<HashMap<AgentName, AgentEntry>>>,
    next_session: Arc<AtomicU64>,
    /// Sessions opened for a name already in the registry (reconnects), for `/metrics`.
    reconnects: Arc<AtomicU64>,
    // Wakes the scheduler when supply changes (an agent comes or goes, a runner changes state).
    changed: Arc<tokio::sync::Notify>,
}

/// What a session needs to know about its own place in the registry.
pub struct SessionHandle {
    pub id: u64,
    pub replaced: CancellationToken,
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl AgentRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that wakes `changed` whenever supply changes.
    pub fn notifying(changed: Arc<tokio::sync::Notify>) -> Self {
        Self {
            changed,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentName, AgentEntry>> {
        // A panic while holding this lock leaves the map consistent (each write is one insert).
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new session for `name`, replacing (and cancelling) any older one, and resyncs
    /// the agent's runners from its inventory. `known` are the runner ids the controller has on
    /// record for this agent; with those it sent before, they are the runners it expects.
    pub fn connect(
        &self,
        name: &AgentName,
        mut registration: AgentRegistration,
        known: impl IntoIterator<Item = RunnerId>,
        commands: CommandSender,
    ) -> SessionHandle {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let replaced = CancellationToken::new();
        let now = SystemTime::now();
        let inventory = std::mem::take(&mut registration.inventory);
        let mut entry = AgentEntry {
            registration,
            session: Some(LiveSession {
                id,
                commands,
                replaced: replaced.clone(),
            }),
            connected_since: now,
            last_heartbeat: now,
            disconnected_at: None,
            disconnect_reason: None,
            runners: BTreeMap::new(),
            images: Vec::new(),
            expected: VecDeque::new(),
            expected_set: BTreeSet::new(),
        };
        let mut agents = self.lock();
        if let Some(old) = agents.get(name) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            for id in &old.expected {
                entry.expect(id.clone());
            }
            entry.images = old.images.clone();
        }
        for id in known {
            entry.expect(id);
        }
        for state in inventory {
            entry.report(name, state);
        }
        if let Some(old) = agents.insert(name.clone(), entry)
            && let Some(old_session) = old.session
        {
            old_session.replaced.cancel();
        }
        drop(agents);
        self.changed.notify_one();
        SessionHandle { id, replaced }
    }

    /// Sessions opened so far by agents that had one before (reconnects and replacements).
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Marks the agent disconnected, unless a newer session has replaced `session`.
    pub fn disconnect(&self, name: &AgentName, session: u64, reason: &str) {
        let mut agents = self.lock();
        if let Some(entry) = agents.get_mut(name)
            && entry.session.as_ref().is_some_and(|s| s.id == session)
        {
            entry.session = None;
            entry.disconnected_at = Some(SystemTime::now());
            entry.disconnect_reason = Some(reason.to_owned());
            self.changed.notify_one();
        }
    }

    fn with_session(&self, name: &AgentName, session: u64, f: impl FnOnce(&mut AgentEntry)) {
        if let Some(entry) = self.lock().get_mut(name)
            && entry.session.as_ref().is_some_and(|s| s.id == session)
        {
            f(entry);
        }
    }

    pub fn heartbeat(&self, name: &AgentName, session: u64, beat: Heartbeat) {
        self.with_session(name, session, |entry| {
            entry.last_heartbeat = SystemTime::now();
            entry.registration.healthy = beat.healthy;
            entry.registration.unhealthy_reason = beat.unhealthy_reason;
            entry.registration.draining = beat.draining;
            if let Some(capacity) = beat.capacity {
                entry.registration.capacity = capacity;
            }
        });
        self.changed.notify_one();
    }

    /// Records the agent's image report (already limited by the session).
    pub fn images(&self, name: &AgentName, session: u64, images: Vec<ImageStatus>) {
        self.with_session(name, session, |entry| {
            entry.last_heartbeat = SystemTime::now();
            entry.images = images;
        });
        self.changed.notify_one();
    }

    /// Applies a runner report; states only move forward.
    pub fn runner_status(&self, name: &AgentName, session: u64, state: RunnerState) {
        self.with_session(name, session, |entry| {
            entry.last_heartbeat = SystemTime::now();
            entry.report(name, state);
        });
        self.changed.notify_one();
    }

    /// Queues a command for a connected agent. A full queue is an error, not a wait, and a
    /// runner for an owner the agent may not serve is refused.
    /// Whether `command` could be sent to `name` as its session stands (connected, and of a
    /// protocol revision that has the command), without sending it.
    pub fn check(&self, name: &AgentName, command: &AgentCommand) -> Result<(), SendError> {
        let agents = self.lock();
        let entry = agents
            .get(name)
            .filter(|e| e.session.is_some())
            .ok_or_else(|| SendError::NotConnected(name.clone()))?;
        unsupported(name, &entry.registration, command).map_or(Ok(()), Err)
    }

    pub fn send(&self, name: &AgentName, command: AgentCommand) -> Result<(), SendError> {
        let sender = {
            let mut agents = self.lock();
            let entry = agents
                .get_mut(name)
                .filter(|e| e.session.is_some())
                .ok_or_else(|| SendError::NotConnected(name.clone()))?;
            if let Some(e) = unsupported(name, &entry.registration, &command) {
                return Err(e);
            }
            if let AgentCommand::StartRunner(spec) = &command {
                if let Some(policy) = &entry.registration.policy
                    && !policy.serves(&spec.owner)
                {
                    return Err(SendError::OwnerNotAllowed {
                        agent: name.clone(),
                        owner: spec.owner.clone(),
                    });
                }
                entry.expect(spec.id.clone());
            }
            entry
                .session
                .as_ref()
                .map(|s| s.commands.clone())
                .ok_or_else(|| SendError::NotConnected(name.clone()))?
        };
        sender.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(name.clone()),
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected(name.clone()),
        })
    }

    /// Every agent ever seen since start, sorted by name.
    pub fn snapshot(&self) -> Vec<AgentView> {
        let agents = self.lock();
        let mut views: Vec<AgentView> = agents
            .iter()
            .map(|(name, e)| {
                let reg = &e.registration;
                let granted = agent_policy::grant(
                    reg.policy.as_ref(),
                    &reg.capacity,
                    reg.max_runners,
                    &reg.labels,
                );
                let architectures: Vec<Arch> = reg.capacity.keys().copied().collect();
                let owners = reg.policy.as_ref().and_then(|p| p.owners.clone());
                AgentView {
                    name: name.clone(),
                    arch: architectures.first().copied().unwrap_or(Arch::Amd64),
                    architectures,
                    runtime: reg.runtime,
                    capacity: granted.max_runners,
                    capacity_by_arch: granted.capacity,
                    labels: granted.labels,
                    all_owners: owners.is_none(),
                    owners: owners.map(|o| o.into_iter().collect()).unwrap_or_default(),
                    policy: reg.policy.clone(),
                    reported: ReportedSupply {
                        capacity: reg.max_runners,
                        capacity_by_arch: reg.capacity.clone(),
                        labels: reg.labels.clone(),
                    },
                    labels_refused: granted.labels_refused,
                    version: reg.version.clone(),
                    connected: e.session.is_some(),
                    healthy: reg.healthy,
                    unhealthy_reason: reg.unhealthy_reason.clone(),
                    draining: reg.draining,
                    connected_since: rfc3339(e.connected_since),
                    last_heartbeat: rfc3339(e.last_heartbeat),
                    disconnected_at: e.disconnected_at.map(rfc3339),
                    disconnected_at_ms: e.disconnected_at.map(epoch_ms),
                    disconnect_reason: e.disconnect_reason.clone(),
                    runners: e.runners.values().cloned().collect(),
                    images: e.images.clone(),
                }
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// One agent's view.
    pub fn get(&self, name: &AgentName) -> Option<AgentView> {
        self.snapshot().into_iter().find(|v| &v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::runner::RunnerPhase;

    fn registration(inventory: Vec<RunnerState>) -> AgentRegistration {
        AgentRegistration {
            capacity: [(Arch::Amd64, 2)].into(),
            runtime: RuntimeKind::Docker,
            max_runners: 2,
            labels: vec![],
            version: "t".into(),
            inventory,
            draining: false,
            healthy: true,
            unhealthy_reason: String::new(),
            policy: None,
            protocol_minor: proto::v1::PROTOCOL_MINOR,
        }
    }

    #[test]
    fn images_are_never_asked_of_an_agent_of_a_revision_without_them() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("old").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut old = registration(vec![]);
        old.protocol_minor = proto::v1::IMAGES_SINCE_MINOR - 1;
        let _session = reg.connect(&name, old, [], tx);
        let prepare = AgentCommand::PrepareImages(vec!["runner:1".into()]);
        assert!(matches!(
            reg.check(&name, &prepare),
            Err(SendError::Unsupported { since, .. }) if since == proto::v1::IMAGES_SINCE_MINOR
        ));
        assert!(reg.send(&name, prepare).is_err());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn undrain_is_never_sent_to_an_agent_of_a_revision_without_it() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("old").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut old = registration(vec![]);
        old.protocol_minor = proto::v1::UNDRAIN_SINCE_MINOR - 1;
        let _session = reg.connect(&name, old, [], tx);
        assert!(matches!(
            reg.send(&name, AgentCommand::Undrain),
            Err(SendError::Unsupported { .. })
        ));
        reg.send(&name, AgentCommand::Drain).unwrap();
        assert_eq!(rx.try_recv().unwrap(), AgentCommand::Drain);
        assert!(rx.try_recv().is_err());
    }

    fn runner(id: &str, phase: RunnerPhase) -> RunnerState {
        RunnerState::new(RunnerId::parse(id).unwrap(), id, phase)
    }

    #[test]
    fn a_new_session_replaces_the_old_and_the_old_cannot_disconnect_it() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("a").unwrap();
        let (tx1, _rx1) = mpsc::channel(1);
        let first = reg.connect(&name, registration(vec![]), [], tx1);
        assert_eq!(reg.reconnects(), 0, "a first session is no reconnect");
        let (tx2, mut rx2) = mpsc::channel(1);
        let second = reg.connect(
            &name,
            registration(vec![runner("r1", RunnerPhase::Running)]),
            [RunnerId::parse("r1").unwrap()],
            tx2,
        );
        assert!(first.replaced.is_cancelled());
        assert_eq!(reg.reconnects(), 1);
        reg.disconnect(&name, first.id, "old stream ended");
        let view = reg.get(&name).unwrap();
        assert!(view.connected);
        assert_eq!(view.runners.len(), 1);
        reg.send(&name, AgentCommand::Drain).unwrap();
        assert_eq!(
            reg.send(&name, AgentCommand::Drain),
            Err(SendError::QueueFull(name.clone()))
        );
        assert_eq!(rx2.try_recv().unwrap(), AgentCommand::Drain);
        reg.disconnect(&name, second.id, "stream ended");
        let view = reg.get(&name).unwrap();
        assert!(!view.connected);
        assert_eq!(view.disconnect_reason.as_deref(), Some("stream ended"));
        assert_eq!(
            reg.send(&name, AgentCommand::Drain),
            Err(SendError::NotConnected(name))
        );
    }

    #[test]
    fn runner_states_only_move_forward() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("a").unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let s = reg.connect(
            &name,
            registration(vec![]),
            [RunnerId::parse("r1").unwrap()],
            tx,
        );
        reg.runner_status(&name, s.id, runner("r1", RunnerPhase::Exited));
        reg.runner_status(&name, s.id, runner("r1", RunnerPhase::Running));
        assert_eq!(
            reg.get(&name).unwrap().runners[0].phase,
            RunnerPhase::Exited
        );
    }

    fn spec(id: &str, owner: &str) -> AgentCommand {
        AgentCommand::StartRunner(Box::new(shared::command::RunnerSpec {
            id: RunnerId::parse(id).unwrap(),
            name: id.into(),
            image: "img".into(),
            registration: shared::command::Registration::JitConfig("jit".into()),
            labels: vec![],
            env: Default::default(),
            timeout: std::time::Duration::from_secs(60),
            cache: Default::default(),
            arch: Arch::Amd64,
            owner: owner.into(),
            repository: None,
            launch: Default::default(),
        }))
    }

    fn limited(owners: &[&str], max: u32) -> AgentPolicy {
        AgentPolicy {
            owners: Some(
                owners
                    .iter()
                    .map(|o| shared::owner::Owner::new(o))
                    .collect(),
            ),
            labels: ["gpu".to_string()].into(),
            max_runners: max,
            cert_validity_secs: 3600,
        }
    }

    #[test]
    fn the_view_holds_what_the_policy_allows_not_what_the_agent_claims() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("greedy").unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut claims = registration(vec![]);
        claims.capacity = [(Arch::Amd64, 100_000)].into();
        claims.max_runners = 100_000;
        claims.labels = vec!["gpu".into(), "everything".into()];
        claims.policy = Some(limited(&["acme"], 2));
        reg.connect(&name, claims, [], tx);
        let view = reg.get(&name).unwrap();
        assert_eq!(view.capacity, 2);
        assert_eq!(view.capacity_by_arch, [(Arch::Amd64, 2)].into());
        assert_eq!(view.labels, vec!["gpu".to_string()]);
        assert_eq!(view.labels_refused, vec!["everything".to_string()]);
        assert_eq!(view.reported.capacity, 100_000);
        assert!(view.serves("ACME") && !view.serves("globex") && !view.all_owners);
        assert_eq!(
            reg.send(&name, spec("r1", "globex")),
            Err(SendError::OwnerNotAllowed {
                agent: name.clone(),
                owner: "globex".into()
            })
        );
        reg.send(&name, spec("r2", "Acme")).unwrap();
    }

    #[test]
    fn runners_the_controller_never_sent_are_bounded_by_the_allowed_capacity() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("inventor").unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut claims = registration(
            (0..1000)
                .map(|i| runner(&format!("made-up-{i}"), RunnerPhase::Running))
                .collect(),
        );
        claims.max_runners = 10;
        claims.policy = Some(limited(&["acme"], 3));
        let s = reg.connect(&name, claims, [], tx);
        assert_eq!(reg.get(&name).unwrap().runners.len(), 3);
        for i in 0..1000 {
            reg.runner_status(
                &name,
                s.id,
                runner(&format!("more-{i}"), RunnerPhase::Running),
            );
            reg.runner_status(
                &name,
                s.id,
                runner(&format!("gone-{i}"), RunnerPhase::Exited),
            );
        }
        let view = reg.get(&name).unwrap();
        let live = |v: &AgentView| v.runners.iter().filter(|r| !r.phase.is_terminal()).count();
        assert_eq!(live(&view), 3);
        assert_eq!(view.runners.len(), 3 + FINISHED_LIMIT);
        // A runner the controller sent is always tracked.
        reg.send(&name, spec("sent-1", "acme")).unwrap();
        reg.runner_status(&name, s.id, runner("sent-1", RunnerPhase::Running));
        let view = reg.get(&name).unwrap();
        assert_eq!(live(&view), 4);
        assert!(view.runners.iter().any(|r| r.id.as_str() == "sent-1"));
    }
}
