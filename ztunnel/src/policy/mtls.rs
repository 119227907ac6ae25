//! mTLS modes expressed as policy. istiod turns a STRICT `PeerAuthentication` into a DENY
//! policy that matches peers without an identity (`notPrincipals: [presence]`): the static one,
//! `istio_converted_static_strict` in the root namespace, which it attaches to every workload
//! under STRICT by listing it in the workload's `authorizationPolicies`; port-level exceptions
//! become per-workload policies with `notDestinationPorts` rules. Enforcement is then the
//! ordinary decision, so the same engine serves xDS and the local config's `mtls` shorthand.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::model::{Action, Authorization, Clause, Match, PolicyKey, Rule, Scope};
use super::string_match::StringMatch;

/// Istio's default root namespace, where mesh-wide policies live.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Name istiod gives the policy that enforces STRICT mTLS.
pub const STATIC_STRICT_NAME: &str = "istio_converted_static_strict";

/// Whether a workload accepts plaintext. PERMISSIVE is Istio's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MtlsMode {
    /// Only connections with a verified peer identity (HBONE).
    #[serde(rename = "STRICT")]
    Strict,
    /// mTLS and plaintext.
    #[default]
    #[serde(rename = "PERMISSIVE")]
    Permissive,
}

/// `istio-system/istio_converted_static_strict`.
pub fn static_strict_key() -> PolicyKey {
    PolicyKey::new(ROOT_NAMESPACE, STATIC_STRICT_NAME)
}

/// The policy istiod sends for STRICT: deny every connection without a peer identity. Its
/// scope is `WorkloadSelector`: it applies to the workloads that list it.
pub fn static_strict_policy() -> Authorization {
    let no_identity = Match { not_principals: vec![StringMatch::Presence], ..Match::default() };
    Authorization {
        name: Arc::from(STATIC_STRICT_NAME),
        namespace: Arc::from(ROOT_NAMESPACE),
        scope: Scope::WorkloadSelector,
        action: Action::Deny,
        rules: vec![Rule { clauses: vec![Clause { matches: vec![no_identity] }] }],
        dry_run: false,
        unevaluated: Vec::new(),
    }
}
