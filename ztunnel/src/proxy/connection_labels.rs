//! Istio metric labels of a connection, decided from its peers, and a cache of the resolved
//! counters per (reporter, source, destination, service, security, flags).
//!
//! Building the 23 labels and hashing them into the four metric families costs a few
//! microseconds and 20-odd allocations; connections between the same pair of workloads get the
//! same labels, so the counters are resolved once per pair and shared. The cache is keyed by
//! the identity of the state's `Arc`s (not by their contents): a workload or service changed
//! by a config update is a new `Arc`, hence a new entry, so labels never go stale. Entries
//! whose workloads or services nobody else holds any more (gone from state, no connection
//! left) are swept when the cache has grown.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use super::connection::Peer;
use crate::identity::Identity;
use crate::metrics::{ConnectionLabels, ConnectionMetrics, Metrics, Reporter, ResponseFlags, SecurityPolicy};
use crate::state::{Service, Workload};

/// Cache size below which stale entries are not swept.
const MIN_SWEEP_LEN: usize = 1024;

/// An `Arc` compared and hashed by address: the same allocation, not equal contents.
struct SameArc<T>(Arc<T>);

impl<T> Clone for SameArc<T> {
    fn clone(&self) -> Self {
        SameArc(self.0.clone())
    }
}

impl<T> PartialEq for SameArc<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Eq for SameArc<T> {}

impl<T> Hash for SameArc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state)
    }
}

impl<T> SameArc<T> {
    /// Only the cache holds it: the state dropped it and no connection uses it.
    fn is_orphaned(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PeerKey {
    workload: Option<SameArc<Workload>>,
    identity: Option<Identity>,
}

impl PeerKey {
    fn of(peer: Peer) -> PeerKey {
        PeerKey { workload: peer.workload.map(SameArc), identity: peer.identity }
    }

    fn parts(&self) -> (Option<&Workload>, Option<&Identity>) {
        (self.workload.as_ref().map(|w| &*w.0), self.identity.as_ref())
    }
}

/// Everything the labels of a connection are decided from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct SeriesKey {
    reporter: Reporter,
    source: PeerKey,
    destination: PeerKey,
    service: Option<SameArc<Service>>,
    mtls: bool,
    flags: ResponseFlags,
}

impl SeriesKey {
    pub(super) fn new(
        reporter: Reporter,
        source: Peer,
        destination: Peer,
        service: Option<&Arc<Service>>,
        mtls: bool,
    ) -> SeriesKey {
        SeriesKey {
            reporter,
            source: PeerKey::of(source),
            destination: PeerKey::of(destination),
            service: service.cloned().map(SameArc),
            mtls,
            flags: ResponseFlags::None,
        }
    }

    /// The source's workload and identity, as far as they are known.
    pub(super) fn source(&self) -> (Option<&Workload>, Option<&Identity>) {
        self.source.parts()
    }

    /// The destination's workload and identity, as far as they are known.
    pub(super) fn destination(&self) -> (Option<&Workload>, Option<&Identity>) {
        self.destination.parts()
    }

    /// The service the connection was addressed to, if any.
    pub(super) fn service(&self) -> Option<&Service> {
        self.service.as_ref().map(|s| &*s.0)
    }

    /// The same connection, ended with `flags`.
    pub(super) fn with_flags(&self, flags: ResponseFlags) -> SeriesKey {
        SeriesKey { flags, ..self.clone() }
    }

    fn is_orphaned(&self) -> bool {
        let workloads = [&self.source.workload, &self.destination.workload];
        workloads.into_iter().flatten().any(SameArc::is_orphaned)
            || self.service.as_ref().is_some_and(SameArc::is_orphaned)
    }
}

/// The four counters of connections with the same labels, shared by those connections.
pub struct ConnectionMetricsCache {
    inner: Arc<CacheInner>,
}

impl Clone for ConnectionMetricsCache {
    fn clone(&self) -> Self {
        ConnectionMetricsCache { inner: self.inner.clone() }
    }
}

struct CacheInner {
    metrics: Arc<Metrics>,
    /// Cluster of workloads that do not name theirs.
    cluster_id: Arc<str>,
    unknown: Arc<str>,
    series: RwLock<SeriesTable>,
}

struct SeriesTable {
    by_key: HashMap<SeriesKey, Arc<ConnectionMetrics>>,
    /// Size at which orphaned entries are swept next (twice the size left by the last sweep).
    sweep_at: usize,
}

impl ConnectionMetricsCache {
    /// Resolves counters in `metrics`; `cluster_id` is this proxy's cluster.
    pub fn new(metrics: Arc<Metrics>, cluster_id: &str) -> ConnectionMetricsCache {
        ConnectionMetricsCache {
            inner: Arc::new(CacheInner {
                metrics,
                cluster_id: cluster_id.into(),
                unknown: "unknown".into(),
                series: RwLock::new(SeriesTable { by_key: HashMap::new(), sweep_at: MIN_SWEEP_LEN }),
            }),
        }
    }

    /// Label sets cached now.
    pub fn len(&self) -> usize {
        self.inner.series.read().unwrap_or_else(PoisonError::into_inner).by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a connection that failed or ended abnormally (`istio_tcp_connection_failures_total`).
    pub(super) fn failed(&self, reporter: Reporter, reason: &'static str) {
        self.inner.metrics.failures.failed(reporter, reason);
    }

    /// The counters of connections described by `key`, resolved on first use.
    pub(super) fn counters(&self, key: &SeriesKey) -> Arc<ConnectionMetrics> {
        let inner = &*self.inner;
        if let Some(found) = inner.series.read().unwrap_or_else(PoisonError::into_inner).by_key.get(key) {
            return found.clone();
        }
        let counters = Arc::new(inner.metrics.connection(&inner.labels(key)));
        let mut table = inner.series.write().unwrap_or_else(PoisonError::into_inner);
        if table.by_key.len() >= table.sweep_at {
            table.by_key.retain(|key, _| !key.is_orphaned());
            table.sweep_at = (table.by_key.len() * 2).max(MIN_SWEEP_LEN);
        }
        table.by_key.entry(key.clone()).or_insert(counters).clone()
    }
}

fn workload_name(w: &Workload) -> &Arc<str> {
    if w.workload_name.is_empty() { &w.name } else { &w.workload_name }
}

fn app(w: &Workload) -> &Arc<str> {
    if w.canonical_name.is_empty() { workload_name(w) } else { &w.canonical_name }
}

impl CacheInner {
    /// A label value, or `unknown` when it is missing or empty.
    fn or_unknown(&self, value: Option<&Arc<str>>) -> Arc<str> {
        match value {
            Some(v) if !v.is_empty() => v.clone(),
            _ => self.unknown.clone(),
        }
    }

    fn principal(&self, peer: &PeerKey) -> Arc<str> {
        match (&peer.identity, &peer.workload) {
            (Some(identity), _) => identity.to_string().into(),
            (None, Some(w)) => w.0.identity().to_string().into(),
            (None, None) => self.unknown.clone(),
        }
    }

    fn cluster(&self, w: Option<&Workload>) -> Arc<str> {
        match w {
            Some(w) if !w.cluster_id.is_empty() => w.cluster_id.clone(),
            Some(_) => self.cluster_id.clone(),
            None => self.unknown.clone(),
        }
    }

    /// Istio's labels for connections described by `key`.
    fn labels(&self, key: &SeriesKey) -> ConnectionLabels {
        let src = key.source.workload.as_ref().map(|w| &*w.0);
        let dst = key.destination.workload.as_ref().map(|w| &*w.0);
        let service = key.service.as_ref().map(|s| &*s.0);
        let src_namespace = match (src, &key.source.identity) {
            (Some(w), _) => self.or_unknown(Some(&w.namespace)),
            (None, Some(identity)) => self.or_unknown(Some(&identity.namespace().into())),
            (None, None) => self.unknown.clone(),
        };
        ConnectionLabels {
            reporter: key.reporter,
            source_workload: self.or_unknown(src.map(workload_name)),
            source_canonical_service: self.or_unknown(src.map(app)),
            source_canonical_revision: self.or_unknown(src.map(|w| &w.canonical_revision)),
            source_workload_namespace: src_namespace,
            source_principal: self.principal(&key.source),
            source_app: self.or_unknown(src.map(app)),
            source_version: self.or_unknown(src.map(|w| &w.canonical_revision)),
            source_cluster: self.cluster(src),
            destination_service: self.or_unknown(service.map(|s| &s.hostname)),
            destination_service_namespace: self.or_unknown(service.map(|s| &s.namespace)),
            destination_service_name: self.or_unknown(service.map(|s| &s.name)),
            destination_workload: self.or_unknown(dst.map(workload_name)),
            destination_canonical_service: self.or_unknown(dst.map(app)),
            destination_canonical_revision: self.or_unknown(dst.map(|w| &w.canonical_revision)),
            destination_workload_namespace: self.or_unknown(dst.map(|w| &w.namespace)),
            destination_principal: self.principal(&key.destination),
            destination_app: self.or_unknown(dst.map(app)),
            destination_version: self.or_unknown(dst.map(|w| &w.canonical_revision)),
            destination_cluster: self.cluster(dst),
            request_protocol: Default::default(),
            response_flags: key.flags,
            connection_security_policy: if key.mtls { SecurityPolicy::MutualTls } else { SecurityPolicy::Unknown },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse_local_config;

    fn workloads() -> (Arc<Workload>, Arc<Workload>) {
        let yaml = "workloads:
- {uid: c1//Pod/shop/a, name: a-1, namespace: shop, serviceAccount: a, workloadName: a, workloadIps: [\"10.0.0.1\"]}
- {uid: c1//Pod/shop/b, name: b-1, namespace: shop, serviceAccount: b, workloadIps: [\"10.0.0.2\"]}
";
        let cfg = parse_local_config(yaml.as_bytes(), "test.yaml", "cluster.local").expect("test config parses");
        (Arc::new(cfg.workloads()[0].clone()), Arc::new(cfg.workloads()[1].clone()))
    }

    fn peer(w: &Arc<Workload>) -> Peer {
        Peer { identity: Some(w.identity()), workload: Some(w.clone()) }
    }

    #[test]
    fn same_pair_shares_counters_and_changed_workload_gets_its_own() {
        let cache = ConnectionMetricsCache::new(Arc::new(Metrics::new()), "c1");
        let (a, b) = workloads();
        let key = |a: &Arc<Workload>| SeriesKey::new(Reporter::Source, peer(a), peer(&b), None, true);
        let first = cache.counters(&key(&a));
        assert!(Arc::ptr_eq(&first, &cache.counters(&key(&a))), "a repeated pair must reuse its counters");
        assert_eq!(cache.len(), 1);

        let updated = Arc::new((*a).clone());
        assert!(!Arc::ptr_eq(&first, &cache.counters(&key(&updated))), "a new workload version gets its own entry");
        let failed = cache.counters(&key(&a).with_flags(ResponseFlags::Denied));
        assert!(!Arc::ptr_eq(&first, &failed), "a failure flag is another series");
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn labels_follow_istio_rules() {
        let cache = ConnectionMetricsCache::new(Arc::new(Metrics::new()), "c1");
        let (a, b) = workloads();
        let key = SeriesKey::new(Reporter::Destination, peer(&a), Peer { identity: None, ..peer(&b) }, None, false);
        let labels = cache.inner.labels(&key);
        assert_eq!(&*labels.source_workload, "a", "workload name preferred");
        assert_eq!(&*labels.destination_workload, "b-1", "pod name when no workload name");
        assert_eq!(&*labels.source_principal, "spiffe://cluster.local/ns/shop/sa/a");
        assert_eq!(&*labels.destination_principal, "spiffe://cluster.local/ns/shop/sa/b", "from the workload");
        assert_eq!(&*labels.source_cluster, "c1", "the proxy's cluster when the workload names none");
        assert_eq!(&*labels.destination_service, "unknown");
        assert_eq!(labels.connection_security_policy, SecurityPolicy::Unknown);
    }
}
