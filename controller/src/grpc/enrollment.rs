//! `EnrollmentService.Join`: a one-time join token buys a client certificate.
//!
//! The agent sends a CSR for a key it generated itself (the private key never leaves it). The
//! request is checked before the token is spent; the token is spent atomically in the store;
//! the certificate's name is the one fixed in the token, else the one the request asks for.

use std::sync::Arc;

use proto::v1 as pb;
use proto::v1::enrollment_service_server::EnrollmentService;
use shared::ids::AgentName;
use shared::join_token::JoinToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::tls::PeerInfo;
use crate::pki::{CertificateAuthority, requested_name};
use crate::store::StateStore;

pub struct Enrollment {
    pub store: Arc<dyn StateStore>,
    /// `None` when the controller runs with its own PKI and has no CA key.
    pub ca: Option<Arc<CertificateAuthority>>,
}

fn now_secs() -> i64 {
    shared::runner::now_ms() / 1000
}

#[tonic::async_trait]
impl EnrollmentService for Enrollment {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.addr.to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        let token = JoinToken::parse(&req.token).map_err(|e| {
            warn!(%peer, error = %e, "join refused: malformed token");
            Status::invalid_argument(e.to_string())
        })?;
        let Some(ca) = self.ca.clone() else {
            warn!(%peer, "join refused: this controller has no CA key");
            return Err(Status::failed_precondition(
                "this controller has no CA key (TLS_CA_KEY_FILE), so it cannot enroll agents; \
                 issue the agent a certificate from your own CA",
            ));
        };
        let csr = CertificateAuthority::parse_csr(&req.csr_pem).map_err(|e| {
            warn!(%peer, error = %e, "join refused: bad certificate request");
            Status::invalid_argument(e.to_string())
        })?;
        let requested = requested_name(&csr).map(|n| AgentName::parse(&n));
        let requested = match requested {
            Some(Ok(name)) => name,
            Some(Err(e)) => {
                return Err(Status::invalid_argument(format!(
                    "the requested name is unusable: {e}"
                )));
            }
            None => {
                return Err(Status::invalid_argument(
                    "the certificate request names no agent",
                ));
            }
        };

        let used_by = format!("{requested} from {peer}");
        let outcome = self
            .store
            .take_join_token(&token.id, &token.secret, now_secs(), &used_by)
            .await
            .map_err(|e| {
                warn!(error = %e, "join failed: store error");
                Status::internal("the controller's store failed; try again")
            })?;
        let fixed = match outcome {
            Ok(fixed) => fixed,
            Err(refusal) => {
                warn!(%peer, token = %token.id, reason = %refusal, "join refused");
                return Err(Status::permission_denied(refusal.to_string()));
            }
        };
        let name = match fixed {
            Some(fixed) => AgentName::parse(&fixed).map_err(|e| Status::internal(e.to_string()))?,
            None => requested,
        };
        let certificate_pem = ca.sign_agent(&csr, &name).map_err(|e| {
            warn!(error = %e, "join failed: cannot sign");
            Status::internal("the controller could not sign the certificate")
        })?;
        info!(agent = %name, token = %token.id, %peer, "agent enrolled");
        Ok(Response::new(pb::JoinResponse {
            certificate_pem,
            ca_pem: ca.cert_pem().to_owned(),
            agent_name: name.to_string(),
        }))
    }
}
