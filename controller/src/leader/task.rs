//! The renewal loop: the only writer of this replica's [`Observation`]. Thin I/O around
//! [`PgLease`]: connect (bounded), renew or take the lease (bounded), record what the database
//! said, wait [`decision::renew_interval`], repeat. A failed or hung renewal drops the
//! connection (the next attempt opens a new one) and records nothing: a held tenure then runs
//! out by itself ([`decision::may_act`]). On shutdown a held lease is released, so a standby
//! takes over at once instead of after the lease.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::decision::{self, Observation, Replica};
use super::lease::{LeaseView, PgLease, Tenure};
use super::{Generation, Leadership};
use crate::config::database::DatabaseUrl;

/// Starts renewing the lease in `url` for replica `me`; the returned handle follows it.
pub fn spawn(
    url: DatabaseUrl,
    me: Replica,
    lease: Duration,
    shutdown: CancellationToken,
) -> Leadership {
    let (tx, leadership) = Leadership::observed(me.clone(), lease);
    tokio::spawn(run(url, me, lease, tx, shutdown));
    leadership
}

async fn run(
    url: DatabaseUrl,
    me: Replica,
    lease: Duration,
    tx: watch::Sender<Observation>,
    shutdown: CancellationToken,
) {
    let timeout = decision::renew_timeout(lease);
    let mut connection: Option<PgLease> = None;
    let mut leading: Option<Generation> = None;
    loop {
        if connection.is_none() {
            let connect = PgLease::connect(&url, me.id.clone(), me.address.clone(), lease);
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(c)) => connection = Some(c),
                Ok(Err(error)) => warn!(%error, "cannot connect for the leader lease"),
                Err(_) => warn!(?timeout, "connecting for the leader lease timed out"),
            }
        }
        if let Some(c) = &connection {
            let sent = Instant::now();
            match tokio::time::timeout(timeout, c.acquire()).await {
                Ok(Ok(LeaseView::Held { generation })) => {
                    if leading != Some(generation) {
                        info!(generation = generation.0, replica = %me.id, "this replica leads");
                    }
                    leading = Some(generation);
                    tx.send_replace(Observation::Held {
                        tenure: Tenure {
                            generation,
                            renewed_at: sent,
                        },
                    });
                }
                Ok(Ok(LeaseView::Other {
                    holder,
                    address,
                    generation,
                })) => {
                    if leading.take().is_some() {
                        warn!(leader = %holder, generation = generation.0, "another replica took the lease: standing by");
                    }
                    let observation = Observation::Other {
                        leader: Replica {
                            id: holder,
                            address,
                        },
                        generation,
                    };
                    tx.send_if_modified(|o| {
                        let changed = *o != observation;
                        *o = observation;
                        changed
                    });
                }
                Ok(Err(error)) => {
                    warn!(%error, "cannot renew the leader lease; reconnecting");
                    connection = None;
                }
                Err(_) => {
                    warn!(
                        ?timeout,
                        "renewing the leader lease timed out; reconnecting"
                    );
                    connection = None;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(decision::renew_interval(lease)) => {}
        }
    }
    // Stop acting first, then hand the lease over.
    tx.send_replace(Observation::Unknown);
    if let (Some(c), Some(_)) = (&connection, leading) {
        match tokio::time::timeout(timeout, c.release()).await {
            Ok(Ok(())) => info!("released the leader lease"),
            Ok(Err(error)) => warn!(%error, "cannot release the leader lease; it lapses by itself"),
            Err(_) => warn!("releasing the leader lease timed out; it lapses by itself"),
        }
    }
}
