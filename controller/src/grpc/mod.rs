//! The agents' endpoint: tonic over our own mutual-TLS acceptor, serving the session and
//! enrollment services until shutdown.

pub mod enrollment;
pub mod revocation;
pub mod session;
pub mod tls;

use std::sync::Arc;

use proto::v1::agent_service_server::AgentServiceServer;
use proto::v1::enrollment_service_server::EnrollmentServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use self::enrollment::Enrollment;
pub use self::session::SessionService;

/// gRPC streams one agent connection may open at once: an agent needs one `Session` (and an
/// enrollment call); the cap keeps one connection from multiplying server work.
const MAX_CONCURRENT_STREAMS: u32 = 16;
/// Agent connections served at once; past this, accepting pauses until one closes.
const MAX_AGENT_CONNECTIONS: usize = 1024;

/// Serves agents on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sessions: SessionService,
    enrollment: Enrollment,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::http::edge::capped(
        ReceiverStream::new(tls::accept(listener, tls, shutdown.clone())),
        MAX_AGENT_CONNECTIONS,
    );
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(AgentServiceServer::new(sessions))
        .add_service(EnrollmentServiceServer::new(enrollment))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
