//! Peer certificate verifiers for HBONE mTLS.
//!
//! Both sides verify the chain to the mesh roots with webpki (no DNS names, no revocation),
//! then apply the SPIFFE rule for their side: the client accepts only the expected server
//! identities, the server accepts only clients in its own trust domain. Handshake signature
//! checks are delegated to the provider's algorithms.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};

use super::{TlsError, identity_from_cert, provider};
use crate::identity::Identity;

/// Carries a [`TlsError`] through rustls, which prints the inner error with `{:?}`; this makes
/// that print the readable message.
struct VerifyFailure(TlsError);

impl fmt::Debug for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for VerifyFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn rejected(err: TlsError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(VerifyFailure(err)))))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Client side: the server's chain must lead to our roots and its SPIFFE id must be one of
/// the identities the caller expects at that destination.
#[derive(Debug)]
pub(super) struct ServerIdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<Identity>,
}

impl ServerIdentityVerifier {
    pub(super) fn new(roots: Arc<RootCertStore>, expected: Vec<Identity>) -> Self {
        ServerIdentityVerifier { roots, expected }
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&parsed, &self.roots, intermediates, now, algorithms().all)?;
        let got = identity_from_cert(end_entity, "server certificate").map_err(rejected)?;
        if !self.expected.contains(&got) {
            return Err(rejected(TlsError::IdentityMismatch { expected: self.expected.clone(), got }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Server side: a client certificate is mandatory, its chain must lead to our roots, and its
/// SPIFFE id must be in our trust domain. Authorization of the particular identity is policy's
/// job, not this verifier's.
#[derive(Debug)]
pub(super) struct TrustDomainClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: Arc<str>,
}

impl TrustDomainClientVerifier {
    pub(super) fn new(
        roots: Arc<RootCertStore>,
        trust_domain: &str,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        // No root hints in the CertificateRequest, as Istio's ztunnel does: every mesh client
        // has exactly one certificate to offer.
        let inner =
            WebPkiClientVerifier::builder_with_provider(roots, provider()).clear_root_hint_subjects().build()?;
        Ok(TrustDomainClientVerifier { inner, trust_domain: trust_domain.into() })
    }
}

impl ClientCertVerifier for TrustDomainClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let got = identity_from_cert(end_entity, "client certificate").map_err(rejected)?;
        if got.trust_domain() != &*self.trust_domain {
            return Err(rejected(TlsError::TrustDomainMismatch { expected: self.trust_domain.to_string(), got }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
