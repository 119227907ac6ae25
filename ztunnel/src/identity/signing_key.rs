//! Loads a CA signing key from PEM in the encodings operators keep on disk: PKCS#8
//! (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`).
//!
//! The signer (rcgen on ring) only reads PKCS#8, so SEC1 and PKCS#1 keys are wrapped into a
//! PKCS#8 `PrivateKeyInfo` (RFC 5208) first. Encrypted keys are not supported.

use std::path::Path;

use rcgen::KeyPair;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ca::CaError;

/// `AlgorithmIdentifier` for rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
const RSA_ALGORITHM: &[u8] =
    &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
/// `AlgorithmIdentifier` for id-ecPublicKey (1.2.840.10045.2.1) on P-256 (1.2.840.10045.3.1.7).
const EC_P256_ALGORITHM: &[u8] = &[
    0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03,
    0x01, 0x07,
];
/// `AlgorithmIdentifier` for id-ecPublicKey on P-384 (1.3.132.0.34).
const EC_P384_ALGORITHM: &[u8] =
    &[0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Reads the first private key in `pem_text` (from file `path`, named in errors).
pub(crate) fn signing_key_from_pem(path: &Path, pem_text: &[u8]) -> Result<KeyPair, CaError> {
    let key = PrivateKeyDer::from_pem_slice(pem_text).map_err(|e| match e {
        pem::Error::NoItemsFound => CaError::NoKey { path: path.to_path_buf() },
        other => CaError::Pem { path: path.to_path_buf(), reason: other.to_string() },
    })?;
    let unsupported = |reason: String| CaError::UnsupportedKey { path: path.to_path_buf(), reason };
    match key {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            KeyPair::try_from(&pkcs8).map_err(|e| unsupported(format!("PKCS#8 key rejected: {e}")))
        }
        PrivateKeyDer::Pkcs1(pkcs1) => {
            let wrapped = wrap_pkcs8(RSA_ALGORITHM, pkcs1.secret_pkcs1_der());
            KeyPair::try_from(&PrivatePkcs8KeyDer::from(wrapped))
                .map_err(|e| unsupported(format!("PKCS#1 RSA key rejected: {e}")))
        }
        PrivateKeyDer::Sec1(sec1) => {
            // SEC1 keys name their curve inside; trying both curves the signer supports is
            // simpler than parsing it, and the wrong one is rejected by the parser.
            [EC_P256_ALGORITHM, EC_P384_ALGORITHM]
                .into_iter()
                .find_map(|alg| {
                    let wrapped = wrap_pkcs8(alg, sec1.secret_sec1_der());
                    KeyPair::try_from(&PrivatePkcs8KeyDer::from(wrapped)).ok()
                })
                .ok_or_else(|| {
                    unsupported("SEC1 EC key is not a P-256 or P-384 key with its public key included".to_string())
                })
        }
        _ => Err(unsupported("unknown private key encoding".to_string())),
    }
}

/// `PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }`.
fn wrap_pkcs8(algorithm: &[u8], private_key: &[u8]) -> Vec<u8> {
    let version: &[u8] = &[0x02, 0x01, 0x00];
    let mut octets = vec![0x04];
    push_der_length(&mut octets, private_key.len());
    octets.extend_from_slice(private_key);

    let body_len = version.len() + algorithm.len() + octets.len();
    let mut out = vec![0x30];
    push_der_length(&mut out, body_len);
    out.extend_from_slice(version);
    out.extend_from_slice(algorithm);
    out.extend_from_slice(&octets);
    out
}

/// DER definite length: short form below 128, else long form with minimal big-endian bytes.
fn push_der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_use_minimal_encoding() {
        let cases: [(usize, &[u8]); 5] =
            [(0, &[0x00]), (127, &[0x7f]), (128, &[0x81, 0x80]), (255, &[0x81, 0xff]), (1217, &[0x82, 0x04, 0xc1])];
        for (len, want) in cases {
            let mut out = Vec::new();
            push_der_length(&mut out, len);
            assert_eq!(out, want, "DER length of {len}");
        }
    }

    #[test]
    fn rejects_files_without_a_key_naming_the_file() {
        let path = Path::new("/etc/ca/root-key.pem");
        let err = signing_key_from_pem(path, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect_err("a certificate is not a key");
        let msg = err.to_string();
        assert!(msg.contains("/etc/ca/root-key.pem") && msg.contains("no private key"), "got {msg}");
    }
}
