//! A hand-driven agent connection, for tests that must misbehave in ways the real agent never
//! does (no certificate, an expired one, a wrong protocol version, silence after registering).

use std::path::Path;

use proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::pki::CertFiles;

/// A TLS channel to `url` trusting `ca`, presenting `identity` if given; `Err` carries the whole
/// error chain (the TLS alert, when there is one).
pub async fn channel(
    url: &str,
    ca: &Path,
    identity: Option<&CertFiles>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("read CA")));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&id.cert).expect("read cert"),
            std::fs::read(&id.key).expect("read key"),
        ));
    }
    Channel::from_shared(url.to_owned())
        .expect("valid URL")
        .tls_config(tls)
        .expect("valid TLS config")
        .connect()
        .await
        .map_err(|e| agent::connection::error_chain(&e))
}

/// A registration for one architecture with one runner slot.
pub fn register(arch: pb::Arch) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            protocol_version: pb::PROTOCOL_VERSION,
            protocol_minor: pb::PROTOCOL_MINOR,
            capacity: vec![pb::ArchCapacity {
                arch: arch as i32,
                max_runners: 1,
            }],
            runtime: pb::RuntimeKind::Docker as i32,
            max_runners: 1,
            healthy: true,
            ..Default::default()
        })),
    }
}

/// Opens a session that sends `first` and then nothing while the returned sender lives.
pub async fn session(
    channel: Channel,
    first: pb::AgentMessage,
) -> Result<
    (
        tokio::sync::mpsc::Sender<pb::AgentMessage>,
        tonic::Streaming<pb::ControllerMessage>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.expect("queue the first message");
    let inbound = pb::agent_service_client::AgentServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}
