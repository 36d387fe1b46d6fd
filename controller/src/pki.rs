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

    let (server_pem, server_key_pem) = server_certificate(&issuer, sans)?;
    write(&out.ca_cert, &ca_cert.pem(), false)?;
    write(&out.ca_key, &ca_key.serialize_pem(), true)?;
    // The served chain carries the CA too, so a joining agent can find the CA it pinned.
    write(
        &out.server_cert,
        &format!("{server_pem}{}", ca_cert.pem()),
        false,
    )?;
    write(&out.server_key, &server_key_pem, true)?;
    Ok(InitializedPki {
        ca_fingerprint: shared::tls::fingerprint(ca_cert.der()),
        ..out
    })
}

/// The names every server certificate made here carries.
const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `DEFAULT_SANS` followed by `sans`, without duplicates (compared case-insensitively).
fn all_sans(sans: &[String]) -> Vec<String> {
    let mut all: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for san in sans {
        let san = san.trim();
        if !san.is_empty() && !all.iter().any(|s| s.eq_ignore_ascii_case(san)) {
            all.push(san.to_owned());
        }
    }
    all
}

/// A new server certificate (PEM, without the CA) and its key (PEM), signed by `issuer`.
fn server_certificate(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    sans: &[String],
) -> Result<(String, String), PkiError> {
    let now = OffsetDateTime::now_utc();
    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::default();
    server_params.distinguished_name = name("gha-controller");
    server_params.subject_alt_names = all_sans(sans)
        .iter()
        .map(|s| san(s))
        .collect::<Result<_, _>>()?;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.not_before = now - Duration::minutes(5);
    server_params.not_after = now + SERVER_VALIDITY;
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params.signed_by(&server_key, issuer)?;
    Ok((server_cert.pem(), server_key.serialize_pem()))
}

/// The DNS names and IP addresses the server certificate at `path` (its first certificate)
/// is valid for.
pub fn server_names(path: &Path) -> Result<Vec<String>, PkiError> {
    let invalid = |e: String| PkiError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    };
    let certs = shared::tls::read_certs(path).map_err(|e| invalid(e.to_string()))?;
    let first = certs
        .first()
        .ok_or_else(|| invalid("no certificate".into()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| invalid(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

/// What `certs reissue` made.
#[derive(Debug, Clone)]
pub struct Reissued {
    pub server_cert: PathBuf,
    pub names: Vec<String>,
    pub ca_fingerprint: String,
}

/// A new server certificate in `dir` from the same CA (`ca.pem`, `ca-key.pem`), valid for the
/// defaults, the names the current certificate has (unless `replace`), and `sans`. The CA is
/// untouched, so enrolled agents keep trusting the controller; a running controller serves
/// the new certificate after a restart.
pub fn reissue(dir: &Path, sans: &[String], replace: bool) -> Result<Reissued, PkiError> {
    let ca_cert = dir.join(CA_CERT_FILE);
    let server_cert = dir.join(SERVER_CERT_FILE);
    let mut wanted = if replace || !server_cert.exists() {
        Vec::new()
    } else {
        server_names(&server_cert)?
    };
    wanted.extend(sans.iter().cloned());
    let ca = CertificateAuthority::load(&ca_cert, &dir.join(CA_KEY_FILE))?;
    let (pem, key) = server_certificate(&ca.issuer, &wanted)?;
    write(&dir.join(SERVER_KEY_FILE), &key, true)?;
    write(&server_cert, &format!("{pem}{}", ca.cert_pem), false)?;
    let ca_der = shared::tls::read_certs(&ca_cert).map_err(|e| PkiError::Read {
        path: ca_cert.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })?;
    Ok(Reissued {
        server_cert,
        names: all_sans(&wanted),
        ca_fingerprint: ca_der
            .first()
            .map(shared::tls::fingerprint)
            .unwrap_or_default(),
    })
}

/// The names of `wanted` that the server certificate at `path` lacks.
pub fn missing_names(path: &Path, wanted: &[String]) -> Result<Vec<String>, PkiError> {
    let have = server_names(path)?;
    Ok(wanted
        .iter()
        .filter(|w| !have.iter().any(|h| h.eq_ignore_ascii_case(w.trim())))
        .cloned()
        .collect())
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
    fn reissue_keeps_the_ca_and_the_names_and_adds_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path(), &["ctl.example".into()], false).unwrap();
        let ca_before = fs::read(&first.ca_cert).unwrap();
        let made = reissue(
            dir.path(),
            &["10.0.0.7".into(), "CTL.example".into()],
            false,
        )
        .unwrap();
        assert_eq!(fs::read(&first.ca_cert).unwrap(), ca_before, "same CA");
        assert_eq!(made.ca_fingerprint, first.ca_fingerprint);
        let names = server_names(&made.server_cert).unwrap();
        for n in ["localhost", "127.0.0.1", "::1", "ctl.example", "10.0.0.7"] {
            assert!(names.iter().any(|h| h == n), "{n} missing from {names:?}");
        }
        assert_eq!(names.len(), 5, "no duplicates: {names:?}");
        assert!(
            missing_names(&made.server_cert, &["10.0.0.7".into()])
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            missing_names(&made.server_cert, &["other.example".into()]).unwrap(),
            vec!["other.example"]
        );
        let replaced = reissue(dir.path(), &["new.example".into()], true).unwrap();
        assert!(
            !server_names(&replaced.server_cert)
                .unwrap()
                .contains(&"ctl.example".into())
        );
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
