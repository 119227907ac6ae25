//! [`ProxyState`]: one immutable snapshot of workloads, services and policies, with the indexes
//! the data path needs (workload by IP, service by VIP, by uid, by namespace/hostname, by node)
//! and precomputed endpoint tables so that picking an endpoint allocates nothing.
//!
//! A published snapshot is never mutated. Its owner (the xDS store, or a local config load)
//! keeps a working copy, changes it in place (`store_update`) and publishes a clone through
//! `SharedState`. Every index is a [`SnapshotMap`], so that clone is cheap and a change copies
//! only the parts of the indexes it touches. This module does no IO.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::address::NamespacedHostname;
use super::arc_list::ArcList;
use super::capture::PodCapture;
use super::endpoints::Endpoints;
use super::ip_index::IpIndex;
use super::local::LocalConfig;
use super::service::Service;
use super::snapshot_map::SnapshotMap;
use super::workload::Workload;
use crate::policy::{Connection, Decision, PolicyStore, Target};
use crate::types::WorkloadUid;

/// One endpoint that may receive traffic on a given service port.
#[derive(Debug)]
pub(super) struct Candidate {
    pub(super) workload: Arc<Workload>,
    pub(super) target_port: u16,
    /// Sum of the weights of this and all earlier candidates.
    pub(super) cumulative: u64,
}

/// A service plus, per service port (sorted), the endpoints eligible for that port.
#[derive(Debug)]
pub(super) struct ServiceEntry {
    pub(super) service: Arc<Service>,
    pub(super) by_port: Box<[(u16, Box<[Candidate]>)]>,
}

#[derive(Debug, Default, Clone)]
pub struct ProxyState {
    pub(super) generation: u64,
    /// The network this proxy is in; plain IP lookups resolve within it.
    pub(super) network: Arc<str>,
    pub(super) policies: Arc<PolicyStore>,
    pub(super) captures: Arc<[Arc<PodCapture>]>,
    /// uid -> workload.
    pub(super) workloads: SnapshotMap<WorkloadUid, Arc<Workload>>,
    /// IP -> workloads with it, one per network, sorted by uid.
    pub(super) by_ip: IpIndex<Workload>,
    /// node -> its workloads, in no particular order.
    pub(super) by_node: SnapshotMap<Arc<str>, Arc<Vec<Arc<Workload>>>>,
    /// VIP -> services with it, one per network, sorted by namespace/hostname.
    pub(super) by_vip: IpIndex<Service>,
    /// hostname -> services with it (one per namespace, sorted), with their endpoint tables.
    pub(super) by_host: SnapshotMap<Arc<str>, ArcList<ServiceEntry>>,
    /// service -> its endpoints, also for services not known (yet): workloads may name a
    /// service before istiod sends it. Shared with the [`Service`]s of the snapshot.
    pub(super) endpoints: SnapshotMap<NamespacedHostname, Endpoints>,
    /// Services whose endpoint tables are out of date in a working copy (true: their endpoint
    /// list too); always empty in a published snapshot.
    pub(super) stale_services: HashMap<NamespacedHostname, bool>,
    /// Bytes of the config file this snapshot was built from, if any.
    pub(super) source: Option<Arc<[u8]>>,
}

impl ProxyState {
    /// Pods on `node` that the local config enrolls in capture.
    pub fn captures_on_node(&self, node: &str) -> Vec<Arc<PodCapture>> {
        self.captures.iter().filter(|c| &*c.node == node).cloned().collect()
    }

    /// Services the workload `uid` is an endpoint of (no allocation: per-connection lookups).
    /// A workload lists exactly those in its `services` (xDS builds endpoints from that list;
    /// local config validation adds the services that declare the workload), so this is a
    /// lookup per listed service that exists.
    pub fn services_of(&self, uid: &WorkloadUid) -> impl Iterator<Item = &Arc<Service>> + Clone {
        let named = self.workloads.get(uid).map(|w| w.services.as_slice()).unwrap_or_default();
        named.iter().filter_map(|key| self.service_entry(&key.namespace, &key.hostname)).map(|e| &e.service)
    }

    /// An empty snapshot for a proxy in `network`.
    pub fn empty(network: &str) -> ProxyState {
        ProxyState { network: network.into(), ..ProxyState::default() }
    }

    /// Indexes a validated config. Validation guarantees unique uids, unique
    /// (network, IP) pairs, unique VIPs and resolvable endpoint references.
    pub(super) fn build(cfg: LocalConfig, network: &str) -> ProxyState {
        let workloads = cfg.workloads.into_iter().map(Arc::new);
        let services = cfg.services.into_iter().map(Arc::new);
        let mut st = ProxyState::from_parts(workloads, services, cfg.policies, network);
        st.source = Some(cfg.source);
        st.captures = cfg.captures.into_iter().map(Arc::new).collect();
        st
    }

    /// A workload can be sent to if it has an address, or a hostname to resolve, or (in
    /// another network) a gateway to go through.
    pub(super) fn reachable(&self, w: &Workload) -> bool {
        !w.workload_ips.is_empty()
            || !w.hostname.is_empty()
            || (w.network != self.network && w.network_gateway.is_some())
    }

    /// Generation of this snapshot; grows by one with every replacement.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn local_network(&self) -> &str {
        &self.network
    }

    /// The workload with `ip` in this proxy's network.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        self.workload_by_address(&self.network, ip)
    }

    /// The workload with `ip` in `network`.
    pub fn workload_by_address(&self, network: &str, ip: IpAddr) -> Option<Arc<Workload>> {
        self.by_ip.get(&ip)?.as_slice().iter().find(|w| &*w.network == network).cloned()
    }

    pub fn workload_by_uid(&self, uid: &WorkloadUid) -> Option<Arc<Workload>> {
        self.workloads.get(uid).cloned()
    }

    /// The service with VIP `ip` in this proxy's network.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.service_by_address(&self.network, ip)
    }

    /// The service with VIP `ip` in `network`.
    pub fn service_by_address(&self, network: &str, ip: IpAddr) -> Option<Arc<Service>> {
        let in_network = |s: &&Arc<Service>| s.vips.iter().any(|v| v.address == ip && &*v.network == network);
        self.by_vip.get(&ip)?.as_slice().iter().find(in_network).cloned()
    }

    pub fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>> {
        self.service_entry(namespace, hostname).map(|e| e.service.clone())
    }

    pub(super) fn service_entry(&self, namespace: &str, hostname: &str) -> Option<&Arc<ServiceEntry>> {
        self.by_host.get(hostname)?.as_slice().iter().find(|e| &*e.service.namespace == namespace)
    }

    /// The eligible endpoints for `port` of the service with `svc`'s namespace and hostname in
    /// this snapshot (so an `Arc<Service>` from an older snapshot still finds current endpoints).
    fn port_candidates(&self, svc: &Service, port: u16) -> &[Candidate] {
        let Some(entry) = self.service_entry(&svc.namespace, &svc.hostname) else {
            return &[];
        };
        match entry.by_port.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(i) => &entry.by_port[i].1,
            Err(_) => &[],
        }
    }

    /// Endpoints of a service that may take traffic on service port `port`, with their
    /// workload and target port. Unhealthy endpoints are left out unless the service's load
    /// balancer health policy is `AllowAll`; a port the service does not declare has none.
    pub fn endpoints_for(&self, svc: &Service, port: u16) -> Vec<(Arc<Workload>, u16)> {
        self.port_candidates(svc, port).iter().map(|c| (c.workload.clone(), c.target_port)).collect()
    }

    /// Picks one of [`Self::endpoints_for`] at random, weighted by each workload's `capacity`
    /// (Istio's weight field, default 1; weight 0 is never picked). No allocation.
    pub fn pick_endpoint<R: rand::Rng + ?Sized>(
        &self,
        svc: &Service,
        port: u16,
        rng: &mut R,
    ) -> Option<(Arc<Workload>, u16)> {
        let candidates = self.port_candidates(svc, port);
        let total = candidates.last()?.cumulative;
        if total == 0 {
            return None;
        }
        let r = rng.random_range(0..total);
        let chosen = candidates.get(candidates.partition_point(|c| c.cumulative <= r))?;
        Some((chosen.workload.clone(), chosen.target_port))
    }

    /// The workloads on `node`, in no particular order.
    pub fn workloads_on_node(&self, node: &str) -> Vec<Arc<Workload>> {
        self.by_node.get(node).map(|ws| ws.to_vec()).unwrap_or_default()
    }

    /// All workloads, in no particular order.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.values()
    }

    /// All services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.by_host.values().flat_map(|l| l.as_slice().iter().map(|e| &e.service))
    }

    /// Every authorization policy, indexed for decisions.
    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    /// Authorizes `conn` to workload `w` with this snapshot's policies: `w`'s namespace's, the
    /// global ones and the ones `w` lists.
    pub fn authorize(&self, w: &Workload, conn: &Connection<'_>) -> Decision {
        self.policies.evaluate(&Target { namespace: &w.namespace, policies: &w.authorization_policies }, conn)
    }
}
