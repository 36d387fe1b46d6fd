//! TLS material: reading PEM files, fingerprints, and an agent's identity from its certificate.
//!
//! Both the controller and the agent use rustls with the `ring` provider only (see TOOLCHAIN.md:
//! two providers in one process make rustls panic), installed by [`install_crypto_provider`].

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::ids::{AgentName, InvalidId};

/// Installs ring as the process-wide rustls provider. Safe to call more than once.
pub fn install_crypto_provider() {
    // An Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
}

/// Reads every certificate of a PEM file (a chain or a CA bundle).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read_err = |source| PemError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The lower-case hex SHA-256 of a certificate's DER: what a join token pins.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Why no agent identity could be taken from a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    #[error("the certificate has neither a DNS subject alternative name nor a common name")]
    NoName,
    #[error("the certificate's name is not a valid agent name")]
    InvalidName(#[source] InvalidId),
}

/// The agent identity a client certificate carries: its first DNS SAN, else its subject CN.
pub fn identity_from_cert(cert: &CertificateDer<'_>) -> Result<AgentName, IdentityError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| IdentityError::Parse(e.to_string()))?
        .and_then(|ext| {
            ext.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
        });
    let name = match san {
        Some(name) => name,
        None => parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok().map(str::to_owned))
            .ok_or(IdentityError::NoName)?,
    };
    AgentName::parse(&name).map_err(IdentityError::InvalidName)
}

/// A certificate's validity window, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| IdentityError::Parse(e.to_string()))?;
        Ok(Self {
            not_before: parsed.validity().not_before.timestamp(),
            not_after: parsed.validity().not_after.timestamp(),
        })
    }

    /// `Err` with a sentence for the operator when the certificate is not valid now.
    pub fn check_now(&self) -> Result<(), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now > self.not_after {
            return Err(format!(
                "the certificate expired {} s ago (not after {})",
                now - self.not_after,
                self.not_after
            ));
        }
        if now < self.not_before {
            return Err(format!(
                "the certificate is not valid for another {} s (check the clock)",
                self.not_before - now
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn identity_prefers_the_first_dns_san() {
        let der = cert(
            "cn-name",
            vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("Agent-A".try_into().unwrap()),
                SanType::DnsName("other".try_into().unwrap()),
            ],
        );
        assert_eq!(identity_from_cert(&der).unwrap().as_str(), "agent-a");
    }

    #[test]
    fn identity_falls_back_to_the_common_name() {
        let der = cert("agent-cn", vec![]);
        assert_eq!(identity_from_cert(&der).unwrap().as_str(), "agent-cn");
    }

    #[test]
    fn identity_rejects_unusable_names() {
        let der = cert("has spaces", vec![]);
        assert!(matches!(
            identity_from_cert(&der),
            Err(IdentityError::InvalidName(_))
        ));
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        let der = cert("x", vec![]);
        let fp = fingerprint(&der);
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
