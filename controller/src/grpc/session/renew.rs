//! `AgentService.Renew`: an enrolled agent trades its still-valid certificate for a new one.
//!
//! The caller is authenticated by the mutual-TLS handshake like a session; the directory then
//! checks, in the transaction that records the new certificate, that this certificate may act
//! as its name (not revoked, not superseded). The new certificate has the same name and the
//! life the agent's policy sets; the one it replaces stays accepted until it expires or the next
//! renewal, so an agent that dies before writing the new file can still connect.

use proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{SessionService, agent_certificate, agent_identity};
use crate::grpc::enrollment::issue;
use crate::pki::CertificateAuthority;

pub(super) async fn renew(
    service: &SessionService,
    request: Request<pb::RenewRequest>,
) -> Result<Response<pb::RenewResponse>, Status> {
    let name = agent_identity(&request)?;
    let cert = agent_certificate(&request)?;
    let Some(ca) = service.ca.clone() else {
        return Err(Status::failed_precondition(
            "this controller has no CA key (TLS_CA_KEY_FILE), so it cannot renew certificates; \
             renew it with your own CA",
        ));
    };
    let csr = CertificateAuthority::parse_csr(&request.into_inner().csr_pem).map_err(|e| {
        warn!(agent = %name, error = %e, "renewal refused: bad certificate request");
        Status::invalid_argument(e.to_string())
    })?;
    let signer = name.clone();
    let outcome = service
        .directory
        .renew(name.clone(), cert, move |policy| {
            issue(&ca, &csr, &signer, policy)
        })
        .await
        .map_err(|e| {
            warn!(agent = %name, error = %e, "renewal failed: store error");
            Status::unavailable("the controller's store failed; try again")
        })?;
    match outcome {
        Ok(Ok(issued)) => {
            info!(agent = %name, expires_at = issued.expires_at, "agent certificate renewed");
            Ok(Response::new(pb::RenewResponse {
                certificate_pem: issued.certificate_pem,
            }))
        }
        Ok(Err(refusal)) => {
            warn!(agent = %name, reason = %refusal, "renewal refused");
            Err(Status::permission_denied(refusal.to_string()))
        }
        Err(e) => {
            warn!(agent = %name, error = %e, "renewal failed: cannot sign");
            Err(Status::internal(
                "the controller could not sign the certificate",
            ))
        }
    }
}
