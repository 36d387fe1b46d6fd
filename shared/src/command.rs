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
    /// Cache name (`toolcache`) → mount path; the agent names the volumes or claims.
    pub volumes: BTreeMap<String, String>,
    pub kubernetes_pvcs: bool,
}

/// The layout of a runner image, which decides how its runner is started
/// (`RUNNER_IMAGE_FLAVOR` on the controller; the agent decides what `Auto` means).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ImageFlavor {
    /// Decided by the agent: from the image's configuration (Docker) or reference (Kubernetes).
    #[default]
    Auto,
    /// `ghcr.io/actions/actions-runner`: no entry point, `/home/runner/run.sh`, user `runner`.
    Official,
    /// `myoung34/github-runner`: `/entrypoint.sh` configures from the environment, runner in
    /// `/actions-runner`.
    Myoung34,
    /// Any other layout, started with `RUNNER_COMMAND`.
    Custom,
}

impl ImageFlavor {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFlavor::Auto => "auto",
            ImageFlavor::Official => "official",
            ImageFlavor::Myoung34 => "myoung34",
            ImageFlavor::Custom => "custom",
        }
    }

    /// `auto`, `official`, `myoung34` or `custom`, case-insensitive.
    pub fn parse(value: &str) -> Option<Self> {
        [
            ImageFlavor::Auto,
            ImageFlavor::Official,
            ImageFlavor::Myoung34,
            ImageFlavor::Custom,
        ]
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(value.trim()))
    }
}

impl fmt::Display for ImageFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the runner image is started: its flavor and, for a custom image, the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageLaunch {
    pub flavor: ImageFlavor,
    /// `RUNNER_COMMAND`: the program and its arguments (custom images; empty otherwise).
    pub command: Vec<String>,
}

/// Everything an agent needs to start one ephemeral runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSpec {
    pub id: RunnerId,
    pub name: String,
    pub image: String,
    /// How `image` is started.
    pub launch: ImageLaunch,
    pub registration: Registration,
    pub labels: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub cache: CacheSettings,
    pub arch: Arch,
    pub owner: String,
    /// The repository (name only) of the job the runner was started for; `None` when the
    /// controller did not say (an older one). An organisation-level runner may still be given
    /// a job of another repository by GitHub.
    pub repository: Option<String>,
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
    /// Lift a drain the controller sent (protocol 1.2 and later).
    Undrain,
    /// The runner images the controller will use, replacing the previous set: the agent makes
    /// them ready and reports each (protocol 1.3 and later).
    PrepareImages(Vec<String>),
}
