//! `gha-agent join`: enrolls this agent with a one-time join token.
//!
//! 1. Authenticate the controller without trusting first contact: the CA comes from `--ca-file`,
//!    or is the certificate in the controller's served chain whose SHA-256 matches the
//!    fingerprint pinned in the token (or given with `--ca-fingerprint`). Nothing secret is sent
//!    until then.
//! 2. Generate a key here (it never leaves this host) and a CSR for the agent's name.
//! 3. Over TLS verified against that CA, trade the token and CSR for a client certificate.
//! 4. Write `ca.pem`, `agent.pem` and `agent-key.pem` (mode 0600) into the directory (0700),
//!    each atomically and created with its mode, also over older files with `--force`.
//!
//! The name is the token's: the operator bound it when minting; `--name` is only what the
//! request asks for and is ignored by a controller that fixes it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proto::v1 as pb;
use proto::v1::enrollment_service_client::EnrollmentServiceClient;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use shared::join_token::JoinToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::{CA_FILE, CERT_FILE, KEY_FILE};
use crate::connection::error_chain;

#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// `https://host:port` of the controller's gRPC endpoint.
    pub controller_url: String,
    pub token: String,
    pub dir: PathBuf,
    /// Overrides the fingerprint pinned in the token.
    pub ca_fingerprint: Option<String>,
    /// Trust this CA file instead of a fingerprint.
    pub ca_file: Option<PathBuf>,
    /// The name to ask for (the token's name wins).
    pub name: String,
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] shared::join_token::MalformedJoinToken),
    #[error(
        "no way to authenticate the controller: the token pins no CA fingerprint; \
         pass --ca-fingerprint or --ca-file"
    )]
    NoTrustAnchor,
    #[error("{0} already exists; pass --force to replace this agent's identity")]
    Exists(PathBuf),
    #[error("the controller URL {0:?} is not https://host:port")]
    BadUrl(String),
    #[error("cannot reach the controller: {0}")]
    Unreachable(String),
    #[error(
        "the controller presented no certificate with the pinned CA fingerprint {expected} \
         (it presented: {presented}); refusing to send the token"
    )]
    PinMismatch { expected: String, presented: String },
    #[error("the controller refused to enroll this agent: {0}")]
    Refused(String),
    #[error("cannot use the CA file: {0}")]
    CaFile(String),
    #[error("cannot make a key or certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `join` wrote.
#[derive(Debug, Clone)]
pub struct Joined {
    pub agent_name: String,
    pub dir: PathBuf,
}

pub async fn join(options: &JoinOptions) -> Result<Joined, JoinError> {
    let token = JoinToken::parse(&options.token)?;
    let key_path = options.dir.join(KEY_FILE);
    if key_path.exists() && !options.force {
        return Err(JoinError::Exists(key_path));
    }
    let ca_pem = match &options.ca_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| JoinError::CaFile(format!("{}: {e}", path.display())))?,
        None => {
            let pin = options
                .ca_fingerprint
                .clone()
                .or(token.ca_fingerprint.clone())
                .ok_or(JoinError::NoTrustAnchor)?
                .to_ascii_lowercase()
                .replace(':', "");
            let chain = presented_chain(&options.controller_url).await?;
            let ca = chain
                .iter()
                .find(|c| shared::tls::fingerprint(c) == pin)
                .ok_or_else(|| JoinError::PinMismatch {
                    expected: pin.clone(),
                    presented: chain
                        .iter()
                        .map(|c| shared::tls::fingerprint(c))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            pem::encode(&pem::Pem::new("CERTIFICATE", ca.to_vec()))
        }
    };

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![options.name.clone()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, options.name.clone());
    let csr_pem = params.serialize_request(&key)?.pem()?;

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem));
    let channel = Endpoint::from_shared(options.controller_url.clone())
        .map_err(|_| JoinError::BadUrl(options.controller_url.clone()))?
        .tls_config(tls)
        .map_err(|e| JoinError::CaFile(error_chain(&e)))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| JoinError::Unreachable(error_chain(&e)))?;
    let response = EnrollmentServiceClient::new(channel)
        .join(pb::JoinRequest {
            token: options.token.trim().to_owned(),
            csr_pem,
        })
        .await
        .map_err(|status| JoinError::Refused(status.message().to_owned()))?
        .into_inner();

    shared::private_files::create_private_dir(&options.dir).map_err(|source| JoinError::Write {
        path: options.dir.clone(),
        source,
    })?;
    write(&options.dir.join(CA_FILE), &ca_pem, false)?;
    write(
        &options.dir.join(CERT_FILE),
        &response.certificate_pem,
        false,
    )?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok(Joined {
        agent_name: response.agent_name,
        dir: options.dir.clone(),
    })
}

/// Replaces `path` atomically with a file created with its final mode (0600 for the key), so
/// `--force` over an older, more open key file leaves a private one.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), JoinError> {
    let mode = if secret { 0o600 } else { 0o644 };
    shared::private_files::write_atomic(path, contents.as_bytes(), mode).map_err(|source| {
        JoinError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// The certificate chain the controller presents, captured in a handshake that sends nothing.
async fn presented_chain(url: &str) -> Result<Vec<CertificateDer<'static>>, JoinError> {
    let bad_url = || JoinError::BadUrl(url.to_owned());
    let authority = url
        .strip_prefix("https://")
        .ok_or_else(bad_url)?
        .split('/')
        .next()
        .ok_or_else(bad_url)?;
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad_url)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad_url())?;
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| bad_url())?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(CaptureChain {
        provider: provider.clone(),
        chain: Mutex::default(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| JoinError::Unreachable(format!("{host}:{port}: {e}")))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| JoinError::Unreachable(format!("TLS handshake: {e}")))?;
    let chain = capture
        .chain
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(chain)
}

/// Accepts any chain but records it; used only to find the pinned CA before anything is sent.
/// Handshake signatures are still verified, so the server must hold its certificate's key.
#[derive(Debug)]
struct CaptureChain {
    provider: Arc<rustls::crypto::CryptoProvider>,
    // Written once by the handshake, read after it.
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for CaptureChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
