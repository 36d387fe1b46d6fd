//! A join token for the local agent, written to a file only it can read (compose: a volume that
//! only the controller and its local agent mount), so that `docker compose up -d` enrolls that
//! agent with no manual step.
//!
//! `AGENT_BOOTSTRAP_TOKEN_FILE=/bootstrap/join-token` (and `AGENT_BOOTSTRAP_NAME`, default
//! `local`) make the controller, at every start, mint a single-use token bound to that name,
//! pinned to its CA like any other, and write it there atomically with mode 0600 — unless the
//! name is already enrolled (or revoked), in which case a leftover file is removed and nothing
//! is minted: a restart never hands out a second identity, and a used token is worth nothing.
//! The agent (`JOIN_TOKEN_FILE`, `agent::bootstrap`) spends it once and keeps its identity.
//!
//! Read here rather than in `config`: the setting matters to `serve` only, once, before start.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::ids::AgentName;

use crate::agent_policy::PolicyRequest;
use crate::config::Config;
use crate::join_tokens::{self, MintError, MintOptions};
use crate::store::agents::EnrollRefusal;

/// How long a bootstrap token is valid: the local agent may start much later than the controller.
pub const BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The local agent's name unless `AGENT_BOOTSTRAP_NAME` says otherwise.
pub const DEFAULT_BOOTSTRAP_NAME: &str = "local";

/// Where to write the token and for which agent name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapAgent {
    pub file: PathBuf,
    pub name: AgentName,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("AGENT_BOOTSTRAP_NAME: {value:?} is not a valid agent name: {reason}")]
    BadName { value: String, reason: String },
    #[error("AGENT_BOOTSTRAP_TOKEN_FILE: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mint the local agent's join token")]
    Mint(#[source] MintError),
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A fresh token for the name is in the file.
    Written,
    /// The name is enrolled (or revoked) already: no token, and no file.
    AlreadyEnrolled,
}

impl BootstrapAgent {
    /// `None` unless `AGENT_BOOTSTRAP_TOKEN_FILE` is set (and not empty).
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Option<Self>, BootstrapError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let Some(file) = get("AGENT_BOOTSTRAP_TOKEN_FILE") else {
            return Ok(None);
        };
        let value = get("AGENT_BOOTSTRAP_NAME").unwrap_or(DEFAULT_BOOTSTRAP_NAME);
        let name = AgentName::parse(value).map_err(|e| BootstrapError::BadName {
            value: value.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some(Self {
            file: PathBuf::from(file),
            name,
        }))
    }
}

/// Mints and writes the local agent's token, or removes a leftover one if it has enrolled.
/// The local agent may serve every owner of this controller (it is the operator's own host).
pub async fn ensure(config: &Config, agent: &BootstrapAgent) -> Result<Outcome, BootstrapError> {
    let options = MintOptions {
        policy: PolicyRequest {
            all_owners: true,
            ..PolicyRequest::default()
        },
        ..MintOptions::new(BOOTSTRAP_TOKEN_TTL, Some(agent.name.clone()))
    };
    match join_tokens::mint(config, options).await {
        Ok(minted) => {
            write_secret(&agent.file, &minted.token).map_err(|source| BootstrapError::Write {
                path: agent.file.clone(),
                source,
            })?;
            Ok(Outcome::Written)
        }
        Err(MintError::Refused(EnrollRefusal::NameTaken(_))) => {
            match std::fs::remove_file(&agent.file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(BootstrapError::Write {
                        path: agent.file.clone(),
                        source,
                    });
                }
            }
            Ok(Outcome::AlreadyEnrolled)
        }
        Err(e) => Err(BootstrapError::Mint(e)),
    }
}

/// Writes `text` to `path` through a temporary file created 0600 beside it, then renames it, so
/// the agent never reads half a token and nobody else can read it at all.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("join-token")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn off_unless_the_file_is_named() {
        assert_eq!(BootstrapAgent::from_env(&vars(&[])).unwrap(), None);
        assert_eq!(
            BootstrapAgent::from_env(&vars(&[("AGENT_BOOTSTRAP_TOKEN_FILE", " ")])).unwrap(),
            None
        );
    }

    #[test]
    fn the_name_defaults_to_local_and_a_bad_one_names_the_variable() {
        let agent = BootstrapAgent::from_env(&vars(&[("AGENT_BOOTSTRAP_TOKEN_FILE", "/b/t")]))
            .unwrap()
            .unwrap();
        assert_eq!(agent.name.as_str(), "local");
        assert_eq!(agent.file, PathBuf::from("/b/t"));
        let err = BootstrapAgent::from_env(&vars(&[
            ("AGENT_BOOTSTRAP_TOKEN_FILE", "/b/t"),
            ("AGENT_BOOTSTRAP_NAME", "Not A Name!"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("AGENT_BOOTSTRAP_NAME"), "{err}");
    }

    #[test]
    fn the_secret_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        write_secret(&path, "gha1.a.b.c").unwrap();
        write_secret(&path, "gha1.d.e.f").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "gha1.d.e.f\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
