//! Leader and standbys (issue 15 §2). Several controller replicas may share one PostgreSQL
//! database; every replica accepts webhooks, but only the leader schedules, reconciles,
//! cleans up, redelivers, keeps warm pools and talks to agents.
//!
//! - [`lease`]: the lease row with its fencing generation (the database I/O).
//! - [`decision`]: the pure rules: may this replica act now, until when, who leads.
//! - [`task`]: the loop that renews the lease and records what it learnt.
//! - [`wake`]: `LISTEN/NOTIFY`, so a delivery committed on a standby wakes the leader at once.
//!
//! [`Leadership`] is the handle the rest of the controller holds. The renewal task is the only
//! writer of its observation (a `watch` channel); readers ask [`Leadership::acting`], which
//! applies [`decision::may_act`] at the current instant, so a tenure lapses on time even while
//! the renewal task is stuck on a dead connection. With SQLite there is one replica and it
//! always leads ([`Leadership::sole`]).

pub mod decision;
pub mod lease;
pub mod task;
pub mod wake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::decision::{LeaderView, Observation, Replica};
pub use self::lease::{Generation, LeaseView, PgLease, Tenure};

/// Who leads, shared by everything that must only act as leader. Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    me: Arc<Replica>,
    lease: Duration,
    /// Written by the renewal task only ([`task::spawn`]); read by every holder.
    observation: watch::Receiver<Observation>,
}

impl Leadership {
    /// The one replica of a SQLite installation: always the leader, unfenced.
    pub fn sole(me: Replica) -> Self {
        let (tx, observation) = watch::channel(Observation::Sole);
        // No writer: the observation never changes.
        drop(tx);
        Self {
            me: Arc::new(me),
            lease: Duration::MAX,
            observation,
        }
    }

    /// A handle over observations written by `tx`'s holder.
    pub(crate) fn observed(
        me: Replica,
        lease: Duration,
    ) -> (watch::Sender<Observation>, Leadership) {
        let (tx, observation) = watch::channel(Observation::Unknown);
        (
            tx,
            Self {
                me: Arc::new(me),
                lease,
                observation,
            },
        )
    }

    /// This replica.
    pub fn me(&self) -> &Replica {
        &self.me
    }

    /// The generation this replica may act under now, or `None` when it must not act.
    pub fn acting(&self) -> Option<Generation> {
        decision::may_act(&self.observation.borrow(), Instant::now(), self.lease)
    }

    /// Who leads, for `/status`, `/ready` and the standby's answer to agents.
    pub fn view(&self) -> LeaderView {
        decision::view(
            &self.observation.borrow(),
            &self.me,
            Instant::now(),
            self.lease,
        )
    }

    /// Waits until this replica may act; `None` once `shutdown` is cancelled first.
    pub async fn until_acting(&self, shutdown: &CancellationToken) -> Option<Generation> {
        let mut rx = self.observation.clone();
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            if let Some(generation) = self.acting() {
                return Some(generation);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                changed = rx.changed() => if changed.is_err() {
                    // The renewal task is gone (shutdown): this replica never acts again.
                    shutdown.cancelled().await;
                    return None;
                },
            }
        }
    }

    /// Resolves once this replica may no longer act under `generation`: another tenure, a
    /// standby's role, or a tenure that ran out without renewal.
    pub async fn lost(&self, generation: Generation) {
        let mut rx = self.observation.clone();
        loop {
            if self.acting() != Some(generation) {
                return;
            }
            let end = decision::tenure_end(&rx.borrow_and_update(), self.lease);
            let until_end = async {
                match end {
                    Some(end) => tokio::time::sleep_until(end.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    // No more renewals: the tenure ends on time.
                    match end {
                        Some(end) => tokio::time::sleep_until(end.into()).await,
                        None => std::future::pending().await,
                    }
                },
                () = until_end => {}
            }
        }
    }
}

/// Runs leader-only work: each time this replica starts a tenure, `make` is called with a
/// token that is cancelled when the tenure ends (or at `shutdown`), and the future it returns
/// runs until then. Every tenure starts fresh, like a restarted controller: what the work
/// keeps in memory never crosses from one tenure to another. Returns at `shutdown`.
pub async fn while_leading<F, Fut>(
    leadership: Leadership,
    shutdown: CancellationToken,
    what: &'static str,
    make: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some(generation) = leadership.until_acting(&shutdown).await {
        let tenure = shutdown.child_token();
        let work = make(tenure.clone());
        tokio::pin!(work);
        tokio::select! {
            () = &mut work => {
                // The work ended by itself: wait out the tenure, so it is not restarted in a loop.
                tokio::select! {
                    () = leadership.lost(generation) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            () = leadership.lost(generation) => {
                tracing::warn!(generation = generation.0, work = what, "tenure over: stopping leader-only work");
                tenure.cancel();
                // Bounded: every leader-only loop returns promptly once its token is cancelled.
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut work).await;
            }
            () = shutdown.cancelled() => {
                tenure.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut work).await;
            }
        }
    }
}

/// A replica id unique to this process when `REPLICA_ID` is not set: the host name, the
/// process id and a random suffix.
pub fn generated_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "controller".into());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Replica {
        Replica {
            id: "a".into(),
            address: "https://a:9443".into(),
        }
    }

    #[tokio::test]
    async fn a_sole_replica_always_acts_unfenced() {
        let leadership = Leadership::sole(me());
        assert_eq!(leadership.acting(), Some(decision::UNFENCED));
        let shutdown = CancellationToken::new();
        assert_eq!(
            leadership.until_acting(&shutdown).await,
            Some(decision::UNFENCED)
        );
        assert!(leadership.view().this_replica);
    }

    #[tokio::test]
    async fn leader_only_work_of_a_sole_replica_runs_once_and_ends_at_shutdown() {
        let leadership = Leadership::sole(me());
        let shutdown = CancellationToken::new();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(while_leading(leadership, shutdown.clone(), "test", {
            let runs = runs.clone();
            move |tenure: CancellationToken| {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { tenure.cancelled().await }
            }
        }));
        tokio::task::yield_now().await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("while_leading returns at shutdown")
            .unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_tenure_is_lost_when_it_runs_out_unrenewed() {
        let lease = Duration::from_secs(3);
        let (tx, leadership) = Leadership::observed(me(), lease);
        let shutdown = CancellationToken::new();
        tx.send_replace(Observation::Held {
            tenure: Tenure {
                generation: Generation(2),
                renewed_at: Instant::now(),
            },
        });
        assert_eq!(
            leadership.until_acting(&shutdown).await,
            Some(Generation(2))
        );
        // The last renewal is a whole lease old: the tenure is over.
        tx.send_replace(Observation::Held {
            tenure: Tenure {
                generation: Generation(2),
                renewed_at: Instant::now() - lease,
            },
        });
        leadership.lost(Generation(2)).await;
        assert_eq!(leadership.acting(), None);
    }

    #[tokio::test]
    async fn a_new_tenure_ends_the_old_one() {
        let (tx, leadership) = Leadership::observed(me(), Duration::from_secs(60));
        let held = |generation| Observation::Held {
            tenure: Tenure {
                generation: Generation(generation),
                renewed_at: Instant::now(),
            },
        };
        tx.send_replace(held(1));
        let lost = leadership.lost(Generation(1));
        tx.send_replace(held(2));
        lost.await;
        assert_eq!(leadership.acting(), Some(Generation(2)));
    }
}
