//! Live enforcement: every admitted inbound connection is tracked with its facts and a way to
//! close it, and re-decided whenever state changes; connections a change now denies are
//! closed (a "late rejection": counted in `istio_authorization_late_rejections_total`, logged,
//! and recorded in the access log with `response_flags` DENY).
//!
//! Re-decisions run outside the registry's lock (facts are shared `Arc`s), so admitting new
//! connections never waits for a long re-evaluation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::authorize::{Denial, InboundFacts, decide};
use super::{Error, ForceClose};
use crate::metrics::Metrics;
use crate::policy::Decision;
use crate::state::SharedState;

struct Entry {
    facts: Arc<InboundFacts>,
    close: oneshot::Sender<Denial>,
}

#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    fn live(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The admitted inbound connections of this proxy. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct AdmittedConnections {
    inner: Arc<Registry>,
}

impl AdmittedConnections {
    pub fn new() -> AdmittedConnections {
        AdmittedConnections::default()
    }

    /// Tracks a connection until the returned [`Admission`] drops.
    pub(super) fn register(&self, facts: InboundFacts) -> Admission {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let facts = Arc::new(facts);
        let (close, closed) = oneshot::channel();
        self.inner.live().insert(id, Entry { facts: facts.clone(), close });
        Admission { id, facts, registry: self.inner.clone(), closed }
    }

    /// Connections currently tracked.
    pub fn len(&self) -> usize {
        self.inner.live().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-decides every tracked connection with `decide` and closes each one now denied.
    /// Returns the closed connections (ones that ended meanwhile are not counted).
    pub fn reevaluate(&self, decide: impl Fn(&InboundFacts) -> Decision) -> Vec<(Arc<InboundFacts>, Denial)> {
        let tracked: Vec<(u64, Arc<InboundFacts>)> =
            self.inner.live().iter().map(|(id, e)| (*id, e.facts.clone())).collect();
        let denied: Vec<(u64, Denial)> = tracked
            .iter()
            .filter_map(|(id, facts)| {
                let decision = decide(facts);
                (!decision.is_allowed()).then_some((*id, Denial { reason: decision.reason, late: true }))
            })
            .collect();
        let mut closed = Vec::new();
        let mut live = self.inner.live();
        for (id, denial) in denied {
            let Some(entry) = live.remove(&id) else { continue };
            if entry.close.send(denial.clone()).is_ok() {
                closed.push((entry.facts, denial));
            }
        }
        closed
    }
}

/// One admitted connection's registration; dropping it stops tracking the connection.
pub struct Admission {
    id: u64,
    facts: Arc<InboundFacts>,
    registry: Arc<Registry>,
    closed: oneshot::Receiver<Denial>,
}

impl Admission {
    pub fn facts(&self) -> &InboundFacts {
        &self.facts
    }

    /// Runs `copy` until it ends, a policy change denies the connection
    /// ([`Error::Denied`], late), or the drain deadline passes ([`Error::DrainDeadline`]).
    /// Dropping the unfinished copy closes both sides, as [`ForceClose::or_close`] does.
    pub async fn enforce<T>(
        mut self,
        force_close: &ForceClose,
        copy: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let denied = async {
            match (&mut self.closed).await {
                Ok(denial) => denial,
                // The sender is only dropped together with this registration.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = copy => result,
            denial = denied => Err(Error::Denied(denial)),
            _ = force_close.fired() => Err(Error::DrainDeadline),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.live().remove(&self.id);
    }
}

/// Re-evaluates the admitted connections after every state change, closing the ones now
/// denied. Runs until the state's change channel closes (the task is aborted at shutdown).
pub(crate) async fn reevaluate_on_change(state: SharedState, admitted: AdmittedConnections, metrics: Arc<Metrics>) {
    let mut generations = state.subscribe();
    while generations.changed().await.is_ok() {
        let snapshot = state.read();
        let generation = snapshot.generation();
        // Thousands of connections against thousands of policies can take a while: keep it
        // off the async workers. Changes arriving meanwhile coalesce into one more pass.
        let registry = admitted.clone();
        let pass = tokio::task::spawn_blocking(move || registry.reevaluate(|facts| decide(&snapshot, facts)));
        let closed = match pass.await {
            Ok(closed) => closed,
            Err(e) => {
                error!(generation, error = %e, "policy re-evaluation failed; open connections were not re-checked");
                continue;
            }
        };
        debug!(generation, tracked = admitted.len(), closed = closed.len(), "policies re-evaluated");
        for (facts, denial) in closed {
            warn!(
                src.addr = %facts.source_addr,
                src.identity = facts.source_identity.as_ref().map(|i| i.to_string()),
                dst.addr = %facts.destination,
                dst.workload = %facts.workload,
                policy = denial.reason.policy().map(|p| p.to_string()),
                reason = %denial.reason,
                "late rejection: a policy change denies this open connection; closing it"
            );
            metrics.authorization.late_rejection(&denial.labels());
        }
    }
}
