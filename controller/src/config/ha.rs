//! High availability (issue 15 §2): `REPLICA_ID`, `ADVERTISE_GRPC_URL` and `LEADER_LEASE`, read
//! here as a pure function of the variables. They matter only with a PostgreSQL
//! `DATABASE_URL`, where several replicas elect a leader; with SQLite there is one replica.

use std::time::Duration;

use super::vars::Vars;

/// The default `LEADER_LEASE`: a failover takes about this long after a leader dies.
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// `REPLICA_ID`: this replica's name in the lease; `None`, one generated at start (the host
    /// name, process id and a random suffix).
    pub replica_id: Option<String>,
    /// `ADVERTISE_GRPC_URL`: where agents dial this replica (`https://host:port`); standbys
    /// name the leader's to agents they turn away.
    pub advertise_grpc_url: Option<String>,
    /// `LEADER_LEASE`: how long a lease lasts without renewal. The leader acts for 2/3 of it
    /// after each renewal (renewed five times per lease); a standby takes over when it lapses.
    pub lease: Duration,
}

pub(crate) fn parse(vars: &mut Vars<'_>) -> HaConfig {
    let replica_id = vars.get("REPLICA_ID").map(str::to_owned);
    if let Some(id) = &replica_id
        && (id.len() > 200 || id.chars().any(|c| c.is_control()))
    {
        vars.problem(
            "REPLICA_ID",
            "must be at most 200 printable characters (e.g. the pod name)",
        );
    }
    let advertise_grpc_url = vars
        .get("ADVERTISE_GRPC_URL")
        .map(|u| u.trim_end_matches('/').to_owned());
    if let Some(url) = &advertise_grpc_url
        && !(url.starts_with("https://") && url.len() > "https://".len())
    {
        vars.problem(
            "ADVERTISE_GRPC_URL",
            format!(
                "{url:?} must be the https:// URL agents dial this replica's gRPC port at \
                 (e.g. https://controller-0.gha:9443)"
            ),
        );
    }
    let lease = vars.duration("LEADER_LEASE", DEFAULT_LEADER_LEASE);
    if lease < Duration::from_secs(1) || lease > Duration::from_secs(600) {
        vars.problem(
            "LEADER_LEASE",
            format!("{lease:?} is outside 1s..10m (the default is 15s)"),
        );
    }
    HaConfig {
        replica_id,
        advertise_grpc_url,
        lease,
    }
}
