//! The labels on every container and volume the Docker runtime creates. Ownership is found by
//! label, never by parsing names: an agent lists, watches and adopts exactly the containers
//! labelled `managed-by=gha-scaler` and `agent=<its name>`.

use std::collections::HashMap;

/// Every object we create.
pub const MANAGED_BY: &str = "dev.gha-scaler.managed-by";
pub const MANAGED_BY_VALUE: &str = "gha-scaler";
/// The controller id the agent was registered with when it created the object.
pub const CONTROLLER: &str = "dev.gha-scaler.controller";
/// The agent (its certificate identity) that owns the object.
pub const AGENT: &str = "dev.gha-scaler.agent";
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

/// `label=` filters that select the objects of `agent`.
pub fn agent_filter(agent: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_BY}={MANAGED_BY_VALUE}"),
            format!("{AGENT}={agent}"),
        ],
    )])
}
