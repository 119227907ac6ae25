//! Certificate signing requests as Istio's CA expects them: a fresh ECDSA P-256 key, an empty
//! subject (no CN) and exactly one URI SAN holding the SPIFFE id; and the check that a chain
//! handed back by a CA leads to its roots.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::ParsedCertificate;

use super::{TlsError, provider};
use crate::identity::Identity;

/// A PEM CSR and the private key it was made with.
pub struct CertificateRequest {
    pub csr_pem: String,
    pub key: PrivateKeyDer<'static>,
}

/// A new key pair and a CSR for `id` signed with it.
pub fn certificate_request(id: &Identity) -> Result<CertificateRequest, TlsError> {
    let fail = |e: rcgen::Error| TlsError::Csr { identity: id.clone(), reason: e.to_string() };
    let key = KeyPair::generate().map_err(fail)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().map_err(fail)?)];
    let csr = params.serialize_request(&key).map_err(fail)?;
    let csr_pem = csr.pem().map_err(fail)?;
    Ok(CertificateRequest { csr_pem, key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())) })
}

/// Checks that `chain` (leaf first, then intermediates) is signed through to one of `roots`
/// and valid now.
pub fn verify_chain(chain: &[CertificateDer<'static>], roots: &[CertificateDer<'static>]) -> Result<(), TlsError> {
    let (leaf, intermediates) = chain.split_first().ok_or(TlsError::EmptyChain)?;
    let mut store = RootCertStore::empty();
    let (_, rejected) = store.add_parsable_certificates(roots.iter().cloned());
    if store.is_empty() {
        return Err(TlsError::ChainNotTrusted { reason: format!("none of the {rejected} roots is usable") });
    }
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| TlsError::ChainNotTrusted { reason: format!("leaf certificate: {e}") })?;
    let algorithms = provider().signature_verification_algorithms.all;
    verify_server_cert_signed_by_trust_anchor(&parsed, &store, intermediates, UnixTime::now(), algorithms)
        .map_err(|e| TlsError::ChainNotTrusted { reason: e.to_string() })
}
