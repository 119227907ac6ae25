//! The local certificate authority: a root certificate and key kept on this node, which signs
//! workload certificates without a control plane (local mode, the demo, tests).
//!
//! It owns loading a root from PEM files, generating one into a state directory on first run,
//! and issuing leaf certificates shaped like Istio's: ECDSA P-256 key, no subject, exactly one
//! URI SAN holding the SPIFFE id. It does not cache or renew; that is [`super::manager`]'s job.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Identity;
use super::signing_key::signing_key_from_pem;
use crate::tls::{TlsError, WorkloadCertificate, encode_pem, from_unix};

/// File names inside the state directory, as Istio names its CA files.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// Leaf validity when none is configured (Istio's default workload certificate TTL).
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);
/// Leaf `notBefore` is set this far in the past so peers with a slightly slow clock accept it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);
/// Validity of a generated root.
const GENERATED_ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Errors loading, generating or using the local CA, and failures of certificate sources.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: no CERTIFICATE block found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key found (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    NoKey { path: PathBuf },
    #[error("{path}: unsupported private key (need EC P-256 or RSA): {reason}")]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{path}: root certificate is not valid X.509: {reason}")]
    BadRoot { path: PathBuf, reason: String },
    #[error("{path}: root certificate is not a CA (basicConstraints cA is not true)")]
    NotCa { path: PathBuf },
    #[error("{path}: root certificate expired at {not_after}")]
    RootExpired { path: PathBuf, not_after: String },
    #[error("root key {key} does not belong to root certificate {cert} (public keys differ)")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "state directory {dir} has {present} but not {missing}; restore {missing} or remove {present} to generate a new root"
    )]
    PartialState { dir: PathBuf, present: &'static str, missing: &'static str },
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing certificate for {identity}: {source}")]
    Sign {
        identity: Identity,
        #[source]
        source: rcgen::Error,
    },
    #[error("issued certificate for {identity} is unusable: {source}")]
    Unusable {
        identity: Identity,
        #[source]
        source: Box<TlsError>,
    },
    #[error("certificate authority returned a certificate for {got} when asked for {requested}")]
    WrongIdentity { requested: Identity, got: Identity },
    #[error("certificate authority unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("certificate authority answered badly for {identity}: {reason}")]
    BadAnswer { identity: Identity, reason: String },
}

/// A root certificate and its signing key.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    root_not_after: SystemTime,
    validity: Duration,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("root_not_after", &self.root_not_after)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Root certificate and key from PEM files. The key may be EC P-256 (PKCS#8 or SEC1) or
    /// RSA (PKCS#8 or PKCS#1); it must match the certificate, which must be an unexpired CA.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<LocalCa, CaError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let root = CertificateDer::pem_slice_iter(&cert_pem)
            .next()
            .ok_or_else(|| CaError::NoCertificate { path: cert.to_path_buf() })?
            .map_err(|e| CaError::Pem { path: cert.to_path_buf(), reason: e.to_string() })?;
        let signing_key = signing_key_from_pem(key, &key_pem)?;

        let bad_root = |reason: String| CaError::BadRoot { path: cert.to_path_buf(), reason };
        let (_, parsed) = X509Certificate::from_der(root.as_ref()).map_err(|e| bad_root(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(CaError::NotCa { path: cert.to_path_buf() });
        }
        let not_after = parsed.validity().not_after;
        if not_after.timestamp() < unix_now() {
            return Err(CaError::RootExpired { path: cert.to_path_buf(), not_after: not_after.to_string() });
        }
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&signing_key) {
            return Err(CaError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() });
        }
        let root_not_after = from_unix(not_after.timestamp());
        let issuer =
            Issuer::from_ca_cert_der(&root, signing_key).map_err(|e| bad_root(format!("cannot sign with it: {e}")))?;
        Ok(LocalCa { issuer, root, root_not_after, validity: DEFAULT_LEAF_VALIDITY })
    }

    /// `<state_dir>/root-cert.pem` and `<state_dir>/root-key.pem`: loaded if both exist;
    /// generated (ECDSA P-256, valid 10 years, subject `O=<trust domain>`) and written if
    /// neither does, the key with mode 0600. One without the other is an error, never
    /// overwritten.
    pub fn load_or_generate(state_dir: &Path, trust_domain: &str) -> Result<LocalCa, CaError> {
        let cert_path = state_dir.join(ROOT_CERT_FILE);
        let key_path = state_dir.join(ROOT_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return LocalCa::from_pem_files(&cert_path, &key_path),
            (true, false) => return Err(partial(state_dir, ROOT_CERT_FILE, ROOT_KEY_FILE)),
            (false, true) => return Err(partial(state_dir, ROOT_KEY_FILE, ROOT_CERT_FILE)),
            (false, false) => {}
        }

        let (ca, key_pem) = LocalCa::generate(trust_domain)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| CaError::Write { path: state_dir.to_path_buf(), source })?;
        // Key first: a crash in between leaves a key without a cert, which is reported and
        // never silently replaced.
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, ca.root_pem().as_bytes(), 0o644)?;
        tracing::info!(dir = %state_dir.display(), trust_domain, "generated local root CA");
        Ok(ca)
    }

    /// A fresh self-signed P-256 root; returns it and its key in PKCS#8 PEM.
    fn generate(trust_domain: &str) -> Result<(LocalCa, String), CaError> {
        let key = KeyPair::generate().map_err(|source| CaError::Generate { what: "root key", source })?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::from(now - CLOCK_SKEW_ALLOWANCE);
        params.not_after = OffsetDateTime::from(now + GENERATED_ROOT_VALIDITY);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|source| CaError::Generate { what: "root certificate", source })?;
        let key_pem = key.serialize_pem();
        let ca = LocalCa {
            root: cert.der().clone(),
            root_not_after: from_unix(params.not_after.unix_timestamp()),
            issuer: Issuer::new(params, key),
            validity: DEFAULT_LEAF_VALIDITY,
        };
        Ok((ca, key_pem))
    }

    /// The same CA issuing leaves valid for `validity` through [`super::CertificateSource`].
    pub fn with_validity(mut self, validity: Duration) -> LocalCa {
        self.validity = validity;
        self
    }

    /// Leaf validity used when issuing through [`super::CertificateSource`].
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// The root certificate as one PEM block.
    pub fn root_pem(&self) -> String {
        encode_pem("CERTIFICATE", &self.root)
    }

    /// Trust anchors for workloads whose certificates this CA issues.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.root.clone()]
    }

    /// A leaf for `id`: fresh ECDSA P-256 key, exactly one URI SAN (the SPIFFE id), no subject,
    /// key usage digitalSignature + keyEncipherment, extended key usage serverAuth +
    /// clientAuth, valid from a minute ago for `validity` (never past the root's expiry).
    pub fn issue(&self, id: &Identity, validity: Duration) -> Result<WorkloadCertificate, CaError> {
        let sign_error = |source| CaError::Sign { identity: id.clone(), source };
        let key = KeyPair::generate().map_err(sign_error)?;
        let cert = self.leaf_params(id, validity)?.signed_by(&key, &self.issuer).map_err(sign_error)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        WorkloadCertificate::new(vec![cert.der().clone()], key_der, self.roots())
            .map_err(|source| CaError::Unusable { identity: id.clone(), source: Box::new(source) })
    }

    /// Signs the public key of a PEM certificate signing request as a leaf for `id`, shaped
    /// like [`Self::issue`]'s. Whatever else the request asks for (subject, SANs) is ignored:
    /// the CA decides the identity, as istiod does.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        id: &Identity,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CaError> {
        let sign_error = |source| CaError::Sign { identity: id.clone(), source };
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(sign_error)?;
        let cert = self.leaf_params(id, validity)?.signed_by(&csr.public_key, &self.issuer).map_err(sign_error)?;
        Ok(cert.der().clone())
    }

    fn leaf_params(&self, id: &Identity, validity: Duration) -> Result<CertificateParams, CaError> {
        let now = SystemTime::now();
        let not_after = (now + validity).min(self.root_not_after);
        let mut params = CertificateParams::default();
        // Empty subject: rcgen then marks the SAN extension critical, as RFC 5280 requires.
        params.distinguished_name = DistinguishedName::new();
        let uri = id.to_string().try_into().map_err(|source| CaError::Sign { identity: id.clone(), source })?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.not_before = OffsetDateTime::from(now - CLOCK_SKEW_ALLOWANCE);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

fn partial(dir: &Path, present: &'static str, missing: &'static str) -> CaError {
    CaError::PartialState { dir: dir.to_path_buf(), present, missing }
}

fn read(path: &Path) -> Result<Vec<u8>, CaError> {
    fs::read(path).map_err(|source| CaError::Read { path: path.to_path_buf(), source })
}

/// Writes a sibling temp file with `mode` from the start, then renames it over `path`.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write_error = |source| CaError::Write { path: path.to_path_buf(), source };
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(write_error)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(write_error)?;
    fs::rename(&tmp, path).map_err(write_error)
}

/// 128 random bits, top bit clear so the DER INTEGER stays positive and within 20 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn unix_now() -> i64 {
    OffsetDateTime::from(SystemTime::now()).unix_timestamp()
}

#[cfg(test)]
mod tests;
