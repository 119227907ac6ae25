//! Enforcement of authorization policy on inbound connections: the one entry point every
//! inbound path calls once it knows the connection's facts, before it dials the app.
//!
//! [`authorize`] registers the connection with [`AdmittedConnections`] first and only then
//! decides, with the latest state: a policy change published in between is then either seen
//! by this decision or re-evaluated for this connection, never missed. An allowed connection
//! keeps its registration ([`Admission`]) for as long as it is open, so a later policy
//! change can close it; a denied one is counted and returned as [`Error::Denied`].
//!
//! Callers, through the inbound tail both paths share (`proxy::to_app`): inbound HBONE after the `CONNECT` (denied: answer 401); inbound plaintext on a
//! captured pod's port 15006 (`proxy::pod`) after `accept()`, with `source_identity: None`,
//! the original destination from `getsockname()` and the pod's workload (denied: reset).

use std::fmt;
use std::sync::Arc;

use tracing::info;

use super::admitted::Admission;
use super::connection::ConnectionRecord;
use super::{Error, ProxyInputs};
use crate::identity::Identity;
use crate::metrics::AuthorizationLabels;
use crate::policy::{Connection, Decision, Reason};
use crate::state::{ProxyState, Workload};
use crate::types::{ClientAddr, OrigDst};

/// What authorization knows about one inbound connection.
#[derive(Clone, Debug)]
pub struct InboundFacts {
    /// The peer's identity, verified by mTLS; `None` for plaintext.
    pub source_identity: Option<Identity>,
    /// The client's address: the HBONE connection's peer (a waypoint may vouch for another),
    /// or the plaintext connection's peer.
    pub source_addr: ClientAddr,
    /// The destination workload's address and port the client asked for.
    pub destination: OrigDst,
    /// The destination workload on this node.
    pub workload: Arc<Workload>,
}

impl InboundFacts {
    pub fn connection(&self) -> Connection<'_> {
        Connection {
            source_identity: self.source_identity.as_ref(),
            source_ip: self.source_addr.ip(),
            destination: self.destination.addr(),
        }
    }
}

/// Decides `facts` against `state`. The destination workload's current version is used when
/// `state` still has it (its namespace or listed policies, STRICT among them, may have
/// changed); otherwise the version the connection was admitted with.
pub fn decide(state: &ProxyState, facts: &InboundFacts) -> Decision {
    let current = state.workload_by_uid(&facts.workload.uid);
    let workload = current.as_deref().unwrap_or(&facts.workload);
    state.authorize(workload, &facts.connection())
}

/// A connection refused by policy, when it opened or later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    /// Refused after it was admitted, because policies changed.
    pub late: bool,
}

impl Denial {
    pub(super) fn labels(&self) -> AuthorizationLabels {
        labels(&self.reason)
    }
}

fn labels(reason: &Reason) -> AuthorizationLabels {
    AuthorizationLabels {
        policy: reason.policy().map_or_else(|| "-".to_string(), ToString::to_string),
        reason: reason.as_str(),
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Istio ztunnel's wording for refusals at open, so log queries carry over.
        if self.late {
            write!(f, "connection closed after a policy change: {}", self.reason)
        } else {
            write!(f, "connection closed due to policy rejection: {}", self.reason)
        }
    }
}

/// Authorizes an inbound connection: registers it, decides, records the decision on
/// `record` (access log `policy`), counts denials and dry-run denials, and logs the latter.
/// The returned [`Admission`] must be held while the connection is open.
pub fn authorize(inputs: &ProxyInputs, facts: InboundFacts, record: &mut ConnectionRecord) -> Result<Admission, Error> {
    let admission = inputs.admitted.register(facts);
    let decision = decide(&inputs.state.read(), admission.facts());
    record.set_decision(&decision);
    if let Some(dry_run) = decision.dry_run_denial() {
        let facts = admission.facts();
        info!(
            src.addr = %facts.source_addr,
            src.identity = facts.source_identity.as_ref().map(|i| i.to_string()),
            dst.addr = %facts.destination,
            dst.workload = %facts.workload,
            policy.dry_run = %dry_run,
            "dry-run: enforcing the dry-run policies would deny this connection; allowed"
        );
        inputs.metrics.authorization.dry_run_denial(&labels(dry_run));
    }
    if decision.is_allowed() {
        return Ok(admission);
    }
    let denial = Denial { reason: decision.reason, late: false };
    inputs.metrics.authorization.denied(&denial.labels());
    Err(Error::Denied(denial))
}
