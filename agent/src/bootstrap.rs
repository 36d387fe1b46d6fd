//! Enrolling at start: an agent that has no identity yet in `TLS_DIR` but is given a join
//! token (`JOIN_TOKEN`, or `JOIN_TOKEN_FILE` naming a file that holds one) joins first, then
//! runs. This is what makes `docker compose up -d` enroll the local agent with no manual step
//! (the controller writes the token file, `controller::bootstrap`), and a remote agent start
//! with one variable. Once `TLS_DIR` holds a certificate the token is ignored, so a restart keeps
//! the identity and a spent token is never tried again.
//!
//! [`plan`] is the decision (pure, from the variables and what exists on disk); [`run`] does it,
//! waiting a bounded time for the token file and for the controller to answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{CERT_FILE, KEY_FILE};
use crate::join::{JoinError, JoinOptions, Joined};

/// How long to wait for `JOIN_TOKEN_FILE` to appear (the controller writes it when it starts).
pub const TOKEN_FILE_WAIT: Duration = Duration::from_secs(120);
/// How long to keep trying to reach the controller to enroll.
pub const JOIN_WAIT: Duration = Duration::from_secs(120);

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Value(String),
    File(PathBuf),
}

/// A join to do before running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub controller_url: String,
    pub dir: PathBuf,
    pub token: TokenSource,
    /// The name to ask for (the token's wins).
    pub name: String,
    /// A key without a certificate (a join cut short) is replaced.
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0} is set but TLS_DIR is not: the agent needs a directory to keep its identity in")]
    NoDir(&'static str),
    #[error("JOIN_TOKEN needs CONTROLLER_URL (https://host:port of the controller's gRPC port)")]
    NoController,
    #[error(
        "JOIN_TOKEN_FILE: {0} did not appear within {TOKEN_FILE_WAIT:?} (the controller writes it \
         at start when AGENT_BOOTSTRAP_TOKEN_FILE is set)"
    )]
    NoTokenFile(PathBuf),
    #[error("JOIN_TOKEN_FILE: cannot read {path}: {source}")]
    ReadTokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enroll with the join token")]
    Join(#[source] JoinError),
}

/// Decides whether to join before running: only with a token and no certificate in `TLS_DIR`.
pub fn plan(
    vars: &HashMap<String, String>,
    exists: impl Fn(&Path) -> bool,
    host_name: &str,
) -> Result<Option<Plan>, BootstrapError> {
    let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let (token, var) = match (get("JOIN_TOKEN"), get("JOIN_TOKEN_FILE")) {
        (Some(value), _) => (TokenSource::Value(value.to_owned()), "JOIN_TOKEN"),
        (None, Some(file)) => (TokenSource::File(PathBuf::from(file)), "JOIN_TOKEN_FILE"),
        (None, None) => return Ok(None),
    };
    let dir = PathBuf::from(get("TLS_DIR").ok_or(BootstrapError::NoDir(var))?);
    if exists(&dir.join(CERT_FILE)) {
        return Ok(None);
    }
    // With several replicas listed, the first enrolls the agent (they share the CA).
    let controller_url = get("CONTROLLER_URL")
        .and_then(|list| list.split(',').map(str::trim).find(|u| !u.is_empty()))
        .ok_or(BootstrapError::NoController)?
        .to_owned();
    Ok(Some(Plan {
        controller_url,
        force: exists(&dir.join(KEY_FILE)),
        dir,
        token,
        name: get("AGENT_NAME").unwrap_or(host_name).to_owned(),
    }))
}

/// Polls for the token file until `deadline`.
async fn read_token_file(path: &Path, wait: Duration) -> Result<String, BootstrapError> {
    let deadline = Instant::now() + wait;
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BootstrapError::ReadTokenFile {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(BootstrapError::NoTokenFile(path.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Carries out `plan`: reads the token, then joins, retrying (with back-off, within
/// [`JOIN_WAIT`]) only while the controller cannot be reached; a refusal is final.
pub async fn run(plan: &Plan) -> Result<Joined, BootstrapError> {
    let token = match &plan.token {
        TokenSource::Value(v) => v.clone(),
        TokenSource::File(path) => {
            tracing::info!(file = %path.display(), "waiting for the join token file");
            read_token_file(path, TOKEN_FILE_WAIT).await?
        }
    };
    let options = JoinOptions {
        controller_url: plan.controller_url.clone(),
        token,
        dir: plan.dir.clone(),
        ca_fingerprint: None,
        ca_file: None,
        name: plan.name.clone(),
        force: plan.force,
    };
    let deadline = Instant::now() + JOIN_WAIT;
    let mut delay = Duration::from_millis(250);
    loop {
        match crate::join::join(&options).await {
            Ok(joined) => return Ok(joined),
            Err(JoinError::Unreachable(reason)) if Instant::now() + delay < deadline => {
                tracing::info!(%reason, retry_in = ?delay, "controller not reachable yet; retrying the join");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(BootstrapError::Join(e)),
        }
    }
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

    const BASE: [(&str, &str); 2] = [
        ("TLS_DIR", "/var/lib/gha-agent"),
        ("CONTROLLER_URL", "https://controller:9443"),
    ];

    #[test]
    fn no_token_no_join() {
        assert_eq!(plan(&vars(&BASE), |_| false, "h").unwrap(), None);
    }

    #[test]
    fn a_token_file_and_no_identity_join_under_the_host_name() {
        let mut v = vars(&BASE);
        v.insert("JOIN_TOKEN_FILE".into(), "/bootstrap/join-token".into());
        let p = plan(&v, |_| false, "host-1").unwrap().unwrap();
        assert_eq!(p.token, TokenSource::File("/bootstrap/join-token".into()));
        assert_eq!(p.name, "host-1");
        assert!(!p.force);
        assert_eq!(p.dir, PathBuf::from("/var/lib/gha-agent"));
    }

    #[test]
    fn an_identity_present_ignores_the_token_so_a_restart_keeps_it() {
        let mut v = vars(&BASE);
        v.insert("JOIN_TOKEN".into(), "gha1.x.y.z".into());
        let p = plan(&v, |p| p.ends_with(CERT_FILE) || p.ends_with(KEY_FILE), "h").unwrap();
        assert_eq!(p, None);
    }

    #[test]
    fn a_key_without_a_certificate_is_replaced() {
        let mut v = vars(&BASE);
        v.insert("JOIN_TOKEN".into(), "gha1.x.y.z".into());
        v.insert("AGENT_NAME".into(), "edge-1".into());
        let p = plan(&v, |p| p.ends_with(KEY_FILE), "h").unwrap().unwrap();
        assert!(p.force);
        assert_eq!(p.name, "edge-1");
        assert_eq!(p.token, TokenSource::Value("gha1.x.y.z".into()));
    }

    #[test]
    fn missing_settings_name_the_variable() {
        let v = vars(&[("JOIN_TOKEN", "t"), ("CONTROLLER_URL", "https://c:1")]);
        let e = plan(&v, |_| false, "h").unwrap_err();
        assert!(e.to_string().contains("TLS_DIR"), "{e}");
        let v = vars(&[("JOIN_TOKEN_FILE", "/f"), ("TLS_DIR", "/d")]);
        let e = plan(&v, |_| false, "h").unwrap_err();
        assert!(e.to_string().contains("CONTROLLER_URL"), "{e}");
    }

    #[tokio::test]
    async fn a_token_file_that_never_comes_is_an_error_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("join-token");
        let e = read_token_file(&path, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, BootstrapError::NoTokenFile(_)), "{e}");
        std::fs::write(&path, "gha1.a.b.c\n").unwrap();
        assert_eq!(
            read_token_file(&path, Duration::from_millis(300))
                .await
                .unwrap(),
            "gha1.a.b.c"
        );
    }
}
