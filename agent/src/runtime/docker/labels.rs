//! The labels on every container and volume the Docker runtime creates. Ownership is found by
//! label, never by parsing names: an agent lists, watches and adopts exactly the containers
//! labelled `managed-by=gha-scaler`, `agent=<its name>` and `installation=<its installation>`.
//!
//! The installation is the controller's identity as the agent knows it without asking: the
//! fingerprint of the CA it trusts (`TLS_CA_FILE`), or `INSTALLATION_ID` when several
//! installations share one CA. Two installations (staging and production, say) whose agents
//! share a name on one Docker host therefore never adopt, report or remove each other's
//! runners as strays.

use std::collections::HashMap;

/// Every object we create.
pub const MANAGED_BY: &str = "dev.gha-scaler.managed-by";
pub const MANAGED_BY_VALUE: &str = "gha-scaler";
/// The controller id the agent was registered with when it created the object.
pub const CONTROLLER: &str = "dev.gha-scaler.controller";
/// The agent (its certificate identity) that owns the object.
pub const AGENT: &str = "dev.gha-scaler.agent";
/// The installation (see the module docs) the owning agent belongs to.
pub const INSTALLATION: &str = "dev.gha-scaler.installation";
/// The GitHub owner the runner (or cache) works for.
pub const OWNER: &str = "dev.gha-scaler.owner";
pub const ARCH: &str = "dev.gha-scaler.arch";
pub const RUNNER_ID: &str = "dev.gha-scaler.runner-id";
pub const RUNNER_NAME: &str = "dev.gha-scaler.runner-name";
/// When the runner must be gone, in Unix milliseconds: a restarted agent keeps enforcing it.
pub const DEADLINE: &str = "dev.gha-scaler.deadline";
/// The cache volumes the runner mounts, comma-separated: a restarted agent knows they are taken.
pub const CACHE_VOLUMES: &str = "dev.gha-scaler.cache-volumes";
/// On volumes: the cache's name (`toolcache`, …).
pub const CACHE: &str = "dev.gha-scaler.cache";

/// `label=` filters that select the objects of `agent` (of `installation`, when known).
pub fn agent_filter(agent: &str, installation: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![
        format!("{MANAGED_BY}={MANAGED_BY_VALUE}"),
        format!("{AGENT}={agent}"),
    ];
    if let Some(installation) = installation {
        labels.push(format!("{INSTALLATION}={installation}"));
    }
    HashMap::from([("label".to_owned(), labels)])
}

/// The installation an agent belongs to: `INSTALLATION_ID` when set (letters, digits, `.`,
/// `_`, `-`; at most 63), else the first 16 hex digits of the SHA-256 of the first certificate
/// in `ca_file` (the CA the agent trusts for its controller). Errors name the variable.
pub fn installation_id(
    explicit: Option<&str>,
    ca_file: &std::path::Path,
) -> Result<String, String> {
    if let Some(id) = explicit.map(str::trim).filter(|v| !v.is_empty()) {
        let ok = id.len() <= 63
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        return if ok {
            Ok(id.to_owned())
        } else {
            Err(format!(
                "INSTALLATION_ID: {id:?} must be 1-63 letters, digits, '.', '_' or '-'"
            ))
        };
    }
    let certs = shared::tls::read_certs(ca_file)
        .map_err(|e| format!("TLS_CA_FILE: {}: {e}", ca_file.display()))?;
    let first = certs
        .first()
        .ok_or_else(|| format!("TLS_CA_FILE: {}: no certificate", ca_file.display()))?;
    Ok(shared::tls::fingerprint(first)[..16].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_installation_id_is_checked() {
        let none = std::path::Path::new("/nonexistent");
        assert_eq!(installation_id(Some("staging"), none).unwrap(), "staging");
        assert!(
            installation_id(Some("a b"), none)
                .unwrap_err()
                .contains("INSTALLATION_ID")
        );
        assert!(
            installation_id(None, none)
                .unwrap_err()
                .contains("TLS_CA_FILE")
        );
    }

    #[test]
    fn the_filter_includes_the_installation_when_known() {
        let f = agent_filter("host-1", Some("abc"));
        assert!(f["label"].contains(&format!("{INSTALLATION}=abc")));
        assert_eq!(agent_filter("host-1", None)["label"].len(), 2);
    }
}
