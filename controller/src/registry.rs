//! The registry of agents: who is connected, what they can run, and what they run now.
//!
//! Each agent's live session is owned by its session task (see `grpc::session`); the registry
//! keeps what others may read (a snapshot for the API and, later, the scheduler) and a bounded
//! command channel into each live session. A new session for the same identity replaces the old
//! one: the old session is cancelled and its late departure does not mark the agent offline.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use shared::arch::{Arch, RuntimeKind};
use shared::command::AgentCommand;
use shared::ids::{AgentName, RunnerId};
use shared::runner::RunnerState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    pub labels: Vec<String>,
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
    /// `disconnected_at` in ms since the epoch, for the scheduler.
    #[serde(skip)]
    pub disconnected_at_ms: Option<i64>,
}

/// A handle to the registry; clones share it.
#[derive(Clone, Default)]
pub struct AgentRegistry {
    // Short critical sections only; never held across an await.
    agents: Arc<Mutex<HashMap<AgentName, AgentEntry>>>,
    next_session: Arc<AtomicU64>,
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
    /// the agent's runners from its inventory.
    pub fn connect(
        &self,
        name: &AgentName,
        registration: AgentRegistration,
        commands: CommandSender,
    ) -> SessionHandle {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let replaced = CancellationToken::new();
        let now = SystemTime::now();
        let runners = registration
            .inventory
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let entry = AgentEntry {
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
            runners,
        };
        if let Some(old) = self.lock().insert(name.clone(), entry)
            && let Some(old_session) = old.session
        {
            old_session.replaced.cancel();
        }
        self.changed.notify_one();
        SessionHandle { id, replaced }
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

    /// Applies a runner report; states only move forward.
    pub fn runner_status(&self, name: &AgentName, session: u64, state: RunnerState) {
        self.with_session(name, session, |entry| {
            entry.last_heartbeat = SystemTime::now();
            match entry.runners.get_mut(&state.id) {
                Some(known) if !known.phase.may_become(state.phase) => {}
                Some(known) => *known = state,
                None => {
                    entry.runners.insert(state.id.clone(), state);
                }
            }
        });
        self.changed.notify_one();
    }

    /// Queues a command for a connected agent. A full queue is an error, not a wait.
    pub fn send(&self, name: &AgentName, command: AgentCommand) -> Result<(), SendError> {
        let sender = self
            .lock()
            .get(name)
            .and_then(|e| e.session.as_ref().map(|s| s.commands.clone()))
            .ok_or_else(|| SendError::NotConnected(name.clone()))?;
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
                let architectures: Vec<Arch> = reg.capacity.keys().copied().collect();
                AgentView {
                    name: name.clone(),
                    arch: architectures.first().copied().unwrap_or(Arch::Amd64),
                    architectures,
                    runtime: reg.runtime,
                    capacity: reg.max_runners,
                    capacity_by_arch: reg.capacity.clone(),
                    labels: reg.labels.clone(),
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
        }
    }

    fn runner(id: &str, phase: RunnerPhase) -> RunnerState {
        RunnerState::new(RunnerId::parse(id).unwrap(), id, phase)
    }

    #[test]
    fn a_new_session_replaces_the_old_and_the_old_cannot_disconnect_it() {
        let reg = AgentRegistry::new();
        let name = AgentName::parse("a").unwrap();
        let (tx1, _rx1) = mpsc::channel(1);
        let first = reg.connect(&name, registration(vec![]), tx1);
        let (tx2, mut rx2) = mpsc::channel(1);
        let second = reg.connect(
            &name,
            registration(vec![runner("r1", RunnerPhase::Running)]),
            tx2,
        );
        assert!(first.replaced.is_cancelled());
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
        let s = reg.connect(&name, registration(vec![]), tx);
        reg.runner_status(&name, s.id, runner("r1", RunnerPhase::Exited));
        reg.runner_status(&name, s.id, runner("r1", RunnerPhase::Running));
        assert_eq!(
            reg.get(&name).unwrap().runners[0].phase,
            RunnerPhase::Exited
        );
    }
}
