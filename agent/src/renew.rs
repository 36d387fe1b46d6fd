//! Certificate renewal over the agent's mutual-TLS connection, with no operator step.
//!
//! An enrolled agent's certificate is short-lived (30 days by default). At two thirds of its
//! life the session asks the controller (`AgentService.Renew`) for a new certificate over the
//! same key, authenticated by the current one, and replaces `agent.pem` atomically (a reader,
//! such as the next connection attempt, sees the old or the new file, never half of one). The
//! key is not rotated, so a crash between two writes cannot leave a certificate and a key that
//! do not belong together; its mode is enforced (0600) on every renewal. A failed renewal is
//! retried after a tenth of the time left (between 1 s and 1 h), so a controller that cannot
//! renew (one with the operator's own PKI) is asked rarely, and the old certificate keeps
//! working until it expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, KeyPair};
use shared::tls::Validity;
use tonic::transport::Channel;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("cannot read {what}: {detail}")]
    Read { what: &'static str, detail: String },
    #[error("cannot make a certificate request for the key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the controller refused to renew the certificate: {0}")]
    Refused(String),
    #[error("the controller sent an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// When a certificate valid over `validity` should be renewed: at 2/3 of its life.
pub fn due(validity: &Validity) -> SystemTime {
    let life = (validity.not_after - validity.not_before).max(0);
    at(validity.not_before + life * 2 / 3)
}

/// How long to wait after a failed renewal of a certificate valid until `not_after`.
pub fn retry_after(not_after: i64, now: SystemTime) -> Duration {
    let left = (not_after - unix(now)).max(0) as u64;
    Duration::from_secs(left / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// The validity of the certificate on disk.
pub fn current(tls: &TlsFiles) -> Result<Validity, RenewError> {
    let certs = shared::tls::read_certs(&tls.cert_file).map_err(|e| RenewError::Read {
        what: "the certificate",
        detail: crate::connection::error_chain(&e),
    })?;
    Validity::of(&certs[0]).map_err(|e| RenewError::Read {
        what: "the certificate",
        detail: e.to_string(),
    })
}

/// Renews the certificate in `tls` over `channel`; returns the new one's validity.
pub async fn renew(channel: Channel, tls: &TlsFiles) -> Result<Validity, RenewError> {
    let key_pem = std::fs::read_to_string(&tls.key_file).map_err(|e| RenewError::Read {
        what: "the key",
        detail: format!("{}: {e}", tls.key_file.display()),
    })?;
    let key = KeyPair::from_pem(&key_pem)?;
    // The controller decides the name; the request only proves possession of the key.
    let csr_pem = CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let response = AgentServiceClient::new(channel)
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|status| RenewError::Refused(status.message().to_owned()))?
        .into_inner();
    let validity =
        rustls_pki_types::pem::PemObject::from_pem_slice(response.certificate_pem.as_bytes())
            .map_err(|e: rustls_pki_types::pem::Error| RenewError::BadCertificate(e.to_string()))
            .and_then(|der: rustls_pki_types::CertificateDer<'static>| {
                Validity::of(&der).map_err(|e| RenewError::BadCertificate(e.to_string()))
            })?;
    shared::private_files::create_private_file(&tls.key_file).map_err(|source| {
        RenewError::Write {
            path: tls.key_file.clone(),
            source,
        }
    })?;
    shared::private_files::write_atomic(&tls.cert_file, response.certificate_pem.as_bytes(), 0o644)
        .map_err(|source| RenewError::Write {
            path: tls.cert_file.clone(),
            source,
        })?;
    Ok(validity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_and_retries_are_bounded() {
        let v = Validity {
            not_before: 1_000,
            not_after: 1_000 + 30 * 86_400,
        };
        assert_eq!(unix(due(&v)), 1_000 + 20 * 86_400);
        assert_eq!(
            retry_after(v.not_after, at(v.not_after - 50)),
            Duration::from_secs(5)
        );
        assert_eq!(
            retry_after(v.not_after, at(v.not_after + 50)),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(v.not_after, at(0)), Duration::from_secs(3600));
    }
}
