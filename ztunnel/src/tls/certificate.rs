//! A workload's certificate, key and trust roots, and the rustls configs made from them.
//!
//! A [`WorkloadCertificate`] is immutable: renewal builds a new one. Configs are built once per
//! certificate (per expected-identity set on the client side) and shared, so handshakes do not
//! re-parse keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::verifier::{ServerIdentityVerifier, TrustDomainClientVerifier};
use super::{ALPN_H2, TLS_VERSIONS, TlsError, encode_pem, provider};
use crate::identity::Identity;

/// Client configs kept per certificate; past this many distinct expected-identity sets the
/// cache starts over (it only saves rebuilding a config).
const MAX_CACHED_CLIENT_CONFIGS: usize = 256;

/// A workload's leaf certificate (plus intermediates), its private key and the mesh roots.
pub struct WorkloadCertificate {
    /// The SPIFFE id in the leaf's single URI SAN.
    pub identity: Identity,
    /// Leaf first, then intermediates; the root is not included.
    pub chain: Vec<CertificateDer<'static>>,
    /// Trust anchors for verifying peers.
    pub roots: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    key: PrivateKeyDer<'static>,
    serial: String,
    certified_key: Arc<CertifiedKey>,
    root_store: Arc<RootCertStore>,
    server_config: OnceLock<Arc<ServerConfig>>,
    client_configs: Mutex<HashMap<Vec<Identity>, Arc<ClientConfig>>>,
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("roots_len", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Checks and bundles a chain (leaf first), its private key and the trust roots. The
    /// identity and validity come from the leaf; the key must match the leaf's public key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<WorkloadCertificate, TlsError> {
        let leaf = chain.first().ok_or(TlsError::EmptyChain)?;
        let what = "workload leaf certificate";
        let parsed = parse(leaf, what)?;
        let identity = identity_from_parsed(&parsed, what)?;
        let not_before = from_unix(parsed.validity().not_before.timestamp());
        let not_after = from_unix(parsed.validity().not_after.timestamp());
        let serial = parsed.serial.to_string();

        if roots.is_empty() {
            return Err(TlsError::NoRoots { identity });
        }
        let mut store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            store.add(root.clone()).map_err(|source| TlsError::BadRoot {
                identity: identity.clone(),
                index,
                source: Box::new(source),
            })?;
        }
        let certified_key = CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
            .map_err(|source| TlsError::Key { identity: identity.clone(), source: Box::new(source) })?;

        Ok(WorkloadCertificate {
            identity,
            chain,
            roots,
            not_before,
            not_after,
            key,
            serial,
            certified_key: Arc::new(certified_key),
            root_store: Arc::new(store),
            server_config: OnceLock::new(),
            client_configs: Mutex::new(HashMap::new()),
        })
    }

    /// The leaf's serial number in decimal (the form Istio's config dump shows).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The private key of the leaf.
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// Leaf and intermediates as concatenated PEM blocks.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| encode_pem("CERTIFICATE", c)).collect()
    }

    /// Trust roots as concatenated PEM blocks.
    pub fn roots_pem(&self) -> String {
        self.roots.iter().map(|c| encode_pem("CERTIFICATE", c)).collect()
    }

    /// The private key as a PEM block labelled for its encoding.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        encode_pem(label, self.key.secret_der())
    }

    /// Total validity period of the leaf (zero if the dates are inverted).
    pub fn lifetime(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }

    /// mTLS server config: TLS 1.3 only, ALPN h2, the two AES-GCM suites, a client certificate
    /// required, chained to our roots and in our trust domain. Built once per certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        if let Some(config) = self.server_config.get() {
            return Ok(config.clone());
        }
        let config_error =
            |source| TlsError::Config { side: "server", identity: self.identity.clone(), source: Box::new(source) };
        let verifier = TrustDomainClientVerifier::new(self.root_store.clone(), self.identity.trust_domain())
            .map_err(|e| config_error(rustls::Error::General(e.to_string())))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(TLS_VERSIONS)
            .map_err(config_error)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified_key.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Mesh clients never resume (peer identity is checked on every handshake).
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let config = Arc::new(config);
        // Another caller may have won the race; both configs are equivalent.
        Ok(self.server_config.get_or_init(|| config).clone())
    }

    /// mTLS client config: same version, suites and ALPN, presents this certificate, sends no
    /// SNI, and accepts the server only if its chain leads to our roots and its SPIFFE id is one
    /// of `expected`. Cached per distinct set of expected identities.
    pub fn client_config(&self, expected: &[Identity]) -> Result<Arc<ClientConfig>, TlsError> {
        let mut key = expected.to_vec();
        key.sort();
        key.dedup();
        if let Some(config) = self.cached_client_config(&key) {
            return Ok(config);
        }
        let config_error =
            |source| TlsError::Config { side: "client", identity: self.identity.clone(), source: Box::new(source) };
        if key.is_empty() {
            return Err(config_error(rustls::Error::General("no expected server identities given".to_string())));
        }
        let verifier = ServerIdentityVerifier::new(self.root_store.clone(), key.clone());
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(TLS_VERSIONS)
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified_key.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.enable_sni = false;
        config.resumption = Resumption::disabled();
        let config = Arc::new(config);

        let mut cache = self.client_configs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MAX_CACHED_CLIENT_CONFIGS {
            cache.clear();
        }
        Ok(cache.entry(key).or_insert(config).clone())
    }

    fn cached_client_config(&self, key: &[Identity]) -> Option<Arc<ClientConfig>> {
        self.client_configs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(key).cloned()
    }
}

/// The SPIFFE id in a certificate's single URI SAN. `what` names the certificate in errors
/// ("peer certificate", "client certificate", ...).
pub fn identity_from_cert(cert: &CertificateDer<'_>, what: &'static str) -> Result<Identity, TlsError> {
    identity_from_parsed(&parse(cert, what)?, what)
}

fn parse<'a>(cert: &'a CertificateDer<'_>, what: &'static str) -> Result<X509Certificate<'a>, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::CertificateParse { what, reason: e.to_string() })?;
    Ok(parsed)
}

fn identity_from_parsed(cert: &X509Certificate<'_>, what: &'static str) -> Result<Identity, TlsError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::CertificateParse { what, reason: format!("subjectAltName: {e}") })?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(TlsError::NoUriSan { what }),
        [uri] => uri.parse().map_err(|source| TlsError::SanNotSpiffe { what, source }),
        many => Err(TlsError::MultipleUriSans { what, count: many.len() }),
    }
}

/// Seconds since the Unix epoch (negative before it) as a `SystemTime`.
pub(crate) fn from_unix(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}
