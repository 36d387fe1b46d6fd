//! [`Owner`]: a GitHub account (organisation or user) that this system serves.
//!
//! GitHub logins are case-insensitive (`Octo-Org` and `octo-org` are one account), so an
//! `Owner` holds the login lower-cased and compares by that. This is the one place where owner
//! names are folded: everything that keys state by owner (jobs, runners, deliveries) takes an
//! `Owner`, so two owners can never be confused by a caller that forgot to lower-case.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A GitHub owner's login, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Owner(String);

impl Owner {
    /// The owner called `login` (any case).
    pub fn new(login: &str) -> Self {
        Self(login.trim().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `login` (any case) names this owner.
    pub fn is(&self, login: &str) -> bool {
        self.0.eq_ignore_ascii_case(login.trim())
    }
}

impl From<String> for Owner {
    fn from(login: String) -> Self {
        Self::new(&login)
    }
}

impl From<&str> for Owner {
    fn from(login: &str) -> Self {
        Self::new(login)
    }
}

impl From<Owner> for String {
    fn from(owner: Owner) -> Self {
        owner.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Owner {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Owner {
    fn eq(&self, other: &str) -> bool {
        self.is(other)
    }
}

impl PartialEq<&str> for Owner {
    fn eq(&self, other: &&str) -> bool {
        self.is(other)
    }
}

impl PartialEq<String> for Owner {
    fn eq(&self, other: &String) -> bool {
        self.is(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_compare_case_insensitively_and_serialize_lower_cased() {
        assert_eq!(Owner::new("Octo-Org"), Owner::new("octo-org"));
        assert_ne!(Owner::new("octo-org"), Owner::new("octo-org2"));
        assert!(Owner::new("ACME") == "acme");
        assert_eq!(
            serde_json::to_string(&Owner::new("Acme")).unwrap(),
            "\"acme\""
        );
        let back: Owner = serde_json::from_str("\"ACME\"").unwrap();
        assert_eq!(back.as_str(), "acme");
    }
}
