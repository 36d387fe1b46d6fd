//! A SQLite connection owned by one thread, which runs the closures sent to it one at a time.
//!
//! Reads used to run in `spawn_blocking` on a connection behind a mutex: they were serialized by
//! the mutex anyway, and each waiting read held a thread of tokio's blocking pool. Under
//! 1 000 agents (their sessions re-read the directory every 2 s) and a scheduling pass reading
//! 10 000 runners, dozens of blocking threads took turns, each with its own glibc malloc arena
//! keeping what its reads had allocated (bench fleet: RSS grew with the runners and the load).
//! One thread per connection keeps one arena, no pile of parked threads, and a bounded queue:
//! a full one is [`StoreError::Busy`] (a 503 at the edge), never unbounded growth.

use std::panic::AssertUnwindSafe;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The handle; clones share the thread, which exits when the last clone is dropped.
#[derive(Clone)]
pub struct ConnectionThread {
    // The connection's thread holds the receiver.
    jobs: mpsc::Sender<Job>,
}

impl ConnectionThread {
    /// Starts thread `name` owning `conn`, with room for `queue` waiting closures.
    pub fn start(name: &str, mut conn: Connection, queue: usize) -> std::io::Result<Self> {
        let (jobs, mut rx) = mpsc::channel::<Job>(queue);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    // A panicking closure drops its answer (the caller sees `Closed`); the
                    // thread and the connection serve the next one.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the connection and returns its answer.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(queue: usize) -> ConnectionThread {
        ConnectionThread::start("test-conn", Connection::open_in_memory().unwrap(), queue).unwrap()
    }

    #[tokio::test]
    async fn closures_run_on_one_thread_in_order_and_answer() {
        let t = thread(8);
        let ids = futures::future::join_all((0..4).map(|i| {
            t.run(move |c| {
                let v: i64 = c.query_row("SELECT ?1 + 1", [i], |r| r.get(0))?;
                Ok((v, std::thread::current().id()))
            })
        }))
        .await;
        let ids: Vec<_> = ids.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            ids.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert!(ids.iter().all(|(_, id)| *id == ids[0].1), "one thread");
        assert_ne!(ids[0].1, std::thread::current().id());
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_and_a_panic_spares_the_thread() {
        let t = thread(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (running, started) = oneshot::channel::<()>();
        // The first closure holds the thread; the second fills the queue; the third is refused.
        let first = tokio::spawn({
            let t = t.clone();
            async move {
                t.run(move |_| {
                    let _ = running.send(());
                    wait.recv().ok();
                    Ok(1)
                })
                .await
            }
        });
        started.await.unwrap();
        let second = tokio::spawn({
            let t = t.clone();
            async move { t.run(|_| Ok(2)).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while t.jobs.capacity() != 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(matches!(t.run(|_| Ok(3)).await, Err(StoreError::Busy)));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);

        let panicked = t
            .run(|_| -> Result<(), StoreError> { panic!("a bug") })
            .await;
        assert!(matches!(panicked, Err(StoreError::Closed)), "{panicked:?}");
        assert_eq!(
            t.run(|_| Ok(4)).await.unwrap(),
            4,
            "the thread still serves"
        );
    }
}
