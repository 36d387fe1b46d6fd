//! `LISTEN/NOTIFY` between replicas: the PostgreSQL store sends `NOTIFY` [`CHANNEL`] in the
//! transaction that commits a delivery with work in it (PostgreSQL delivers it on commit, and
//! only then), and every replica listens on a connection of its own and nudges its scheduler.
//! On the leader that starts an activation at once, whichever replica took the webhook; on a
//! standby the nudge is harmless (its scheduler does not act).
//!
//! The listener reconnects with a capped backoff when its connection fails; while it is down
//! the scheduler's timer still finds the work, only later.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::database::DatabaseUrl;

/// The notification channel of new work.
pub const CHANNEL: &str = "gha_scaler_work";
/// Bounds of the reconnect delay.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens until `shutdown`, calling `nudge.notify_one()` on each notification.
pub fn spawn(url: DatabaseUrl, nudge: Arc<Notify>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut delay = RETRY_MIN;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = listen(&url, &nudge, &mut delay) => {
                    warn!(error = %outcome, "the work-notification listener stopped; reconnecting");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    });
}

/// One connection's life; returns why it ended.
async fn listen(url: &DatabaseUrl, nudge: &Notify, delay: &mut Duration) -> String {
    let (config, tls) = match (url.pg_config(), url.connector()) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => return e.to_string(),
    };
    let (client, mut connection) =
        match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "connecting timed out".into(),
        };
    // The connection's messages (notifications among them) come out of this stream; it also
    // drives the client's queries, so it is polled while `LISTEN` runs.
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    loop {
        tokio::select! {
            done = &mut listen => match done {
                Ok(()) => break,
                Err(e) => return e.to_string(),
            },
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "the connection closed".into(),
            },
        }
    }
    debug!(channel = CHANNEL, "listening for new work");
    *delay = RETRY_MIN;
    loop {
        match messages.next().await {
            Some(Ok(AsyncMessage::Notification(_))) => nudge.notify_one(),
            Some(Ok(_)) => {}
            Some(Err(e)) => return e.to_string(),
            None => return "the connection closed".into(),
        }
    }
}
