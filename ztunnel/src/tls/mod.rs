//! Mutual TLS for HBONE: rustls client and server configs built from a workload certificate,
//! and the SPIFFE checks Istio applies on top of chain verification.
//!
//! Wire facts kept here (they must match Istio's ztunnel exactly): TLS 1.3 only, ALPN `h2`,
//! cipher suites `TLS13_AES_256_GCM_SHA384` and `TLS13_AES_128_GCM_SHA256`, no SNI from the
//! client, the client checks the server's URI SAN against the expected identities, the server
//! requires a client certificate in its own trust domain.
//!
//! This module does no IO and knows nothing of workloads, policy or pools: callers hand it
//! certificates and get back configs, then run the handshake themselves.

mod certificate;
mod csr;
mod pem;
mod verifier;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::{cipher_suite, default_provider};

use crate::identity::{Identity, IdentityError};

pub(crate) use certificate::from_unix;
pub use certificate::{WorkloadCertificate, identity_from_cert};
pub use csr::{CertificateRequest, certificate_request, verify_chain};
pub(crate) use pem::base64;
pub use pem::encode_pem;

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Protocol versions offered and accepted: TLS 1.3 only.
pub(crate) static TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Errors from building TLS configs or reading identities out of certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    CertificateParse { what: &'static str, reason: String },
    #[error("{what}: certificate has no URI SAN, expected one SPIFFE id")]
    NoUriSan { what: &'static str },
    #[error("{what}: certificate has {count} URI SANs, expected exactly one SPIFFE id")]
    MultipleUriSans { what: &'static str, count: usize },
    #[error("{what}: URI SAN is not a workload SPIFFE id: {source}")]
    SanNotSpiffe {
        what: &'static str,
        #[source]
        source: IdentityError,
    },
    #[error("workload certificate chain is empty (expected the leaf first)")]
    EmptyChain,
    #[error("workload certificate for {identity} has no trust roots")]
    NoRoots { identity: Identity },
    #[error("workload certificate for {identity}: root certificate {index} is unusable: {source}")]
    BadRoot {
        identity: Identity,
        index: usize,
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("workload certificate for {identity}: private key does not fit the leaf: {source}")]
    Key {
        identity: Identity,
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("building TLS {side} config for {identity}: {source}")]
    Config {
        side: &'static str,
        identity: Identity,
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("server identity mismatch: expected {}, got {got}", format_expected(.expected))]
    IdentityMismatch { expected: Vec<Identity>, got: Identity },
    #[error("client identity {got} is not in trust domain {expected:?}")]
    TrustDomainMismatch { expected: String, got: Identity },
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("cannot make a certificate signing request for {identity}: {reason}")]
    Csr { identity: Identity, reason: String },
    #[error("certificate chain does not lead to the given roots: {reason}")]
    ChainNotTrusted { reason: String },
}

fn format_expected(expected: &[Identity]) -> String {
    match expected {
        [] => "no identity (empty list)".to_string(),
        [one] => one.to_string(),
        many => {
            let names: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("one of [{}]", names.join(", "))
        }
    }
}

/// The ring provider restricted to the two TLS 1.3 AES-GCM suites Istio uses. Key exchange
/// groups and signature algorithms are ring's defaults.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![cipher_suite::TLS13_AES_256_GCM_SHA384, cipher_suite::TLS13_AES_128_GCM_SHA256],
                ..default_provider()
            })
        })
        .clone()
}

/// Installs ring as the process-wide default rustls provider, for TLS users that do not pass
/// one explicitly (the mesh configs here always do). Calling it again is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = default_provider().install_default();
}

/// Identity of the verified peer of an established connection: the single URI SAN of the
/// first certificate the peer presented.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, TlsError> {
    let leaf = conn.peer_certificates().and_then(|certs| certs.first()).ok_or(TlsError::NoPeerCertificate)?;
    identity_from_cert(leaf, "peer certificate")
}
