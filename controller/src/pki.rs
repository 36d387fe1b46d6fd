//! The built-in PKI: a CA made by `gha-controller certs init`, the controller's server
//! certificate, and signing of agents' certificate requests during enrollment.
//!
//! Operators who bring their own PKI never need this module: the controller then only reads
//! `TLS_CA_FILE`, `TLS_CERT_FILE` and `TLS_KEY_FILE`.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use shared::ids::AgentName;
use time::{Duration, OffsetDateTime};

/// File names written by `certs init` inside its directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const SERVER_CERT_FILE: &str = "controller.pem";
pub const SERVER_KEY_FILE: &str = "controller-key.pem";

/// How long certificates made here are valid.
const CA_VALIDITY: Duration = Duration::days(3650);
const SERVER_VALIDITY: Duration = Duration::days(825);
/// How far back an agent certificate's `notBefore` is set, against clock skew: five minutes,
/// or a sixth of a short certificate's life (so its renewal point stays in the future).
const MAX_BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate or sign a certificate")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to overwrite")]
    Exists { path: PathBuf },
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    #[error("the certificate request is invalid or its signature does not verify")]
    InvalidCsr(#[source] rcgen::Error),
}

/// What `certs init` made.
#[derive(Debug, Clone)]
pub struct InitializedPki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub ca_fingerprint: String,
}

/// Makes a CA and a server certificate for the controller, with the given DNS names and IP
/// addresses as subject alternative names (`localhost`, `127.0.0.1` and `::1` are always added).
pub fn init(dir: &Path, sans: &[String], force: bool) -> Result<InitializedPki, PkiError> {
    let out = InitializedPki {
        ca_cert: dir.join(CA_CERT_FILE),
        ca_key: dir.join(CA_KEY_FILE),
        server_cert: dir.join(SERVER_CERT_FILE),
        server_key: dir.join(SERVER_KEY_FILE),
        ca_fingerprint: String::new(),
    };
    if !force {
        for path in [&out.ca_cert, &out.ca_key, &out.server_cert, &out.server_key] {
            if path.exists() {
                return Err(PkiError::Exists { path: path.clone() });
            }
        }
    }
    shared::private_files::create_private_dir(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;

    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("gha-scaler CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::minutes(5);
    ca_params.not_after = now + CA_VALIDITY;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let mut all_sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for san in sans {
        if !all_sans.iter().any(|s| s.eq_ignore_ascii_case(san)) {
            all_sans.push(san.clone());
        }
    }
    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = name("gha-controller");
    server_params.subject_alt_names = all_sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.not_before = now - Duration::minutes(5);
    server_params.not_after = now + SERVER_VALIDITY;
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    write(&out.ca_cert, &ca_cert.pem(), false)?;
    write(&out.ca_key, &ca_key.serialize_pem(), true)?;
    // The served chain carries the CA too, so a joining agent can find the CA it pinned.
    write(
        &out.server_cert,
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        false,
    )?;
    write(&out.server_key, &server_key.serialize_pem(), true)?;
    Ok(InitializedPki {
        ca_fingerprint: shared::tls::fingerprint(ca_cert.der()),
        ..out
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(value: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    value
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| PkiError::InvalidSan(value.to_owned()))
}

/// Writes a file atomically, created with its final mode: 0600 for keys, 0644 otherwise.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let mode = if secret { 0o600 } else { 0o644 };
    shared::private_files::write_atomic(path, contents.as_bytes(), mode).map_err(|source| {
        PkiError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub pem: String,
    /// SHA-256 of its DER, what the controller binds the agent's name to.
    pub sha256: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The CA, with its key, that signs agents' client certificates during enrollment.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| PkiError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key = KeyPair::from_pem(&read(key_path)?)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Self { cert_pem, issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Checks a PKCS#10 request's signature and returns its public key, so that a bad request
    /// is refused before a join token is spent on it.
    pub fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, PkiError> {
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::InvalidCsr)
    }

    /// Issues a client certificate for `agent` over the request's key, valid for `validity`.
    /// Everything else the request asks for (names, usages, CA flags) is ignored: the
    /// controller decides.
    pub fn sign_agent(
        &self,
        csr: &CertificateSigningRequestParams,
        agent: &AgentName,
        validity: std::time::Duration,
    ) -> Result<SignedCert, PkiError> {
        let now = OffsetDateTime::now_utc();
        let validity = Duration::try_from(validity).unwrap_or(Duration::days(365));
        let backdate = std::cmp::min(validity / 6_i32, MAX_BACKDATE);
        let mut params = CertificateParams::default();
        params.distinguished_name = name(agent.as_str());
        params.subject_alt_names = vec![san(agent.as_str())?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = now - backdate;
        params.not_after = now + validity;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(SignedCert {
            pem: cert.pem(),
            sha256: shared::tls::fingerprint(cert.der()),
            expires_at: params.not_after.unix_timestamp(),
        })
    }
}

/// The names a request asks for: its first DNS SAN, else its CN.
pub fn requested_name(csr: &CertificateSigningRequestParams) -> Option<String> {
    csr.params
        .subject_alt_names
        .iter()
        .find_map(|s| match s {
            SanType::DnsName(n) => Some(n.to_string()),
            _ => None,
        })
        .or_else(
            || match csr.params.distinguished_name.get(&DnType::CommonName) {
                Some(rcgen::DnValue::Utf8String(s)) => Some(s.clone()),
                Some(rcgen::DnValue::PrintableString(s)) => Some(s.as_str().to_owned()),
                _ => None,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_sign_an_agent_request() {
        let dir = tempfile::tempdir().unwrap();
        let pki = init(dir.path(), &["ctl.example".into()], false).unwrap();
        assert!(matches!(
            init(dir.path(), &[], false),
            Err(PkiError::Exists { .. })
        ));
        let ca = CertificateAuthority::load(&pki.ca_cert, &pki.ca_key).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["wanted-name".to_string()]).unwrap();
        req.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr_pem = req.serialize_request(&key).unwrap().pem().unwrap();
        let csr = CertificateAuthority::parse_csr(&csr_pem).unwrap();
        assert_eq!(requested_name(&csr).as_deref(), Some("wanted-name"));

        let agent = AgentName::parse("granted").unwrap();
        let signed = ca
            .sign_agent(&csr, &agent, std::time::Duration::from_secs(3600))
            .unwrap();
        let pem = signed.pem;
        let der = rustls_pki_types::CertificateDer::from(
            x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .unwrap()
                .1
                .contents,
        );
        assert_eq!(shared::tls::identity_from_cert(&der).unwrap(), agent);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(
            !parsed.is_ca(),
            "a request must not be able to ask for a CA certificate"
        );
        assert_eq!(signed.sha256, shared::tls::fingerprint(&der));
        assert_eq!(parsed.validity().not_after.timestamp(), signed.expires_at);
        let life = signed.expires_at - parsed.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300, "an hour, backdated five minutes");
    }

    #[test]
    fn keys_are_private_and_the_directory_is_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = init(&pki_dir, &[], false).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki_dir), 0o700);
        assert_eq!(mode(&pki.ca_key), 0o600);
        assert_eq!(mode(&pki.server_key), 0o600);
        assert_eq!(mode(&pki.ca_cert), 0o644);
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let key = KeyPair::generate().unwrap();
        let req = CertificateParams::new(vec!["x".to_string()]).unwrap();
        let mut der = req.serialize_request(&key).unwrap().der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0xff;
        assert!(CertificateSigningRequestParams::from_der(&der.into()).is_err());
    }
}
