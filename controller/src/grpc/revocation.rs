//! Revocation at the TLS handshake: a certificate whose name the operator revoked
//! (`gha-controller agents revoke NAME`) does not complete the handshake, so a revoked agent
//! never reaches an RPC (not even enrollment or renewal) on that connection.
//!
//! rustls verifies client certificates synchronously, inside the handshake, so the verifier
//! reads an in-memory list of revoked names ([`RevokedNames`]) rather than the database. The
//! list is loaded before the endpoint serves and re-read every [`REFRESH`] (the CLI revokes
//! from another process, through the same database), the same period in which live sessions
//! re-check their admission. A failed re-read keeps the last list and is logged.
//!
//! With `DATABASE_URL` the directory is the PostgreSQL one every replica shares, so this is
//! also how a revocation made through one replica (or its CLI) reaches the others: each
//! enforces it at most [`REFRESH`] plus one read later (a read waits at most the pool's 10 s
//! for a connection under load). `tests/tests/failover.rs` measures it across two processes.
//!
//! Only revocation is decided here; a superseded certificate (after a renewal or a `--replace`
//! enrollment) is refused when its session starts, with a reason the agent can show.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use shared::ids::AgentName;
use shared::tls::identity_from_cert;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::StoreError;
use crate::store::agents::AgentDirectory;

/// How often the list is re-read from the agent directory.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The names the operator revoked, as last read from the agent directory.
#[derive(Debug, Default)]
pub struct RevokedNames {
    // Written by the refresh task, read by handshakes; short sections only.
    names: RwLock<HashSet<String>>,
}

impl RevokedNames {
    /// Reads the list once (before the endpoint serves).
    pub async fn load(directory: &AgentDirectory) -> Result<Arc<Self>, StoreError> {
        let names = directory.revoked_names().await?;
        Ok(Arc::new(Self {
            names: RwLock::new(names),
        }))
    }

    pub fn is_revoked(&self, name: &AgentName) -> bool {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name.as_str())
    }

    /// Re-reads the list every [`REFRESH`] until `shutdown`.
    pub fn keep_fresh(self: Arc<Self>, directory: AgentDirectory, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match directory.revoked_names().await {
                    Ok(names) => *self.names.write().unwrap_or_else(|p| p.into_inner()) = names,
                    Err(error) => warn!(
                        %error,
                        "cannot re-read revoked agents; the TLS handshake keeps the last list"
                    ),
                }
            }
        });
    }
}

/// The CA's verifier, then the revocation list: a certificate of a revoked name is refused with
/// the `certificate_revoked` alert.
#[derive(Debug)]
pub struct RevocationVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub revoked: Arc<RevokedNames>,
}

impl ClientCertVerifier for RevocationVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        // A certificate without a usable name is refused by the session, with its reason.
        if let Ok(name) = identity_from_cert(end_entity)
            && self.revoked.is_revoked(&name)
        {
            warn!(agent = %name, "refused a revoked agent's certificate at the TLS handshake");
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
