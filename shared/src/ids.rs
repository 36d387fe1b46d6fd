//! Typed identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {why}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
}

/// An agent's name: its identity in the registry, taken from its verified client certificate.
///
/// Names are DNS-like (`[a-z0-9][a-z0-9.-]*`, at most 253 characters) and compared
/// case-insensitively, so they are stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let invalid = |why| InvalidId {
            kind: "agent name",
            value: value.to_owned(),
            why,
        };
        let lower = value.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err(invalid("it is empty"));
        }
        if lower.len() > 253 {
            return Err(invalid("it is longer than 253 characters"));
        }
        if !lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(invalid(
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        if !lower.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(invalid("it must start with a letter or digit"));
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A runner's id, chosen by the controller; commands are idempotent by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunnerId(String);

impl RunnerId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let invalid = |why| InvalidId {
            kind: "runner id",
            value: value.to_owned(),
            why,
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > 128 {
            return Err(invalid("it is longer than 128 characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid(
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_lower_cased_and_validated() {
        assert_eq!(
            AgentName::parse("Agent-1.example").unwrap().as_str(),
            "agent-1.example"
        );
        assert!(AgentName::parse("").is_err());
        assert!(AgentName::parse("-x").is_err());
        assert!(AgentName::parse("a b").is_err());
        assert!(AgentName::parse(&"a".repeat(254)).is_err());
    }

    #[test]
    fn runner_ids_reject_path_like_values() {
        assert!(RunnerId::parse("r-123_x.y").is_ok());
        assert!(RunnerId::parse("../etc").is_err());
        assert!(RunnerId::parse("").is_err());
    }
}
