//! Which owners a delivery may speak for, decided from its signature before its JSON is read.
//!
//! Every distinct configured webhook secret is tried against the raw body (a handful of
//! HMAC-SHA256 computations, microseconds each), giving the set of owners whose secret signed
//! it. The payload is parsed only after that, and the owner it names must be in the set:
//! a delivery signed with owner B's secret that names owner A's repository is refused
//! ([`Authority::admits`]). Owners that share a secret (typically by falling back to
//! `WEBHOOK_SECRET`) cannot be told apart; [`SecretBook::new`] warns about them at start.

use shared::owner::Owner;
use tracing::warn;

use super::signature::{self, SignatureError};
use crate::config::Config;

/// The configured secrets, each with the owners that use it.
pub struct SecretBook {
    secrets: Vec<(crate::config::Secret, Vec<Owner>)>,
    /// Owners without a secret (only with `ALLOW_UNSIGNED_WEBHOOKS=true`).
    unsigned: Vec<Owner>,
}

/// The owners a verified signature speaks for (empty for an unsigned delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    signed_for: Vec<Owner>,
}

/// Why the owner a payload names may not be served from this delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The owner has a secret and the delivery carried no valid signature.
    Unsigned(SignatureError),
    /// The delivery was signed, but with the secret of other owners.
    OtherOwner,
}

impl SecretBook {
    pub fn new(config: &Config) -> Self {
        for group in config.shared_webhook_secrets() {
            warn!(
                owners = %group.join(","),
                "these owners verify webhooks with the same secret (set OWNER_<NAME>_WEBHOOK_SECRET \
                 for each): a delivery signed by one of them can speak for the others"
            );
        }
        let mut secrets: Vec<(crate::config::Secret, Vec<Owner>)> = Vec::new();
        let mut unsigned = Vec::new();
        for o in &config.owners {
            match &o.webhook_secret {
                Some(secret) => match secrets.iter_mut().find(|(s, _)| s == secret) {
                    Some((_, owners)) => owners.push(o.owner()),
                    None => secrets.push((secret.clone(), vec![o.owner()])),
                },
                None => unsigned.push(o.owner()),
            }
        }
        Self { secrets, unsigned }
    }

    /// Checks `header` (`X-Hub-Signature-256`) over the raw `body` against every secret.
    ///
    /// A missing header is tolerated only when some owner accepts unsigned deliveries; the
    /// owner is then checked by [`Authority::admits`] once the payload names it.
    pub fn verify(&self, body: &[u8], header: Option<&str>) -> Result<Authority, SignatureError> {
        if header.is_none() && !self.unsigned.is_empty() {
            return Ok(Authority { signed_for: vec![] });
        }
        let mut first_error = SignatureError::Mismatch;
        let mut signed_for = Vec::new();
        for (secret, owners) in &self.secrets {
            match signature::verify(secret.expose().as_bytes(), body, header) {
                Ok(()) => signed_for.extend(owners.iter().cloned()),
                // Missing and malformed headers fail the same way for every secret.
                Err(e @ (SignatureError::Missing | SignatureError::Malformed)) => return Err(e),
                Err(e) => first_error = e,
            }
        }
        if signed_for.is_empty() {
            Err(if header.is_none() {
                SignatureError::Missing
            } else {
                first_error
            })
        } else {
            Ok(Authority { signed_for })
        }
    }
}

impl Authority {
    /// Whether this delivery may speak for `owner` (`has_secret`: the owner has a secret).
    pub fn admits(&self, owner: &Owner, has_secret: bool) -> Result<(), Refusal> {
        if self.signed_for.contains(owner) || !has_secret {
            Ok(())
        } else if self.signed_for.is_empty() {
            Err(Refusal::Unsigned(SignatureError::Missing))
        } else {
            Err(Refusal::OtherOwner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&map).unwrap()
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn a_signature_speaks_only_for_the_owners_of_its_secret() {
        let c = config(&[
            ("OWNERS", "alpha,beta"),
            ("GITHUB_TOKEN", "t"),
            ("ALL_REPOS", "true"),
            ("OWNER_ALPHA_WEBHOOK_SECRET", "alpha-secret"),
            ("OWNER_BETA_WEBHOOK_SECRET", "beta-secret"),
        ]);
        let book = SecretBook::new(&c);
        let body = b"{}";
        let by_beta = book.verify(body, Some(&sign("beta-secret", body))).unwrap();
        assert_eq!(by_beta.admits(&Owner::new("BETA"), true), Ok(()));
        assert_eq!(
            by_beta.admits(&Owner::new("alpha"), true),
            Err(Refusal::OtherOwner)
        );
        assert_eq!(
            book.verify(body, Some(&sign("nobody", body))),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(book.verify(body, None), Err(SignatureError::Missing));
        assert_eq!(
            book.verify(body, Some("sha256=12")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn owners_sharing_a_secret_are_both_admitted_and_unsigned_needs_an_owner_without_one() {
        let c = config(&[
            ("OWNERS", "alpha,beta,gamma"),
            ("GITHUB_TOKEN", "t"),
            ("ALL_REPOS", "true"),
            ("OWNER_ALPHA_WEBHOOK_SECRET", "shared"),
            ("OWNER_BETA_WEBHOOK_SECRET", "shared"),
            ("ALLOW_UNSIGNED_WEBHOOKS", "true"),
        ]);
        let book = SecretBook::new(&c);
        let body = b"{\"x\":1}";
        let shared = book.verify(body, Some(&sign("shared", body))).unwrap();
        assert!(shared.admits(&Owner::new("alpha"), true).is_ok());
        assert!(shared.admits(&Owner::new("beta"), true).is_ok());
        // gamma has no secret: unsigned deliveries are admitted for it, and only for it.
        let unsigned = book.verify(body, None).unwrap();
        assert!(unsigned.admits(&Owner::new("gamma"), false).is_ok());
        assert_eq!(
            unsigned.admits(&Owner::new("alpha"), true),
            Err(Refusal::Unsigned(SignatureError::Missing))
        );
    }
}
