//! The lease row in PostgreSQL (issue 15 §2): the leader's replica id, the address agents
//! should dial, a fencing generation and an expiry on the *database's* clock (`now()`), so
//! replicas with skewed clocks agree on when it lapsed.
//!
//! - [`PgLease::acquire`] renews the lease when this replica holds it, takes it when it lapsed,
//!   and otherwise reports who leads. Each new tenure gets a higher generation: commands sent
//!   under an older generation are recognisably stale (fencing).
//! - [`Tenure`] is the pure part: a replica counts itself leader only while its last successful
//!   renewal is younger than [`Tenure::SAFE_FRACTION`] of the lease on its own monotonic clock.
//!   A leader cut from the database stops acting before another replica can take the lease,
//!   since that needs the whole lease to lapse on the database's clock.

use std::time::{Duration, Instant};

use crate::config::database::DatabaseUrl;
use crate::store::StoreError;

/// A leader's tenure number; higher is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub i64);

/// What the lease row said at the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseView {
    /// This replica holds the lease, in tenure `generation`.
    Held { generation: Generation },
    /// Another replica holds it (its id and the address agents should use).
    Other {
        holder: String,
        address: String,
        generation: Generation,
    },
}

/// A replica's own account of its leadership, on its monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    pub generation: Generation,
    /// When the renewal that confirmed it was *sent* (so the lease ran at least from then).
    pub renewed_at: Instant,
}

impl Tenure {
    /// The share of the lease after its last renewal during which a replica acts as leader.
    pub const SAFE_FRACTION: (u32, u32) = (2, 3);

    /// Whether this replica may still act as leader at `now`.
    pub fn valid_at(&self, now: Instant, lease: Duration) -> bool {
        now < self.ends_at(lease)
    }

    /// The instant this tenure ends unless renewed before.
    pub fn ends_at(&self, lease: Duration) -> Instant {
        let (num, den) = Self::SAFE_FRACTION;
        self.renewed_at + lease * num / den
    }
}

/// The lease in a PostgreSQL database; one connection of its own.
pub struct PgLease {
    client: tokio_postgres::Client,
    replica: String,
    address: String,
    lease: Duration,
}

const LEASE_TABLE: &str = "CREATE TABLE IF NOT EXISTS gha_leader_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    address TEXT NOT NULL,
    generation BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)";

impl PgLease {
    /// Connects for replica `replica` (unique per process), reachable by agents at `address`.
    pub async fn connect(
        url: &DatabaseUrl,
        replica: String,
        address: String,
        lease: Duration,
    ) -> Result<Self, StoreError> {
        let (client, connection) = url.pg_config()?.connect(url.connector()?).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "the leader lease's database connection ended");
            }
        });
        client.batch_execute(LEASE_TABLE).await?;
        Ok(Self {
            client,
            replica,
            address,
            lease,
        })
    }

    /// Renews or takes the lease if this replica may, else says who holds it.
    pub async fn acquire(&self) -> Result<LeaseView, StoreError> {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let taken = self
            .client
            .query_opt(
                "INSERT INTO gha_leader_lease (id, holder, address, generation, expires_at)
                 VALUES (1, $1, $2, 1, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET
                    holder = excluded.holder,
                    address = excluded.address,
                    generation = CASE
                        WHEN gha_leader_lease.holder = excluded.holder
                             AND gha_leader_lease.expires_at > now()
                        THEN gha_leader_lease.generation
                        ELSE gha_leader_lease.generation + 1 END,
                    expires_at = excluded.expires_at
                 WHERE gha_leader_lease.holder = excluded.holder
                    OR gha_leader_lease.expires_at <= now()
                 RETURNING generation",
                &[&self.replica, &self.address, &(lease_ms as f64)],
            )
            .await?;
        if let Some(row) = taken {
            return Ok(LeaseView::Held {
                generation: Generation(row.get(0)),
            });
        }
        let row = self
            .client
            .query_one(
                "SELECT holder, address, generation FROM gha_leader_lease WHERE id = 1",
                &[],
            )
            .await?;
        Ok(LeaseView::Other {
            holder: row.get(0),
            address: row.get(1),
            generation: Generation(row.get(2)),
        })
    }

    /// Gives the lease up at once (graceful shutdown), if this replica holds it.
    pub async fn release(&self) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE gha_leader_lease SET expires_at = now() WHERE id = 1 AND holder = $1",
                &[&self.replica],
            )
            .await?;
        Ok(())
    }

    /// Whether tenure `generation` of this replica is still the current one (the fencing
    /// check before an irreversible step).
    pub async fn still_holds(&self, generation: Generation) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_opt(
                "SELECT 1 FROM gha_leader_lease
                 WHERE id = 1 AND holder = $1 AND generation = $2 AND expires_at > now()",
                &[&self.replica, &generation.0],
            )
            .await?;
        Ok(row.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::TestDb;

    #[test]
    fn a_tenure_ends_before_the_lease_can_lapse() {
        let start = Instant::now();
        let lease = Duration::from_secs(15);
        let tenure = Tenure {
            generation: Generation(3),
            renewed_at: start,
        };
        assert!(tenure.valid_at(start, lease));
        assert!(tenure.valid_at(start + Duration::from_secs(9), lease));
        assert!(!tenure.valid_at(start + Duration::from_secs(10), lease));
        assert!(!tenure.valid_at(start + lease, lease));
    }

    async fn replica(db: &TestDb, name: &str, lease: Duration) -> PgLease {
        PgLease::connect(&db.url, name.into(), format!("https://{name}:9443"), lease)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_replica_leads_the_other_learns_who_and_a_renewal_keeps_the_generation() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let a = replica(&db, "a", Duration::from_secs(60)).await;
        let b = replica(&db, "b", Duration::from_secs(60)).await;
        let first = a.acquire().await.unwrap();
        let LeaseView::Held { generation } = first else {
            panic!("the first replica leads: {first:?}")
        };
        assert_eq!(
            b.acquire().await.unwrap(),
            LeaseView::Other {
                holder: "a".into(),
                address: "https://a:9443".into(),
                generation,
            }
        );
        assert_eq!(a.acquire().await.unwrap(), LeaseView::Held { generation });
        assert!(a.still_holds(generation).await.unwrap());
        assert!(!b.still_holds(generation).await.unwrap());
    }

    #[tokio::test]
    async fn a_released_lease_goes_to_the_standby_with_a_higher_generation() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let a = replica(&db, "a", Duration::from_secs(60)).await;
        let b = replica(&db, "b", Duration::from_secs(60)).await;
        let LeaseView::Held { generation: old } = a.acquire().await.unwrap() else {
            panic!("a leads")
        };
        a.release().await.unwrap();
        let LeaseView::Held { generation: new } = b.acquire().await.unwrap() else {
            panic!("b takes the released lease")
        };
        assert!(new > old, "{new:?} after {old:?}");
        // The deposed leader is fenced: its tenure is over, and it cannot renew it.
        assert!(!a.still_holds(old).await.unwrap());
        assert!(matches!(
            a.acquire().await.unwrap(),
            LeaseView::Other { ref holder, .. } if holder == "b"
        ));
    }

    #[tokio::test]
    async fn a_lapsed_lease_is_taken_over_and_the_old_tenure_is_fenced() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        // The leader stops renewing (killed, or cut from the database); its lease lapses.
        let a = replica(&db, "a", Duration::from_millis(200)).await;
        let b = replica(&db, "b", Duration::from_millis(200)).await;
        let LeaseView::Held { generation: old } = a.acquire().await.unwrap() else {
            panic!("a leads")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let new = loop {
            match b.acquire().await.unwrap() {
                LeaseView::Held { generation } => break generation,
                LeaseView::Other { .. } => {
                    assert!(Instant::now() < deadline, "b never took the lapsed lease");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert!(new > old);
        assert!(!a.still_holds(old).await.unwrap());
    }
}
