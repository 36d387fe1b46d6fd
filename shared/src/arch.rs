//! CPU architectures that runners are placed on, and how a host's own is detected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A runner architecture, named the way container platforms name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

/// A string that names no architecture we run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture {0:?} (expected amd64 or arm64)")]
pub struct UnknownArch(pub String);

impl Arch {
    /// The architecture of the machine this binary runs on, if we support it.
    pub fn host() -> Result<Self, UnknownArch> {
        std::env::consts::ARCH.parse()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl FromStr for Arch {
    type Err = UnknownArch;

    /// Accepts the container names (`amd64`, `arm64`), GitHub's runner labels (`x64`, `arm64`)
    /// and Rust's (`x86_64`, `aarch64`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "amd64" | "x64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            _ => Err(UnknownArch(s.to_owned())),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which container platform an agent drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Kubernetes,
    /// The in-memory runtime of the test suite.
    Memory,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Kubernetes => "kubernetes",
            RuntimeKind::Memory => "memory",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_common_spelling() {
        for s in ["amd64", "X64", "x86_64"] {
            assert_eq!(s.parse::<Arch>().unwrap(), Arch::Amd64);
        }
        for s in ["arm64", "AARCH64"] {
            assert_eq!(s.parse::<Arch>().unwrap(), Arch::Arm64);
        }
        assert!("riscv64".parse::<Arch>().is_err());
    }
}
