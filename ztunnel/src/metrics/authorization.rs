//! Authorization counters, next to Istio's TCP metrics and in their style (`istio_` prefix,
//! `_total` counters). ztunnel-specific: Istio's ztunnel has no equivalent.
//!
//! - `istio_authorization_denied_connections_total{policy, reason}`: connections refused when
//!   they opened.
//! - `istio_authorization_late_rejections_total{policy, reason}`: admitted connections closed
//!   later because a policy change denied them.
//! - `istio_authorization_dry_run_denials_total{policy, reason}`: connections let through that
//!   the dry-run policies would have denied.
//!
//! `policy` is the deciding policy as `namespace/name`, or `-` when no single policy decided
//! (ALLOW policies exist but none matched); `reason` is `explicitly_denied` or `not_allowed`.
//! Both are bounded by the configured policies. This module takes the values as given.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::LabelText;

/// Labels of the authorization counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct AuthorizationLabels {
    /// `namespace/name`, or `-`.
    pub policy: String,
    pub reason: &'static str,
}

impl EncodeLabelSet for AuthorizationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("policy", LabelText(&self.policy)).encode(encoder.encode_label())?;
        ("reason", LabelText(self.reason)).encode(encoder.encode_label())
    }
}

type AuthorizationFamily = Family<AuthorizationLabels, Counter>;

#[derive(Debug, Default)]
pub struct AuthorizationMetrics {
    denied: AuthorizationFamily,
    late_rejections: AuthorizationFamily,
    dry_run_denials: AuthorizationFamily,
}

impl AuthorizationMetrics {
    /// Registers the counters in `registry` (which carries the `istio` prefix).
    pub(super) fn register(registry: &mut Registry) -> AuthorizationMetrics {
        let m = AuthorizationMetrics::default();
        registry.register(
            "authorization_denied_connections",
            "Connections refused by authorization policy when they opened",
            m.denied.clone(),
        );
        registry.register(
            "authorization_late_rejections",
            "Open connections closed because a policy change denied them",
            m.late_rejections.clone(),
        );
        registry.register(
            "authorization_dry_run_denials",
            "Connections allowed that dry-run policies would have denied",
            m.dry_run_denials.clone(),
        );
        m
    }

    pub fn denied(&self, labels: &AuthorizationLabels) {
        self.denied.get_or_create(labels).inc();
    }

    pub fn late_rejection(&self, labels: &AuthorizationLabels) {
        self.late_rejections.get_or_create(labels).inc();
    }

    pub fn dry_run_denial(&self, labels: &AuthorizationLabels) {
        self.dry_run_denials.get_or_create(labels).inc();
    }
}
