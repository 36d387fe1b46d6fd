//! What the operator allows an agent to serve, and the pure rule that turns what an agent
//! reports into what the scheduler may use.
//!
//! The policy is the operator's decision, fixed when the join token is minted (`gha-controller
//! agents join-token --owners … --labels … --max-runners …`) and kept in the controller's store
//! by agent name ([`crate::store::agents`]), not in the certificate: it survives restarts, can
//! be changed without re-enrolling (`agents policy`), and certificates from an operator's own
//! CA (which carry no claims of ours) get a policy the same way. An agent may report less than
//! it is allowed, never more: capacity is clamped, extra labels outside the allowed set are
//! dropped (and shown as `labels_refused`), owners outside the set never get a placement.

use shared::owner::Owner;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::arch::Arch;

/// How long an enrolled agent's certificate is valid unless the token says otherwise.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest certificate life a token may ask for (renewal needs a few seconds).
pub const MIN_CERT_VALIDITY: Duration = Duration::from_secs(10);
/// The longest: a year, what certificates had before policies existed.
pub const MAX_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Runners at once when the operator does not say: the agent's own `MAX_RUNNERS` default.
pub const DEFAULT_MAX_RUNNERS: u32 = 5;

/// What one agent may serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPolicy {
    /// Owners it may serve; `None` means every configured owner.
    pub owners: Option<BTreeSet<Owner>>,
    /// Extra labels it may offer (lower-cased); others it reports are dropped.
    pub labels: BTreeSet<String>,
    /// Runners at once, across architectures.
    pub max_runners: u32,
    /// Life of the certificates issued to it (at enrollment and on renewal), in seconds.
    pub cert_validity_secs: u64,
}

impl AgentPolicy {
    /// Whether the agent may run runners for `owner` (compared case-insensitively).
    pub fn serves(&self, owner: &str) -> bool {
        self.owners
            .as_ref()
            .is_none_or(|o| o.contains(&Owner::new(owner)))
    }

    pub fn cert_validity(&self) -> Duration {
        Duration::from_secs(self.cert_validity_secs)
    }
}

/// Why a policy given on the command line is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "this controller serves several owners ({0}); say which this agent may serve with \
         --owners a,b (or --all-owners)"
    )]
    OwnersRequired(String),
    #[error("--owners names {0:?}, which this controller does not serve (OWNERS: {1})")]
    UnknownOwner(String, String),
    #[error("--max-runners must be at least 1")]
    ZeroCapacity,
    #[error("--cert-validity must be between 10s and 365 days")]
    BadValidity,
    #[error("--owners and --all-owners exclude each other")]
    Conflicting,
}

/// What the operator asked for, before defaults.
#[derive(Debug, Clone, Default)]
pub struct PolicyRequest {
    pub owners: Vec<String>,
    pub all_owners: bool,
    pub labels: Vec<String>,
    pub max_runners: Option<u32>,
    pub cert_validity: Option<Duration>,
}

/// Builds a policy from the operator's request and the configured owners: every owner by
/// default only when there is exactly one.
pub fn resolve(request: &PolicyRequest, configured: &[String]) -> Result<AgentPolicy, PolicyError> {
    let configured: BTreeSet<Owner> = configured.iter().map(|o| Owner::new(o)).collect();
    let list = || {
        configured
            .iter()
            .map(Owner::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    let owners = match (request.owners.is_empty(), request.all_owners) {
        (false, true) => return Err(PolicyError::Conflicting),
        (true, true) => None,
        (true, false) if configured.len() <= 1 => None,
        (true, false) => return Err(PolicyError::OwnersRequired(list())),
        (false, false) => {
            let mut set = BTreeSet::new();
            for owner in &request.owners {
                let owner = Owner::new(owner);
                if !configured.contains(&owner) {
                    return Err(PolicyError::UnknownOwner(owner.to_string(), list()));
                }
                set.insert(owner);
            }
            Some(set)
        }
    };
    let max_runners = request.max_runners.unwrap_or(DEFAULT_MAX_RUNNERS);
    if max_runners == 0 {
        return Err(PolicyError::ZeroCapacity);
    }
    let validity = request.cert_validity.unwrap_or(DEFAULT_CERT_VALIDITY);
    if !(MIN_CERT_VALIDITY..=MAX_CERT_VALIDITY).contains(&validity) {
        return Err(PolicyError::BadValidity);
    }
    Ok(AgentPolicy {
        owners,
        labels: request
            .labels
            .iter()
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| !l.is_empty())
            .collect(),
        max_runners,
        cert_validity_secs: validity.as_secs(),
    })
}

/// What an agent reported, limited by its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub capacity: BTreeMap<Arch, u32>,
    pub max_runners: u32,
    pub labels: Vec<String>,
    /// Labels the agent reported but may not offer (dropped).
    pub labels_refused: Vec<String>,
}

/// Clamps a report to the policy. Without a policy (a certificate from the operator's own CA
/// that nobody gave one) the report stands: that CA vouches for the agent.
pub fn grant(
    policy: Option<&AgentPolicy>,
    capacity: &BTreeMap<Arch, u32>,
    max_runners: u32,
    labels: &[String],
) -> Granted {
    let Some(policy) = policy else {
        return Granted {
            capacity: capacity.clone(),
            max_runners,
            labels: labels.to_vec(),
            labels_refused: Vec::new(),
        };
    };
    let max_runners = max_runners.min(policy.max_runners);
    let (allowed, refused): (Vec<String>, Vec<String>) = labels
        .iter()
        .cloned()
        .partition(|l| policy.labels.contains(&l.to_ascii_lowercase()));
    Granted {
        capacity: capacity
            .iter()
            .map(|(&arch, &cap)| (arch, cap.min(max_runners)))
            .collect(),
        max_runners,
        labels: allowed,
        labels_refused: refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(owners: Option<&[&str]>, labels: &[&str], max: u32) -> AgentPolicy {
        AgentPolicy {
            owners: owners.map(|o| o.iter().map(|s| Owner::new(s)).collect()),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            max_runners: max,
            cert_validity_secs: 60,
        }
    }

    #[test]
    fn an_agent_may_report_less_than_allowed_never_more() {
        let p = policy(Some(&["acme"]), &["gpu"], 3);
        let capacity = [(Arch::Amd64, 100_000), (Arch::Arm64, 2)].into();
        let g = grant(Some(&p), &capacity, 100_000, &["GPU".into(), "fast".into()]);
        assert_eq!(g.max_runners, 3);
        assert_eq!(g.capacity, [(Arch::Amd64, 3), (Arch::Arm64, 2)].into());
        assert_eq!(g.labels, vec!["GPU".to_string()]);
        assert_eq!(g.labels_refused, vec!["fast".to_string()]);
        let g = grant(Some(&p), &[(Arch::Amd64, 1)].into(), 1, &[]);
        assert_eq!((g.max_runners, g.capacity[&Arch::Amd64]), (1, 1));
        assert!(p.serves("ACME") && !p.serves("other"));
    }

    #[test]
    fn owners_default_to_all_only_for_a_single_owner() {
        let one = resolve(&PolicyRequest::default(), &["Acme".into()]).unwrap();
        assert_eq!(one.owners, None);
        assert_eq!(one.max_runners, DEFAULT_MAX_RUNNERS);
        assert_eq!(one.cert_validity(), DEFAULT_CERT_VALIDITY);
        let two = ["acme".to_string(), "globex".to_string()];
        assert!(matches!(
            resolve(&PolicyRequest::default(), &two),
            Err(PolicyError::OwnersRequired(_))
        ));
        let chosen = resolve(
            &PolicyRequest {
                owners: vec!["GLOBEX".into()],
                ..Default::default()
            },
            &two,
        )
        .unwrap();
        assert_eq!(chosen.owners, Some([Owner::new("globex")].into()));
        assert!(matches!(
            resolve(
                &PolicyRequest {
                    owners: vec!["initech".into()],
                    ..Default::default()
                },
                &two
            ),
            Err(PolicyError::UnknownOwner(..))
        ));
        let all = PolicyRequest {
            all_owners: true,
            ..Default::default()
        };
        assert_eq!(resolve(&all, &two).unwrap().owners, None);
        let zero = PolicyRequest {
            max_runners: Some(0),
            ..Default::default()
        };
        assert_eq!(resolve(&zero, &two[..1]), Err(PolicyError::ZeroCapacity));
    }
}
