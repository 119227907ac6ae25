//! Istio-compatible Prometheus metrics.
//!
//! Owns the metric registry and the TCP connection metrics that Istio dashboards and Kiali
//! read: `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
//! `istio_tcp_received_bytes_total`, `istio_tcp_sent_bytes_total`, all labelled with
//! [`ConnectionLabels`], plus `istio_build{component="ztunnel",tag=...}`, and ztunnel's own
//! authorization counters ([`AuthorizationMetrics`]). Empty label values
//! are exported as `unknown`, as Istio's ztunnel does.
//!
//! Recording is cheap: the caller builds labels once per connection and either calls the
//! per-event methods on [`Metrics`] or resolves a [`ConnectionMetrics`] handle, after which
//! every update is a single atomic add. Nothing on the recording path locks the registry.
//!
//! This module must not look up workloads or decide label values; callers (the proxy) fill
//! [`ConnectionLabels`]. Serving the text over HTTP lives in `admin`.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod authorization;
#[cfg(test)]
pub(crate) mod tests;

pub use authorization::{AuthorizationLabels, AuthorizationMetrics};

/// Errors from this module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The registry could not be rendered as OpenMetrics text.
    #[error("metrics registry: encoding as openmetrics text failed")]
    Encode(#[source] std::fmt::Error),
}

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
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: RequestProtocol,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// A label value written with OpenMetrics escaping; an empty value becomes `unknown`.
struct LabelText<'a>(&'a str);

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

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BuildLabels {
    component: &'static str,
    tag: &'static str,
}

impl EncodeLabelSet for BuildLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("component", LabelText(self.component)).encode(encoder.encode_label())?;
        ("tag", LabelText(self.tag)).encode(encoder.encode_label())
    }
}

type ConnectionFamily = Family<ConnectionLabels, Counter>;

/// The process's metrics. Build once at startup, share as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    opened: ConnectionFamily,
    closed: ConnectionFamily,
    received_bytes: ConnectionFamily,
    sent_bytes: ConnectionFamily,
    /// Decisions of authorization policy.
    pub authorization: AuthorizationMetrics,
}

/// The four counters of one connection's label set, resolved once; updates are atomic adds.
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    opened: Counter,
    closed: Counter,
    received_bytes: Counter,
    sent_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers the TCP connection metrics and `istio_build` under the `istio_` prefix.
    pub fn new() -> Metrics {
        // Counters get their `_total` suffix from the encoder, so names are registered bare.
        let mut registry = Registry::with_prefix("istio");
        let opened = ConnectionFamily::default();
        let closed = ConnectionFamily::default();
        let received_bytes = ConnectionFamily::default();
        let sent_bytes = ConnectionFamily::default();
        registry.register("tcp_connections_opened", "The total number of TCP connections opened", opened.clone());
        registry.register("tcp_connections_closed", "The total number of TCP connections closed", closed.clone());
        registry.register(
            "tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            received_bytes.clone(),
        );
        registry.register(
            "tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            sent_bytes.clone(),
        );

        let build = Family::<BuildLabels, Gauge>::default();
        registry.register("build", "Istio component build info", build.clone());
        build.get_or_create(&BuildLabels { component: "ztunnel", tag: env!("CARGO_PKG_VERSION") }).set(1);

        let authorization = AuthorizationMetrics::register(&mut registry);
        Metrics { registry, opened, closed, received_bytes, sent_bytes, authorization }
    }

    /// The `istio_`-prefixed registry, for other components to add their metrics at startup
    /// (before the `Metrics` is shared).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Resolves the four counters for `labels` once, so the connection's later updates do no
    /// label hashing. Creates the series (at zero) if they did not exist.
    pub fn connection(&self, labels: &ConnectionLabels) -> ConnectionMetrics {
        ConnectionMetrics {
            opened: self.opened.get_or_create_owned(labels),
            closed: self.closed.get_or_create_owned(labels),
            received_bytes: self.received_bytes.get_or_create_owned(labels),
            sent_bytes: self.sent_bytes.get_or_create_owned(labels),
        }
    }

    /// Counts one opened connection.
    pub fn connection_opened(&self, labels: &ConnectionLabels) {
        self.opened.get_or_create(labels).inc();
    }

    /// Counts one closed connection and adds the bytes not yet recorded with
    /// [`Metrics::add_bytes`]. `sent` is what went back to the client (response direction),
    /// `received` what came from the client (request direction).
    pub fn connection_closed(&self, labels: &ConnectionLabels, sent: u64, received: u64) {
        self.add_bytes(labels, sent, received);
        self.closed.get_or_create(labels).inc();
    }

    /// Adds bytes of a connection still open (for long-lived connections reported in steps).
    pub fn add_bytes(&self, labels: &ConnectionLabels, sent: u64, received: u64) {
        if sent > 0 {
            self.sent_bytes.get_or_create(labels).inc_by(sent);
        }
        if received > 0 {
            self.received_bytes.get_or_create(labels).inc_by(received);
        }
    }

    /// The whole registry as OpenMetrics text (ending in `# EOF`).
    pub fn try_encode(&self) -> Result<String, MetricsError> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).map_err(MetricsError::Encode)?;
        Ok(text)
    }

    /// Like [`Metrics::try_encode`]; a failure (not possible with the encoders in this
    /// module, which never fail) is logged and yields an empty string.
    pub fn encode(&self) -> String {
        self.try_encode().unwrap_or_else(|e| {
            tracing::error!(error = %e, "metrics not rendered");
            String::new()
        })
    }
}

impl ConnectionMetrics {
    /// Counts the connection as opened.
    pub fn opened(&self) {
        self.opened.inc();
    }

    /// Adds bytes sent back to the client (response direction).
    pub fn add_sent(&self, bytes: u64) {
        self.sent_bytes.inc_by(bytes);
    }

    /// Adds bytes received from the client (request direction).
    pub fn add_received(&self, bytes: u64) {
        self.received_bytes.inc_by(bytes);
    }

    /// Counts the connection as closed.
    pub fn closed(&self) {
        self.closed.inc();
    }
}
