//! The text form of a one-time join token: `gha1.<id>.<secret>[.<ca-sha256>]`.
//!
//! The id finds the token in the controller's store, the secret proves possession (only its
//! hash is stored), and the optional CA fingerprint lets a joining agent authenticate the
//! controller on first contact instead of trusting whoever answers.

use std::fmt;

const PREFIX: &str = "gha1";

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: Option<String>,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed join token: expected gha1.<id>.<secret>[.<ca-sha256>] ({0})")]
pub struct MalformedJoinToken(&'static str);

fn is_hex(s: &str, len: Option<usize>) -> bool {
    !s.is_empty() && len.is_none_or(|l| s.len() == l) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl JoinToken {
    /// A fresh token with a 64-bit id and a 128-bit secret.
    pub fn generate(ca_fingerprint: Option<String>) -> Self {
        use rand::RngCore;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret: hex::encode(secret),
            ca_fingerprint,
        }
    }

    pub fn parse(text: &str) -> Result<Self, MalformedJoinToken> {
        let mut parts = text.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(MalformedJoinToken("unknown prefix"));
        }
        let id = parts.next().ok_or(MalformedJoinToken("no id"))?;
        let secret = parts.next().ok_or(MalformedJoinToken("no secret"))?;
        let fingerprint = parts.next();
        if parts.next().is_some() {
            return Err(MalformedJoinToken("too many parts"));
        }
        if !is_hex(id, Some(16)) || !is_hex(secret, Some(32)) {
            return Err(MalformedJoinToken(
                "id or secret is not hex of the right length",
            ));
        }
        if let Some(fp) = fingerprint
            && !is_hex(fp, Some(64))
        {
            return Err(MalformedJoinToken(
                "the CA fingerprint is not a SHA-256 in hex",
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            ca_fingerprint: fingerprint.map(str::to_ascii_lowercase),
        })
    }

    /// The token as the operator hands it to an agent.
    pub fn to_text(&self) -> String {
        match &self.ca_fingerprint {
            Some(fp) => format!("{PREFIX}.{}.{}.{fp}", self.id, self.secret),
            None => format!("{PREFIX}.{}.{}", self.id, self.secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_fingerprint() {
        let t = JoinToken::generate(Some("ab".repeat(32)));
        assert_eq!(JoinToken::parse(&t.to_text()).unwrap(), t);
        let t = JoinToken::generate(None);
        assert_eq!(JoinToken::parse(&t.to_text()).unwrap(), t);
    }

    #[test]
    fn rejects_garbage() {
        assert!(JoinToken::parse("").is_err());
        assert!(JoinToken::parse("gha1.zz.zz").is_err());
        assert!(
            JoinToken::parse("gha2.0123456789abcdef.0123456789abcdef0123456789abcdef").is_err()
        );
        assert!(
            JoinToken::parse("gha1.0123456789abcdef.0123456789abcdef0123456789abcdef.12").is_err()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = JoinToken::generate(None);
        assert!(!format!("{t:?}").contains(&t.secret));
    }
}
