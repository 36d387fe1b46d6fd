//! What the controller asks an agent to do. Every command is idempotent by runner id.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::arch::Arch;
use crate::ids::RunnerId;

/// How the runner proves itself to GitHub. Never the owner's PAT.
#[derive(Clone, PartialEq, Eq)]
pub enum Registration {
    /// A just-in-time runner configuration (official `actions-runner` image).
    JitConfig(String),
    /// A registration token for `url` (myoung34-style images).
    Token {
        token: String,
        url: String,
        runner_group: String,
    },
}

impl fmt::Debug for Registration {
    // Registration material is a credential: it never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Registration::JitConfig(_) => f.write_str("JitConfig(<redacted>)"),
            Registration::Token { url, .. } => {
                write!(f, "Token {{ url: {url:?}, token: <redacted> }}")
            }
        }
    }
}

/// Tool and package cache settings for a runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Volume (or claim) name → mount path.
    pub volumes: BTreeMap<String, String>,
    pub kubernetes_pvcs: bool,
}

/// Everything an agent needs to start one ephemeral runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSpec {
    pub id: RunnerId,
    pub name: String,
    pub image: String,
    pub registration: Registration,
    pub labels: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub cache: CacheSettings,
    pub arch: Arch,
    pub owner: String,
}

/// A command from the controller to one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    StartRunner(Box<RunnerSpec>),
    StopRunner {
        id: RunnerId,
        reason: String,
    },
    /// Accept no new runners; finish the current ones.
    Drain,
}
