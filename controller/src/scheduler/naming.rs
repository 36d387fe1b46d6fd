//! The names this controller gives its runner registrations, and how it recognises its own.
//!
//! A name is `gha-{owner}-{installation}-{id}`: the owner's login, six hex digits that tell this
//! installation (a staging and a production controller serving one organization) from any
//! other, and twelve random hex digits. The sweep and the 409 clean-up delete only registrations
//! they can prove are ours: a runner record of this controller carries the name, or the name
//! carries this installation's tag. So two installations on one organization never delete each
//! other's registrations (a JIT registration is offline until its runner connects, which is
//! exactly what the sweep deletes after its grace).
//!
//! The installation tag is derived, not configured: SHA-256 over the fingerprint of the CA this
//! controller's agents trust and `CONTROLLER_ID`. Two installations with their own CAs (the
//! default: each creates its own) differ; two that share a CA differ by `CONTROLLER_ID`.
//!
//! GitHub refuses a runner name longer than 64 characters ("Runner names can only be 64
//! characters in length", actions/runner#1710); a login has at most 39, so the longest name is
//! 4 + 39 + 1 + 6 + 1 + 12 = 63.

use sha2::{Digest, Sha256};

/// The prefix of every runner name this controller registers.
pub const NAME_PREFIX: &str = "gha-";

/// GitHub's limit for a runner's name.
pub const MAX_NAME_LEN: usize = 64;

/// This installation's runner names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerNames {
    installation: String,
}

impl RunnerNames {
    /// The names of the installation whose agents trust the CA of `ca_fingerprint` (hex
    /// SHA-256 of its certificate) and whose `CONTROLLER_ID` is `controller_id`.
    pub fn for_installation(ca_fingerprint: &str, controller_id: &str) -> Self {
        let digest = Sha256::digest(format!("{ca_fingerprint}\n{controller_id}").as_bytes());
        Self {
            installation: hex::encode(&digest[..3]),
        }
    }

    /// The six hex digits that tell this installation's names from another's.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// The name of runner `short` (its random part) of `owner`.
    pub fn name(&self, owner: &str, short: &str) -> String {
        format!(
            "{NAME_PREFIX}{}-{}-{short}",
            owner.to_ascii_lowercase(),
            self.installation
        )
    }

    /// Whether `name` is a registration name of this installation for `owner` (GitHub compares
    /// names without regard to case).
    pub fn is_ours(&self, owner: &str, name: &str) -> bool {
        let prefix = format!(
            "{NAME_PREFIX}{}-{}-",
            owner.to_ascii_lowercase(),
            self.installation
        );
        name.to_ascii_lowercase().starts_with(&prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_owner_and_installation_and_fit_githubs_limit() {
        let names = RunnerNames::for_installation("ab".repeat(32).as_str(), "gha-scaler");
        let owner = "a".repeat(39);
        let name = names.name(&owner, "0123456789ab");
        assert!(name.len() <= MAX_NAME_LEN, "{} characters", name.len());
        assert!(names.is_ours(&owner, &name));
        assert!(names.is_ours(&owner.to_uppercase(), &name.to_uppercase()));
        assert_eq!(names.installation().len(), 6);
    }

    #[test]
    fn another_installation_or_owner_is_not_ours() {
        let prod = RunnerNames::for_installation("fp-prod", "gha-scaler");
        let staging = RunnerNames::for_installation("fp-staging", "gha-scaler");
        let shared_ca = RunnerNames::for_installation("fp-prod", "staging");
        assert_ne!(prod, staging);
        assert_ne!(prod, shared_ca);
        let name = prod.name("acme", "0123456789ab");
        assert!(prod.is_ours("acme", &name));
        assert!(!staging.is_ours("acme", &name), "another CA");
        assert!(!shared_ca.is_ours("acme", &name), "another CONTROLLER_ID");
        assert!(!prod.is_ours("acme-corp", &name), "another owner");
        assert!(
            !prod.is_ours("acme", "gha-acme-0123456789ab"),
            "an untagged name proves nothing"
        );
        assert!(!prod.is_ours("acme", "build-box-1"));
    }

    #[test]
    fn the_tag_is_stable_for_one_installation() {
        assert_eq!(
            RunnerNames::for_installation("fp", "id"),
            RunnerNames::for_installation("fp", "id")
        );
    }
}
