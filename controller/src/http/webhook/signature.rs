//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the hook's secret, compared in
//! constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a signature was refused. Says nothing about the expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not sha256=<64 hex digits>")]
    Malformed,
    #[error("the signature does not match the owner's webhook secret")]
    Mismatch,
}

/// Checks `header` (the `X-Hub-Signature-256` value) against `body` signed with `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn githubs_documented_test_vector_verifies() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify(SECRET, b"Hello, World!", Some(header)), Ok(()));
        assert_eq!(
            verify(SECRET, b"Hello, World?", Some(header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", b"Hello, World!", Some(header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(verify(SECRET, b"x", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(SECRET, b"x", Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, b"x", Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, b"x", Some(&format!("sha256={}", "g".repeat(64)))),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn every_fixture_signature_verifies() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/src/github_sim/fixtures/webhooks");
        let known: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("signatures.json")).unwrap()).unwrap();
        let files = known["files"].as_object().unwrap();
        assert!(files.len() > 10);
        for (file, sig) in files {
            let body = std::fs::read(dir.join(file)).unwrap();
            assert_eq!(
                verify(SECRET, &body, sig["X-Hub-Signature-256"].as_str()),
                Ok(()),
                "{file}"
            );
        }
    }
}
