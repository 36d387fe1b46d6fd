//! The background loops and the agents' sessions (issue 14 §3): reconciler lag and the jobs it
//! recovered, open agent sessions and reconnects.
//!
//! Reconciler lag is an age, computed at each scrape from when each owner's last pass
//! completed (or, before the first, from when the controller started), so it grows while the
//! reconciler is stuck instead of freezing at its last value.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{OwnerLabels, counters_at_zero};

pub struct FleetMetrics {
    pub reconcile_age: Family<OwnerLabels, Gauge>,
    pub jobs_recovered: Family<OwnerLabels, Counter>,
    pub agent_sessions: Gauge,
    pub agent_reconnects: Counter,
    /// When each owner's last reconcile pass completed (ms); written by the reconciler task,
    /// read at each scrape; held for one insert or one copy.
    last_pass_ms: Mutex<BTreeMap<String, i64>>,
    started_ms: i64,
}

impl FleetMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconcile_age: Family::default(),
            jobs_recovered: Family::default(),
            agent_sessions: Gauge::default(),
            agent_reconnects: Counter::default(),
            last_pass_ms: Mutex::new(BTreeMap::new()),
            started_ms: shared::runner::now_ms(),
        };
        registry.register(
            "reconcile_age_seconds",
            "Age of each owner's last completed reconcile pass (since start before the first), by owner",
            m.reconcile_age.clone(),
        );
        registry.register(
            "jobs_recovered",
            "Jobs learnt from GitHub's REST API (a run's jobs fetched) that no webhook had told us of, by owner",
            m.jobs_recovered.clone(),
        );
        registry.register(
            "agent_sessions",
            "Agent sessions open now",
            m.agent_sessions.clone(),
        );
        registry.register(
            "agent_reconnects",
            "Sessions opened by an agent this controller had seen before (a reconnect or a replaced session)",
            m.agent_reconnects.clone(),
        );
        m
    }

    /// Gives each configured owner its series at 0 before anything happens.
    pub fn owners(&self, owners: &[String]) {
        counters_at_zero(
            &self.jobs_recovered,
            owners.iter().map(|o| OwnerLabels {
                owner: o.to_ascii_lowercase(),
            }),
        );
    }

    /// `owner`'s reconcile pass completed at `at_ms`.
    pub fn reconciled(&self, owner: &str, at_ms: i64) {
        self.last_pass_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.to_ascii_lowercase(), at_ms);
    }

    /// `n` jobs of `owner` were recovered from the REST API.
    pub fn recovered(&self, owner: &str, n: u64) {
        self.jobs_recovered
            .get_or_create(&OwnerLabels {
                owner: owner.to_ascii_lowercase(),
            })
            .inc_by(n);
    }

    /// Sets the gauges at a scrape: each of `owners`' reconcile age when the reconciler runs
    /// (`reconciling`), the open sessions, and the reconnects counted by the registry so far.
    pub fn observe(
        &self,
        now_ms: i64,
        owners: &[String],
        reconciling: bool,
        sessions: usize,
        reconnects: u64,
    ) {
        if reconciling {
            let last = self
                .last_pass_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for owner in owners {
                let owner = owner.to_ascii_lowercase();
                let since = last.get(&owner).copied().unwrap_or(self.started_ms);
                self.reconcile_age
                    .get_or_create(&OwnerLabels { owner })
                    .set(((now_ms - since) / 1000).max(0));
            }
        }
        self.agent_sessions.set(sessions as i64);
        let seen = self.agent_reconnects.get();
        if reconnects > seen {
            self.agent_reconnects.inc_by(reconnects - seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_age_counts_from_the_last_pass_else_from_start() {
        let mut registry = Registry::default();
        let m = FleetMetrics::register(&mut registry);
        let owners = vec!["Acme".to_owned(), "bob".to_owned()];
        m.reconciled("acme", m.started_ms + 10_000);
        m.observe(m.started_ms + 70_000, &owners, true, 2, 3);
        let age = |o: &str| {
            m.reconcile_age
                .get_or_create(&OwnerLabels { owner: o.into() })
                .get()
        };
        assert_eq!(age("acme"), 60);
        assert_eq!(age("bob"), 70);
        assert_eq!(m.agent_sessions.get(), 2);
        m.observe(m.started_ms + 70_000, &owners, true, 1, 3);
        m.observe(m.started_ms + 70_000, &owners, true, 1, 5);
        assert_eq!(m.agent_reconnects.get(), 5, "follows the registry's count");
    }
}
