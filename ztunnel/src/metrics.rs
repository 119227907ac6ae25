//! Istio-compatible Prometheus metrics.
//!
//! Owns the metric registry and the TCP connection metrics that Istio dashboards and Kiali
//! read: `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total`,
//! `istio_tcp_received_bytes_total`, `istio_tcp_sent_bytes_total`, all labelled with
//! [`ConnectionLabels`], plus `istio_build{component="ztunnel",tag=...}`, and ztunnel's own
//! authorization counters ([`AuthorizationMetrics`]) and failure counter ([`FailureMetrics`]).
//! Empty label values
//! are exported as `unknown`, as Istio's ztunnel does.
//!
//! Recording is cheap: the caller builds labels once per connection and either calls the
//! per-event methods on [`Metrics`] or resolves a [`ConnectionMetrics`] handle, after which
//! every update is a single atomic add. Nothing on the recording path locks the registry.
//!
//! This module must not look up workloads or decide label values; callers (the proxy) fill
//! [`ConnectionLabels`]. Serving the text over HTTP lives in `admin`.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod authorization;
mod failures;
mod labels;
#[cfg(test)]
pub(crate) mod tests;

pub use authorization::{AuthorizationLabels, AuthorizationMetrics};
pub use failures::{FailureLabels, FailureMetrics};
use labels::LabelText;
pub use labels::{ConnectionLabels, Reporter, RequestProtocol, ResponseFlags, SecurityPolicy};

/// Errors from this module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The registry could not be rendered as OpenMetrics text.
    #[error("metrics registry: encoding as openmetrics text failed")]
    Encode(#[source] std::fmt::Error),
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
    /// Connections that failed or ended abnormally, by reason.
    pub failures: FailureMetrics,
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
        let failures = FailureMetrics::register(&mut registry);
        Metrics { registry, opened, closed, received_bytes, sent_bytes, authorization, failures }
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
