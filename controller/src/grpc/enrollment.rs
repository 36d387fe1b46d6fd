//! `EnrollmentService.Join`: a one-time join token buys a client certificate.
//!
//! The agent sends a CSR for a key it generated itself (the private key never leaves it). The
//! request is checked before the token is spent; the token is spent, the name it is bound to
//! checked (a name already enrolled needs a token minted with `--replace`) and the agent
//! recorded with its policy in one transaction ([`AgentDirectory::enroll`]). The certificate's
//! name is always the token's: what the request asks for is ignored.

use std::sync::Arc;

use proto::v1 as pb;
use proto::v1::enrollment_service_server::EnrollmentService;
use shared::join_token::JoinToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::tls::PeerInfo;
use crate::pki::{CertificateAuthority, PkiError};
use crate::store::agents::{AgentDirectory, EnrollRefusal, Issued};

pub struct Enrollment {
    pub directory: AgentDirectory,
    /// `None` when the controller runs with its own PKI and has no CA key.
    pub ca: Option<Arc<CertificateAuthority>>,
}

fn now_secs() -> i64 {
    shared::runner::now_ms() / 1000
}

/// Signs for `name` with the policy's certificate life, in the directory's terms.
pub(crate) fn issue(
    ca: &CertificateAuthority,
    csr: &rcgen::CertificateSigningRequestParams,
    name: &shared::ids::AgentName,
    policy: &crate::agent_policy::AgentPolicy,
) -> Result<Issued, PkiError> {
    ca.sign_agent(csr, name, policy.cert_validity())
        .map(|signed| Issued {
            certificate_pem: signed.pem,
            cert_sha256: signed.sha256,
            expires_at: signed.expires_at,
        })
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

        let used_by = format!("agent from {peer}");
        let outcome = self
            .directory
            .enroll(
                token.id.clone(),
                token.secret.clone(),
                now_secs(),
                used_by,
                move |name, policy| issue(&ca, &csr, name, policy),
            )
            .await
            .map_err(|e| {
                warn!(error = %e, "join failed: store error");
                Status::internal("the controller's store failed; try again")
            })?;
        let (name, issued) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(refusal)) => {
                warn!(%peer, token = %token.id, reason = %refusal, "join refused");
                return Err(match refusal {
                    EnrollRefusal::NameTaken(_) => Status::already_exists(refusal.to_string()),
                    _ => Status::permission_denied(refusal.to_string()),
                });
            }
            Err(e) => {
                warn!(error = %e, "join failed: cannot sign");
                return Err(Status::internal(
                    "the controller could not sign the certificate",
                ));
            }
        };
        info!(agent = %name, token = %token.id, %peer, expires_at = issued.expires_at, "agent enrolled");
        Ok(Response::new(pb::JoinResponse {
            certificate_pem: issued.certificate_pem,
            ca_pem: self
                .ca
                .as_ref()
                .map(|ca| ca.cert_pem().to_owned())
                .unwrap_or_default(),
            agent_name: name.to_string(),
        }))
    }
}
