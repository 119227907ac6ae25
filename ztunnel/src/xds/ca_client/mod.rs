//! Client of istiod's certificate service (`istio.v1.auth.IstioCertificateService`).
//!
//! For each identity: a fresh P-256 key and a CSR with one URI SAN and no subject, sent with
//! the service-account token and `ImpersonatedIdentity` metadata (ztunnel asks on behalf of
//! the workloads on its node). The answer is only accepted if the leaf's single SAN is the
//! identity asked for and the chain verifies to the roots in the answer. At most
//! `concurrency` requests are in flight; caching, renewal at half-life and backoff are the
//! certificate manager's.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use prost_types::value::Kind;
use prost_types::{Struct, Value};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use super::XdsError;
use super::grpc::{Istiod, error_chain};
use super::proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use super::proto::ca::{IstioCertificateRequest, IstioCertificateResponse};
use crate::config::{IstiodCaSettings, IstiodIdentity};
use crate::identity::{CaError, CertificateSource, Identity};
use crate::tls::{self, WorkloadCertificate};

/// Metadata key istiod reads to issue for another identity than the caller's.
const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

pub struct IstioCa {
    istiod: Istiod,
    channel: Channel,
    ttl: Duration,
    limit: Semaphore,
}

impl std::fmt::Debug for IstioCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioCa").field("address", &self.istiod.address()).field("ttl", &self.ttl).finish()
    }
}

impl IstioCa {
    /// Asks for certificates valid for `ttl` (istiod may shorten it). Connects lazily, so a
    /// CA that is down at startup only delays certificates.
    pub fn new(
        settings: &IstiodCaSettings,
        identity: &IstiodIdentity,
        cluster_id: &str,
        ttl: Duration,
    ) -> Result<IstioCa, XdsError> {
        let istiod = Istiod::new(&settings.address, &settings.root_ca, &identity.token_file, cluster_id)?;
        let channel = istiod.lazy_channel()?;
        Ok(IstioCa { istiod, channel, ttl, limit: Semaphore::new(settings.concurrency.max(1)) })
    }

    async fn request(&self, id: &Identity) -> Result<WorkloadCertificate, CaError> {
        let unavailable = |reason: String| CaError::Unavailable { reason };
        let _permit = self.limit.acquire().await.map_err(|e| unavailable(e.to_string()))?;
        let csr = tls::certificate_request(id).map_err(|e| unavailable(e.to_string()))?;
        let metadata = Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY.to_string(),
                Value { kind: Some(Kind::StringValue(id.to_string())) },
            )]),
        };
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.csr_pem,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: Some(metadata),
        });
        self.istiod.authorize(&mut request).map_err(|e| unavailable(e.to_string()))?;
        let response = IstioCertificateServiceClient::new(self.channel.clone())
            .create_certificate(request)
            .await
            .map_err(|status| unavailable(format!("istiod {}: {}", self.istiod.address(), error_chain(&status))))?
            .into_inner();
        accept(id, response, csr.key)
    }
}

impl CertificateSource for IstioCa {
    fn issue(&self, id: &Identity) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, CaError>> + Send + '_>> {
        let id = id.clone();
        Box::pin(async move { self.request(&id).await })
    }
}

/// Checks an answer and bundles it with the key: leaf first; roots from `root_cert` if
/// present, else the last entry (which may hold several); the leaf's SAN must be `id`; the
/// chain must verify to those roots.
fn accept(
    id: &Identity,
    response: IstioCertificateResponse,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<WorkloadCertificate, CaError> {
    let bad = |reason: String| CaError::BadAnswer { identity: id.clone(), reason };
    let mut entries = response.cert_chain;
    let root_pems = match response.root_cert {
        Some(roots) if !roots.ca_cert.is_empty() => roots.ca_cert,
        _ if entries.len() >= 2 => entries.pop().into_iter().collect(),
        _ => return Err(bad(format!("{} certificate(s) and no roots; expected leaf first, root last", entries.len()))),
    };
    let parse = |what: &str, pems: &[String]| -> Result<Vec<CertificateDer<'static>>, CaError> {
        let mut out = Vec::new();
        for (i, pem) in pems.iter().enumerate() {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("{what} entry {i}: invalid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(bad(format!("{what} entry {i}: no CERTIFICATE block")));
            }
            out.extend(certs);
        }
        Ok(out)
    };
    let chain = parse("cert_chain", &entries)?;
    let roots = parse("roots", &root_pems)?;
    let leaf = chain.first().ok_or_else(|| bad("empty certificate chain".into()))?;
    let got = tls::identity_from_cert(leaf, "issued leaf certificate").map_err(|e| bad(e.to_string()))?;
    if &got != id {
        return Err(CaError::WrongIdentity { requested: id.clone(), got });
    }
    tls::verify_chain(&chain, &roots).map_err(|e| bad(e.to_string()))?;
    WorkloadCertificate::new(chain, key, roots).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests;
