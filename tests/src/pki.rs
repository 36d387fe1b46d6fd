//! Certificates for tests, made with rcgen: a CA, server and client certificates, including
//! the broken ones (another CA's, expired) that the controller must refuse.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA that writes its certificates into a directory.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
    dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).expect("self-sign CA").pem();
        std::fs::create_dir_all(dir).expect("create cert dir");
        let ca = Self {
            params,
            key,
            pem,
            dir: dir.to_owned(),
        };
        std::fs::write(ca.ca_file(), &ca.pem).expect("write CA");
        ca
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.stem()))
    }

    fn stem(&self) -> String {
        match self.params.distinguished_name.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(s)) => s.replace(' ', "-"),
            _ => "ca".into(),
        }
    }

    fn issue(&self, file: &str, mut params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("generate key");
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> CertFiles {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "controller");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("dns name")),
            SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(&format!("{}-server", self.stem()), params)
    }

    /// A client certificate with common name `cn` and optional DNS SANs, valid now.
    pub fn client(&self, cn: &str, dns_sans: &[&str]) -> CertFiles {
        let now = OffsetDateTime::now_utc();
        self.client_valid(
            cn,
            dns_sans,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
    }

    /// A client certificate valid only between `not_before` and `not_after`.
    pub fn client_valid(
        &self,
        cn: &str,
        dns_sans: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> CertFiles {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = dns_sans
            .iter()
            .map(|s| SanType::DnsName((*s).try_into().expect("dns name")))
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        self.issue(&format!("{}-client-{cn}", self.stem()), params)
    }
}
