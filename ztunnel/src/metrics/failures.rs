//! `istio_tcp_connection_failures_total{reporter, reason}`: proxied connections that ended
//! abnormally, by cause. ztunnel-specific (Istio's ztunnel has no equivalent), in the style of
//! Istio's TCP metrics (`istio_` prefix, `_total` counter, `reporter` as they use it).
//!
//! `reason` is one of a fixed set chosen by the proxy (`client_reset`, `upstream_reset`,
//! `drain_deadline`, `connect_timeout`, ...), so the number of series stays bounded; this
//! module takes it as given.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{LabelText, Reporter};

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct FailureLabels {
    pub reporter: Reporter,
    /// A short, fixed cause such as `upstream_reset`.
    pub reason: &'static str,
}

impl EncodeLabelSet for FailureLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("reporter", LabelText(self.reporter.as_str())).encode(encoder.encode_label())?;
        ("reason", LabelText(self.reason)).encode(encoder.encode_label())
    }
}

/// Counter of failed connections.
#[derive(Debug, Default)]
pub struct FailureMetrics {
    failures: Family<FailureLabels, Counter>,
}

impl FailureMetrics {
    /// Registers the counter in `registry` (which carries the `istio` prefix).
    pub(super) fn register(registry: &mut Registry) -> FailureMetrics {
        let m = FailureMetrics::default();
        registry.register(
            "tcp_connection_failures",
            "TCP connections that failed or ended abnormally, by reason",
            m.failures.clone(),
        );
        m
    }

    /// Counts one failed connection.
    pub fn failed(&self, reporter: Reporter, reason: &'static str) {
        self.failures.get_or_create(&FailureLabels { reporter, reason }).inc();
    }
}
