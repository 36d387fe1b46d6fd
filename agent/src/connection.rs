//! Opening a mutual-TLS gRPC channel to the controller.
//!
//! Certificate files are read on every attempt, so a renewed certificate is picked up without
//! a restart. Failures are classified by what retrying can do about them.

use std::time::Duration;

use shared::tls::Validity;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::AgentConfig;

/// Why a connection attempt failed, by what the agent should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// Our own material is unusable (missing, unreadable, expired): retrying cannot help
    /// until an operator fixes it.
    #[error("{0}")]
    Local(String),
    /// The controller refused us (certificate or protocol): retry, but slowly.
    #[error("{0}")]
    Rejected(String),
    /// The controller could not be reached or the session broke: retry with backoff.
    #[error("{0}")]
    Unreachable(String),
    /// The replica is a standby (or just lost its tenure); `leader` is the leader's address
    /// when it named one. Dial that (or the next URL) after the backoff.
    #[error("{message}")]
    NotLeader {
        leader: Option<String>,
        message: String,
    },
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, AttemptError> {
    std::fs::read(path)
        .map_err(|e| AttemptError::Local(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Every error in a chain, joined, so "transport error" is followed by its real cause.
pub use shared::error::chain as error_chain;

/// Whether an error text says the TLS peer refused our certificate or we refused theirs.
pub fn is_certificate_problem(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "unknownca",
        "unknown ca",
        "badcertificate",
        "alert",
        "handshake",
    ]
    .iter()
    .any(|needle| t.contains(needle))
}

/// Opens a channel to the controller replica at `url` (one of `CONTROLLER_URL`'s, or a
/// leader's address a standby named), verifying its certificate for `server_name` when given
/// (else for the URL's host).
pub async fn connect(
    config: &AgentConfig,
    url: &str,
    server_name: Option<&str>,
) -> Result<Channel, AttemptError> {
    let certs = shared::tls::read_certs(&config.tls.cert_file)
        .map_err(|e| AttemptError::Local(error_chain(&e)))?;
    Validity::of(&certs[0])
        .map_err(|e| {
            AttemptError::Local(format!(
                "cannot parse {}: {e}",
                config.tls.cert_file.display()
            ))
        })?
        .check_now()
        .map_err(|why| {
            AttemptError::Local(format!(
                "{}: {why}; enroll again with `gha-agent join` or install a new certificate",
                config.tls.cert_file.display()
            ))
        })?;
    let mut tls = ClientTlsConfig::new();
    if let Some(name) = server_name {
        tls = tls.domain_name(name);
    }
    let tls = tls
        .ca_certificate(Certificate::from_pem(read(
            &config.tls.ca_file,
            "CA certificate",
        )?))
        .identity(Identity::from_pem(
            read(&config.tls.cert_file, "certificate")?,
            read(&config.tls.key_file, "key")?,
        ));
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| AttemptError::Local(format!("the controller URL {url:?} is invalid: {e}")))?
        .tls_config(tls)
        .map_err(|e| AttemptError::Local(format!("cannot use the TLS files: {}", error_chain(&e))))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(|e| {
        let text = error_chain(&e);
        if is_certificate_problem(&text) {
            AttemptError::Rejected(format!("TLS with the controller failed: {text}"))
        } else {
            AttemptError::Unreachable(format!("cannot reach the controller: {text}"))
        }
    })
}
