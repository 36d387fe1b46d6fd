//! The agents' TLS endpoint: rustls with client certificates verified against our CA.
//!
//! Handshakes are done here rather than inside tonic so that every rejected agent gets a clear
//! log line (no certificate is still let through to the RPC layer, where only enrollment is
//! allowed without one), and so that the verified identity travels to the RPC handlers as
//! [`PeerInfo`] through tonic's `Connected` hook.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use shared::ids::AgentName;
use shared::tls::{PemError, identity_from_cert, read_certs, read_key};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::revocation::{RevocationVerifier, RevokedNames};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the CA file {path} holds no usable CA certificate")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the server certificate or key is unusable")]
    ServerCert(#[source] rustls::Error),
}

/// Builds the server configuration: our certificate chain (with the CA appended, so joining
/// agents can find the CA they pinned), and client certificates checked against the CA and
/// then against the `revoked` names ([`super::revocation`]).
pub fn server_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
    revoked: Arc<RevokedNames>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let ca_certs = read_certs(ca_file)?;
    let mut roots = RootCertStore::empty();
    for cert in &ca_certs {
        roots
            .add(cert.clone())
            .map_err(|source| TlsSetupError::BadCa {
                path: ca_file.to_owned(),
                source,
            })?;
    }
    let mut chain = read_certs(cert_file)?;
    for ca in &ca_certs {
        if !chain.contains(ca) {
            chain.push(ca.clone());
        }
    }
    let key = read_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsSetupError::Verifier)?;
    let verifier = Arc::new(RevocationVerifier {
        inner: verifier,
        revoked,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::ServerCert)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsSetupError::ServerCert)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Who is at the other end of a connection, as verified during the handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// `None` without a client certificate; `Some(Err)` when the certificate verified but
    /// carries no usable name.
    pub identity: Option<Result<AgentName, String>>,
    /// SHA-256 of the client certificate, what the agent directory binds a name to.
    pub cert_sha256: Option<String>,
}

/// A TLS connection that tonic serves, carrying its [`PeerInfo`].
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Which side ended a failed handshake (`agent` or `controller`, or `unknown`) and what to do
/// about it: an agent that refuses the *server's* certificate (most often because the name it
/// dials is not among the certificate's names) is not an agent with a bad certificate.
pub fn handshake_failure(error: &io::Error) -> (&'static str, String) {
    use rustls::AlertDescription as A;
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return (
            "unknown",
            "agent TLS handshake failed (the connection broke or is not TLS)".into(),
        );
    };
    match tls {
        rustls::Error::AlertReceived(alert) => {
            let why = match alert {
                A::BadCertificate | A::CertificateUnknown => {
                    "most often the name the agent dials (its CONTROLLER_URL host) is not among \
                     the server certificate's names: add it to TLS_SANS (built-in PKI: it is \
                     reissued at start) or run `gha-controller certs reissue --san <name>`"
                }
                A::UnknownCA => {
                    "the agent does not trust this controller's CA: its TLS_CA_FILE (ca.pem) is \
                     from another installation"
                }
                A::CertificateExpired => {
                    "the agent finds the server certificate expired (or its clock is wrong)"
                }
                _ => "see the agent's log",
            };
            (
                "agent",
                format!("the agent refused the controller's certificate ({alert:?}): {why}"),
            )
        }
        rustls::Error::InvalidCertificate(why) => (
            "controller",
            format!(
                "agent rejected during the TLS handshake: its client certificate is not valid \
                 ({why:?}); it must be signed by this controller's CA, be within its \
                 validity period and not be revoked"
            ),
        ),
        rustls::Error::NoCertificatesPresented => (
            "controller",
            "agent rejected during the TLS handshake: it presented no client certificate".into(),
        ),
        other => ("unknown", format!("agent TLS handshake failed: {other}")),
    }
}

/// Accepts TCP connections until `shutdown`, runs each handshake in its own task (bounded by a
/// timeout) and hands finished connections to tonic through the returned channel.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<TlsConnection>> {
    // tonic's server holds the receiver; this accept loop and its handshake tasks hold senders.
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        warn!(%error, "cannot accept an agent connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Err(_) => warn!(peer = %addr, "agent TLS handshake timed out"),
                    Ok(Err(error)) => {
                        let (side, hint) = handshake_failure(&error);
                        warn!(peer = %addr, %error, refused_by = side, "{hint}");
                    }
                    Ok(Ok(stream)) => {
                        let leaf = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first());
                        let identity =
                            leaf.map(|cert| identity_from_cert(cert).map_err(|e| e.to_string()));
                        let cert_sha256 = leaf.map(|cert| shared::tls::fingerprint(cert));
                        debug!(peer = %addr, ?identity, "agent TLS handshake done");
                        let peer = PeerInfo {
                            addr,
                            identity,
                            cert_sha256,
                        };
                        let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                    }
                }
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn an_agent_refusing_the_server_name_is_not_blamed_on_its_certificate() {
        let (side, hint) = handshake_failure(&tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate,
        )));
        assert_eq!(side, "agent");
        assert!(hint.contains("TLS_SANS"), "{hint}");
        assert!(!hint.contains("client certificate"), "{hint}");

        let (side, hint) = handshake_failure(&tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert_eq!(side, "controller");
        assert!(hint.contains("client certificate"), "{hint}");

        let (side, _) = handshake_failure(&tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        )));
        assert_eq!(side, "agent");
        assert_eq!(
            handshake_failure(&io::Error::from(io::ErrorKind::ConnectionReset)).0,
            "unknown"
        );
    }
}
