//! The `/config_dump` view of the certificate manager, in the shape Istio's ztunnel uses under
//! `certificates` (so `istioctl ztunnel-config certificate` can read it): per identity a state
//! string and the chain and roots, each certificate with base64-of-PEM, decimal serial number
//! and RFC 3339 validity.

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::{WorkloadCertificate, encode_pem};

/// One identity known to the certificate manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDump {
    /// `spiffe://...`
    pub identity: String,
    /// `Initializing`, `Available`, or `Unavailable: <error>`.
    pub state: String,
    /// Leaf first, then intermediates; empty unless available.
    pub cert_chain: Vec<CertDump>,
    /// Trust anchors; empty unless available.
    pub root_certs: Vec<CertDump>,
}

/// One certificate in a [`CertificateDump`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertDump {
    /// Base64 of the PEM text, as Istio's dump carries it.
    pub pem: String,
    /// Decimal serial number.
    pub serial_number: String,
    /// `notBefore`, RFC 3339 UTC.
    pub valid_from: String,
    /// `notAfter`, RFC 3339 UTC.
    pub expiration_time: String,
}

pub(super) fn available(cert: &WorkloadCertificate) -> CertificateDump {
    CertificateDump {
        identity: cert.identity.to_string(),
        state: "Available".to_string(),
        cert_chain: cert.chain.iter().map(describe).collect(),
        root_certs: cert.roots.iter().map(describe).collect(),
    }
}

pub(super) fn without_certificate(identity: String, state: String) -> CertificateDump {
    CertificateDump { identity, state, cert_chain: Vec::new(), root_certs: Vec::new() }
}

fn describe(der: &CertificateDer<'static>) -> CertDump {
    let pem = crate::tls::base64(encode_pem("CERTIFICATE", der).as_bytes());
    match X509Certificate::from_der(der.as_ref()) {
        Ok((_, cert)) => CertDump {
            pem,
            serial_number: cert.serial.to_string(),
            valid_from: rfc3339(cert.validity().not_before.timestamp()),
            expiration_time: rfc3339(cert.validity().not_after.timestamp()),
        },
        // Certificates reach the manager only after parsing; keep the dump total anyway.
        Err(e) => CertDump {
            pem,
            serial_number: format!("<unparsable: {e}>"),
            valid_from: String::new(),
            expiration_time: String::new(),
        },
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, second precision, as Istio prints certificate times.
pub(crate) fn rfc3339(unix_seconds: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix_seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("<out of range: {unix_seconds}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339(secs), want, "rfc3339({secs})");
        }
    }
}
