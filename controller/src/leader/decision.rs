//! The pure half of leadership: from what this replica last learnt about the lease (an
//! [`Observation`]) and the time on its own monotonic clock, whether it may act as leader now,
//! until when, who leads, and when to renew next. No I/O, so every rule is table-tested here;
//! [`super::task`] is the thin loop that talks to PostgreSQL and records observations.

use std::time::{Duration, Instant};

use super::lease::{Generation, Tenure};

/// A replica as the lease row names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replica {
    /// Unique per process (`REPLICA_ID`, else generated at start).
    pub id: String,
    /// Where agents dial it (`ADVERTISE_GRPC_URL`); empty when not set.
    pub address: String,
}

/// What this replica last learnt about the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A single replica (SQLite in `STATE_DIR`): it always leads, unfenced (generation 0).
    Sole,
    /// Nothing yet: the first renewal has not answered (or the database never did).
    Unknown,
    /// This replica holds the lease: the renewal sent at `tenure.renewed_at` succeeded.
    Held { tenure: Tenure },
    /// Another replica holds it.
    Other {
        leader: Replica,
        generation: Generation,
    },
}

/// The generation of [`Observation::Sole`]: agents treat 0 as "no fencing".
pub const UNFENCED: Generation = Generation(0);

/// Whether this replica may act as leader at `now`, and under which generation.
pub fn may_act(observation: &Observation, now: Instant, lease: Duration) -> Option<Generation> {
    match observation {
        Observation::Sole => Some(UNFENCED),
        Observation::Held { tenure } if tenure.valid_at(now, lease) => Some(tenure.generation),
        Observation::Held { .. } | Observation::Unknown | Observation::Other { .. } => None,
    }
}

/// When the current tenure ends if nothing renews it (`None`: it does not end by time alone).
pub fn tenure_end(observation: &Observation, lease: Duration) -> Option<Instant> {
    match observation {
        Observation::Held { tenure } => Some(tenure.ends_at(lease)),
        _ => None,
    }
}

/// How long after a renewal attempt the next one starts: five per lease while it answers
/// (so two may fail and the tenure still holds), and as often after a failure.
pub fn renew_interval(lease: Duration) -> Duration {
    (lease / 5).max(Duration::from_millis(50))
}

/// How long a renewal (or the connection for it) may take before it counts as failed: a third
/// of the lease, so a hung connection is replaced long before a standby could take over.
pub fn renew_timeout(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

/// Who leads, as `/status` and `/ready` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaderView {
    /// The leader's replica id and address; `None` while unknown.
    pub replica: Option<String>,
    pub address: Option<String>,
    pub generation: Option<i64>,
    /// Whether this replica is the leader now (its tenure is valid).
    pub this_replica: bool,
    /// This replica's own id.
    pub self_id: String,
}

/// The view of `observation` from replica `me` at `now`.
pub fn view(observation: &Observation, me: &Replica, now: Instant, lease: Duration) -> LeaderView {
    let acting = may_act(observation, now, lease);
    let (replica, address, generation) = match observation {
        Observation::Sole => (Some(me.id.clone()), Some(me.address.clone()), None),
        Observation::Held { tenure } if acting.is_some() => (
            Some(me.id.clone()),
            Some(me.address.clone()),
            Some(tenure.generation.0),
        ),
        Observation::Other { leader, generation } => (
            Some(leader.id.clone()),
            Some(leader.address.clone()),
            Some(generation.0),
        ),
        Observation::Held { .. } | Observation::Unknown => (None, None, None),
    };
    LeaderView {
        replica,
        address: address.filter(|a| !a.is_empty()),
        generation,
        this_replica: acting.is_some(),
        self_id: me.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn held(generation: i64, renewed_at: Instant) -> Observation {
        Observation::Held {
            tenure: Tenure {
                generation: Generation(generation),
                renewed_at,
            },
        }
    }

    #[test]
    fn who_may_act_and_when() {
        let t0 = Instant::now();
        let other = Observation::Other {
            leader: Replica {
                id: "b".into(),
                address: "https://b:9443".into(),
            },
            generation: Generation(4),
        };
        let cases: Vec<(&str, Observation, Duration, Option<Generation>)> = vec![
            (
                "a single replica always acts",
                Observation::Sole,
                Duration::from_secs(3600),
                Some(UNFENCED),
            ),
            (
                "nothing known yet: no",
                Observation::Unknown,
                Duration::ZERO,
                None,
            ),
            ("another replica leads: no", other, Duration::ZERO, None),
            (
                "held, just renewed",
                held(3, t0),
                Duration::ZERO,
                Some(Generation(3)),
            ),
            (
                "held, within 2/3 of the lease",
                held(3, t0),
                Duration::from_millis(9_999),
                Some(Generation(3)),
            ),
            (
                "held, at 2/3 of the lease: stops",
                held(3, t0),
                Duration::from_secs(10),
                None,
            ),
            ("held, the lease over: stops", held(3, t0), LEASE, None),
        ];
        for (what, observation, elapsed, expected) in cases {
            assert_eq!(
                may_act(&observation, t0 + elapsed, LEASE),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_tenure_ends_at_two_thirds_of_the_lease_and_only_a_held_one_ends() {
        let t0 = Instant::now();
        assert_eq!(
            tenure_end(&held(1, t0), LEASE),
            Some(t0 + Duration::from_secs(10))
        );
        assert_eq!(tenure_end(&Observation::Sole, LEASE), None);
        assert_eq!(tenure_end(&Observation::Unknown, LEASE), None);
    }

    #[test]
    fn renewals_come_five_times_a_lease_and_time_out_after_a_third() {
        assert_eq!(renew_interval(LEASE), Duration::from_secs(3));
        assert_eq!(renew_timeout(LEASE), Duration::from_secs(5));
        // Two renewals may fail in a row and the tenure (2/3 of the lease) still holds.
        assert!(renew_interval(LEASE) * 3 < LEASE * 2 / 3);
        assert_eq!(
            renew_interval(Duration::from_millis(10)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn the_view_names_the_leader_and_whether_it_is_this_replica() {
        let t0 = Instant::now();
        let me = Replica {
            id: "a".into(),
            address: "https://a:9443".into(),
        };
        let leading = view(&held(7, t0), &me, t0, LEASE);
        assert_eq!(leading.replica.as_deref(), Some("a"));
        assert_eq!(leading.address.as_deref(), Some("https://a:9443"));
        assert_eq!(leading.generation, Some(7));
        assert!(leading.this_replica);
        // A lapsed tenure: this replica no longer claims to lead, and does not know who does.
        let lapsed = view(&held(7, t0), &me, t0 + LEASE, LEASE);
        assert_eq!((lapsed.replica, lapsed.this_replica), (None, false));
        let standby = view(
            &Observation::Other {
                leader: Replica {
                    id: "b".into(),
                    address: String::new(),
                },
                generation: Generation(8),
            },
            &me,
            t0,
            LEASE,
        );
        assert_eq!(standby.replica.as_deref(), Some("b"));
        assert_eq!(
            standby.address, None,
            "an empty address is shown as unknown"
        );
        assert!(!standby.this_replica);
        assert_eq!(standby.self_id, "a");
    }
}
