//! The HTTP server loop, hardened for a public host: what `axum::serve` leaves open.
//!
//! - A request head must arrive within `HTTP_HEADER_TIMEOUT`, else the connection is closed
//!   (slowloris: a client that trickles or never finishes its headers holds nothing for long).
//! - At most `HTTP_MAX_CONNECTIONS` connections are served at once; past that, new ones wait in
//!   the kernel's accept queue instead of costing a task and buffers each.
//! - Bodies are bounded in size and time by the handlers that read them (`/webhook`: see
//!   [`crate::http::webhook`]), which also shed load with 503 when their concurrency limit is reached.
//! - Shutdown: stop accepting, let every connection finish its current request (graceful), and
//!   give up on stragglers after a bounded grace period.
//!
//! [`Capped`] is the connection permit wrapper, also used for the agents' gRPC endpoint.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{debug, warn};

use crate::config::HttpLimits;

/// How long open connections may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(Some(Duration::from_secs(20)));
    let builder = Arc::new(builder);
    let slots = limits.max_connections.min(Semaphore::MAX_PERMITS);
    // Each connection task holds one permit; this loop waits for one before accepting.
    let connections = Arc::new(Semaphore::new(slots));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small responses go out at once (no Nagle delay behind a delayed ACK).
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        // Handlers that need the client's address (the login limit) read it as `ConnectInfo`.
        let service = TowerToHyperService::new(
            axum::Extension(axum::extract::ConnectInfo(peer)).layer(app.clone()),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        debug!(%peer, %error, "HTTP connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    // Every permit back means every connection task has finished.
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_secs(1),
        connections.acquire_many(slots as u32),
    )
    .await;
    Ok(())
}

/// A connection that holds one of a bounded number of slots for as long as it is open.
pub struct Capped<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

/// Passes each accepted connection of `incoming` on once a slot of `max` is free: at most `max`
/// are open at once, and accepting pauses (the kernel queues) while all are taken.
pub fn capped<IO, E, S>(incoming: S, max: usize) -> impl Stream<Item = Result<Capped<IO>, E>>
where
    S: Stream<Item = Result<IO, E>>,
{
    let slots = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
    incoming.then(move |item| {
        let slots = slots.clone();
        async move {
            let io = item?;
            // The semaphore is never closed, so acquiring only waits.
            let permit = slots
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("the connection semaphore is never closed"));
            Ok(Capped {
                io,
                _permit: permit,
            })
        }
    })
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Capped<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Capped<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Capped<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
