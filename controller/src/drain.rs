//! Drains the operator asks for through the API (`POST /api/v1/agents/{name}/drain` and
//! `/undrain`): kept in the agent directory, so a drained agent stays drained when it or the
//! controller restarts (or, with `DATABASE_URL`, when another replica takes over), until it is
//! undrained.
//!
//! A drain is recorded first and then sent; an agent not connected now is told when its next
//! session starts ([`Drains::on_connect`]). Only agents this controller knows (connected now or
//! earlier in its life, or enrolled) can be drained, so a mistyped name is a 404, not a record.
//! An undrain is sent only to agents of protocol 1.2 or later; an older one connected now keeps
//! its drain and the request is refused with the reason (its drain was not persisted by the
//! agent, so restarting it lifts it).

use shared::command::AgentCommand;
use shared::ids::AgentName;
use tracing::{info, warn};

use crate::registry::{AgentRegistry, SendError};
use crate::store::StoreError;
use crate::store::agents::AgentDirectory;

/// What a drain or undrain request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Whether the agent was connected and has been told now (else at its next session).
    pub sent: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no agent named {0} is known to this controller")]
    UnknownAgent(AgentName),
    #[error("{0}")]
    Unsupported(SendError),
    #[error("{0}")]
    Send(SendError),
    #[error("the agent directory is unavailable")]
    Store(#[from] StoreError),
}

/// The operator's drains: the directory that keeps them and the registry that delivers them.
#[derive(Clone)]
pub struct Drains {
    registry: AgentRegistry,
    directory: AgentDirectory,
}

impl Drains {
    pub fn new(registry: AgentRegistry, directory: AgentDirectory) -> Self {
        Self {
            registry,
            directory,
        }
    }

    async fn known(&self, name: &AgentName) -> Result<bool, StoreError> {
        Ok(self.registry.get(name).is_some() || self.directory.get(name).await?.is_some())
    }

    /// Drains `name`: it takes no new runners, its current ones finish.
    pub async fn drain(&self, name: &AgentName) -> Result<Applied, DrainError> {
        if !self.known(name).await? {
            return Err(DrainError::UnknownAgent(name.clone()));
        }
        self.directory
            .set_drained(name, true, shared::runner::now_ms())
            .await?;
        info!(agent = %name, "drained through the API");
        self.deliver(name, AgentCommand::Drain)
    }

    /// Lifts a drain of `name` (one the API set; a local `gha-agent drain` is lifted locally).
    pub async fn undrain(&self, name: &AgentName) -> Result<Applied, DrainError> {
        if !self.known(name).await? {
            return Err(DrainError::UnknownAgent(name.clone()));
        }
        // Refused before anything changes: an agent that cannot be told keeps its drain.
        if let Err(e @ SendError::Unsupported { .. }) =
            self.registry.check(name, &AgentCommand::Undrain)
        {
            return Err(DrainError::Unsupported(e));
        }
        self.directory
            .set_drained(name, false, shared::runner::now_ms())
            .await?;
        info!(agent = %name, "undrained through the API");
        self.deliver(name, AgentCommand::Undrain)
    }

    fn deliver(&self, name: &AgentName, command: AgentCommand) -> Result<Applied, DrainError> {
        match self.registry.send(name, command) {
            Ok(()) => Ok(Applied { sent: true }),
            // Told at its next session (a drain), or nothing to lift there (an undrain).
            Err(SendError::NotConnected(_)) => Ok(Applied { sent: false }),
            Err(e @ SendError::Unsupported { .. }) => Err(DrainError::Unsupported(e)),
            Err(e) => Err(DrainError::Send(e)),
        }
    }

    /// At the start of `name`'s session: a drained agent is told again.
    pub async fn on_connect(&self, name: &AgentName) {
        match self.directory.is_drained(name).await {
            Ok(true) => {
                info!(agent = %name, "the agent was drained through the API: draining it again");
                if let Err(e) = self.registry.send(name, AgentCommand::Drain) {
                    warn!(agent = %name, error = %e, "cannot send the drain");
                }
            }
            Ok(false) => {}
            Err(e) => {
                warn!(agent = %name, error = %e, "cannot read whether the agent is drained")
            }
        }
    }
}
