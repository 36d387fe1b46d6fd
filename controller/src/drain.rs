//! Drains the operator asks for through the API (`POST /api/v1/agents/{name}/drain` and
//! `/undrain`): kept in the agent directory, so a drained agent stays drained when it or the
//! controller restarts (or, with `DATABASE_URL`, when another replica takes over), until it is
//! undrained.
//!
//! A drain is recorded first and then sent; an agent not connected now is told when its next
//! session starts ([`Drains::on_connect`]), and one connected to another replica (the leader,
//! when the API call reached a standby) at that session's next admission check
//! ([`Drains::follow`], every 2 s). Only agents this controller knows (connected now or
//! earlier in its life, or enrolled) can be drained, so a mistyped name is a 404, not a record.
//! An undrain is sent only to agents of protocol 1.2 or later (every revision a session accepts
//! today); one that could not be told would keep its drain and the request would be refused
//! with the reason.

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

    /// At the start of `name`'s session: a drained agent is told again. Returns what the
    /// directory said (`None`: it could not be read), for [`Self::follow`].
    pub async fn on_connect(&self, name: &AgentName) -> Option<bool> {
        match self.directory.is_drained(name).await {
            Ok(true) => {
                info!(agent = %name, "the agent was drained through the API: draining it again");
                if let Err(e) = self.registry.send(name, AgentCommand::Drain) {
                    warn!(agent = %name, error = %e, "cannot send the drain");
                }
                Some(true)
            }
            Ok(false) => Some(false),
            Err(e) => {
                warn!(agent = %name, error = %e, "cannot read whether the agent is drained");
                None
            }
        }
    }

    /// During `name`'s session, at each admission check: a drain or undrain recorded since
    /// `last` (through another replica's API, with a shared directory) is sent now. `last` is
    /// what the session last knew; a failed read changes nothing and is retried next time.
    pub async fn follow(&self, name: &AgentName, last: &mut Option<bool>) {
        let now = match self.directory.is_drained(name).await {
            Ok(now) => now,
            Err(e) => {
                warn!(agent = %name, error = %e, "cannot re-read whether the agent is drained");
                return;
            }
        };
        if let Some(command) = change(*last, now) {
            info!(agent = %name, ?command, "drain changed in the agent directory: telling the agent");
            if let Err(e) = self.registry.send(name, command) {
                warn!(agent = %name, error = %e, "cannot send the drain change");
            }
        }
        *last = Some(now);
    }
}

/// What to tell a connected agent when the directory's drain went from `last` to `now`
/// (`last` unknown: a drain is sent, being idempotent; an undrain is not, there may be
/// nothing to lift).
pub fn change(last: Option<bool>, now: bool) -> Option<AgentCommand> {
    match (last, now) {
        (Some(was), now) if was == now => None,
        (_, true) => Some(AgentCommand::Drain),
        (Some(true), false) => Some(AgentCommand::Undrain),
        (_, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_of_the_recorded_drain_is_sent() {
        assert_eq!(change(Some(false), false), None);
        assert_eq!(change(Some(true), true), None);
        assert_eq!(change(Some(false), true), Some(AgentCommand::Drain));
        assert_eq!(change(Some(true), false), Some(AgentCommand::Undrain));
        assert_eq!(change(None, true), Some(AgentCommand::Drain));
        assert_eq!(change(None, false), None);
    }
}
