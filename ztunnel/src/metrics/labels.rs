//! The label set of Istio's four TCP metrics ([`ConnectionLabels`]) and its OpenMetrics
//! encoding: Istio's label names, empty values exported as `unknown`, values escaped.
//!
//! Values are shared strings (`Arc<str>`): a label set is cloned into each of the four metric
//! families when its series is created, and callers that cache label sets clone them cheaply.
//! This module takes values as given; deciding them is the proxy's job.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder};

/// Which side of the connection reports the metric (label `reporter`).
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum Reporter {
    /// The proxy of the client workload (outbound).
    #[default]
    Source,
    /// The proxy of the server workload (inbound).
    Destination,
}

/// Application protocol seen by the proxy (label `request_protocol`). ztunnel is L4 only.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum RequestProtocol {
    #[default]
    Tcp,
}

/// Why a connection ended abnormally (label `response_flags`), using Envoy's short codes so
/// dashboards read them the same way. [`ResponseFlags::None`] is exported as `-`.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum ResponseFlags {
    #[default]
    None,
    /// `DENY`: refused by authorization policy.
    Denied,
    /// `CONNECT`: the upstream (or the tunnel to it) could not be established.
    ConnectionFailure,
}

/// Transport security of the connection (label `connection_security_policy`).
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub enum SecurityPolicy {
    /// Plain TCP, or not known to be mTLS.
    #[default]
    Unknown,
    /// Carried over mutual TLS (HBONE).
    MutualTls,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

impl RequestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Tcp => "tcp",
        }
    }
}

impl ResponseFlags {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlags::None => "-",
            ResponseFlags::Denied => "DENY",
            ResponseFlags::ConnectionFailure => "CONNECT",
        }
    }
}

impl SecurityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::Unknown => "unknown",
            SecurityPolicy::MutualTls => "mutual_tls",
        }
    }
}

/// Labels of the four TCP metrics, in Istio's names. Principals are SPIFFE URIs
/// (`spiffe://td/ns/NS/sa/SA`); `*_app` / `*_version` are the canonical service name and
/// revision; empty strings are exported as `unknown`.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: Arc<str>,
    pub source_canonical_service: Arc<str>,
    pub source_canonical_revision: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub source_app: Arc<str>,
    pub source_version: Arc<str>,
    pub source_cluster: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_namespace: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_canonical_service: Arc<str>,
    pub destination_canonical_revision: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    pub destination_app: Arc<str>,
    pub destination_version: Arc<str>,
    pub destination_cluster: Arc<str>,
    pub request_protocol: RequestProtocol,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// A label value written with OpenMetrics escaping; an empty value becomes `unknown`.
pub(super) struct LabelText<'a>(pub(super) &'a str);

impl EncodeLabelValue for LabelText<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.0.is_empty() {
            return encoder.write_str("unknown");
        }
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl EncodeLabelSet for ConnectionLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let labels: [(&str, &str); 23] = [
            ("reporter", self.reporter.as_str()),
            ("source_workload", &self.source_workload),
            ("source_canonical_service", &self.source_canonical_service),
            ("source_canonical_revision", &self.source_canonical_revision),
            ("source_workload_namespace", &self.source_workload_namespace),
            ("source_principal", &self.source_principal),
            ("source_app", &self.source_app),
            ("source_version", &self.source_version),
            ("source_cluster", &self.source_cluster),
            ("destination_service", &self.destination_service),
            ("destination_service_namespace", &self.destination_service_namespace),
            ("destination_service_name", &self.destination_service_name),
            ("destination_workload", &self.destination_workload),
            ("destination_canonical_service", &self.destination_canonical_service),
            ("destination_canonical_revision", &self.destination_canonical_revision),
            ("destination_workload_namespace", &self.destination_workload_namespace),
            ("destination_principal", &self.destination_principal),
            ("destination_app", &self.destination_app),
            ("destination_version", &self.destination_version),
            ("destination_cluster", &self.destination_cluster),
            ("request_protocol", self.request_protocol.as_str()),
            ("response_flags", self.response_flags.as_str()),
            ("connection_security_policy", self.connection_security_policy.as_str()),
        ];
        for (key, value) in labels {
            (key, LabelText(value)).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}
