//! The fake istiod's certificate service: signs CSRs with a mesh CA for the identity in the
//! `ImpersonatedIdentity` metadata, checks the bearer token, records every request, and can
//! be told to fail or to answer wrongly.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost_types::value::Kind;
use tokio::sync::watch;

use crate::identity::{Identity, LocalCa};
use crate::tls::encode_pem;
use crate::xds::proto::ca::istio_certificate_service_server::IstioCertificateService;
use crate::xds::proto::ca::{IstioCertificateRequest, IstioCertificateResponse};

/// How the fake CA answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaBehavior {
    /// Signs for the requested identity; the chain verifies to the mesh root.
    Normal,
    /// Answers `UNAVAILABLE`, as a CA that is down.
    Unavailable,
    /// Signs the CSR, but for another identity (`sa/impostor`).
    WrongSan,
    /// Signs with a foreign CA while naming the mesh root, so the chain does not verify.
    ForeignChain,
}

/// One certificate request as the fake saw it.
#[derive(Clone, Debug)]
pub struct CaRequest {
    pub impersonated: Option<String>,
    pub authorization: Option<String>,
    pub cluster_id: Option<String>,
    pub csr_pem: String,
    pub validity_seconds: i64,
}

pub(super) struct FakeCa {
    pub(super) mesh: Arc<LocalCa>,
    pub(super) foreign: Arc<LocalCa>,
    pub(super) token: String,
    pub(super) behavior: Mutex<CaBehavior>,
    pub(super) requests: watch::Sender<Vec<CaRequest>>,
}

fn header(request: &tonic::Request<IstioCertificateRequest>, key: &str) -> Option<String> {
    request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tonic::async_trait]
impl IstioCertificateService for Arc<FakeCa> {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        let authorization = header(&request, "authorization");
        let cluster_id = header(&request, "clusterid");
        let body = request.into_inner();
        let impersonated =
            body.metadata.as_ref().and_then(|m| m.fields.get("ImpersonatedIdentity")).and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            });
        self.requests.send_modify(|r| {
            r.push(CaRequest {
                impersonated: impersonated.clone(),
                authorization: authorization.clone(),
                cluster_id,
                csr_pem: body.csr.clone(),
                validity_seconds: body.validity_duration,
            })
        });
        let behavior = *self.behavior.lock().unwrap_or_else(PoisonError::into_inner);
        if behavior == CaBehavior::Unavailable {
            return Err(tonic::Status::unavailable("fake CA is down"));
        }
        if authorization.as_deref() != Some(&format!("Bearer {}", self.token)) {
            return Err(tonic::Status::unauthenticated("missing or wrong bearer token"));
        }
        let id: Identity = impersonated
            .ok_or_else(|| tonic::Status::invalid_argument("no ImpersonatedIdentity"))?
            .parse()
            .map_err(|e| tonic::Status::invalid_argument(format!("bad ImpersonatedIdentity: {e}")))?;
        let validity = Duration::from_secs(u64::try_from(body.validity_duration).unwrap_or(3600).max(1));
        let (signer, san) = match behavior {
            CaBehavior::WrongSan => (&self.mesh, Identity::new(id.trust_domain(), id.namespace(), "impostor")),
            CaBehavior::ForeignChain => (&self.foreign, id),
            _ => (&self.mesh, id),
        };
        let leaf =
            signer.sign_request(&body.csr, &san, validity).map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(IstioCertificateResponse {
            cert_chain: vec![encode_pem("CERTIFICATE", &leaf), self.mesh.root_pem()],
            root_cert: None,
        }))
    }
}
