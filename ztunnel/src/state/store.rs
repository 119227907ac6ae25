//! [`ProxyState`]: one immutable snapshot of workloads, services and policies, with the indexes
//! the data path needs (workload by IP, service by VIP, by uid, by namespace/hostname, by node)
//! and precomputed endpoint tables so that picking an endpoint allocates nothing.
//!
//! A snapshot is never mutated; changes build a new one and swap it in through `SharedState`.
//! This module does no IO.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::capture::PodCapture;
use super::local::LocalConfig;
use super::service::Service;
use super::workload::{NetworkMode, Workload};
use crate::policy::{Authorization, Connection, Decision, PolicyStore, Target};

/// Workloads (or services) sharing an IP in different networks; almost always one entry.
type ByNetwork<T> = Vec<(Arc<str>, Arc<T>)>;

/// One endpoint that may receive traffic on a given service port.
#[derive(Debug)]
struct Candidate {
    workload: Arc<Workload>,
    target_port: u16,
    /// Sum of the weights of this and all earlier candidates.
    cumulative: u64,
}

/// A service plus, per service port, the endpoints eligible for that port.
#[derive(Debug)]
struct ServiceEntry {
    service: Arc<Service>,
    by_port: BTreeMap<u16, Vec<Candidate>>,
}

#[derive(Debug, Default)]
pub struct ProxyState {
    pub(super) generation: u64,
    /// The network this proxy is in; plain IP lookups resolve within it.
    network: Arc<str>,
    workloads: Vec<Arc<Workload>>,
    services: Vec<Arc<Service>>,
    policies: PolicyStore,
    captures: Vec<Arc<PodCapture>>,
    by_uid: HashMap<Arc<str>, Arc<Workload>>,
    by_ip: HashMap<IpAddr, ByNetwork<Workload>>,
    by_node: HashMap<Arc<str>, Vec<Arc<Workload>>>,
    by_vip: HashMap<IpAddr, ByNetwork<Service>>,
    /// hostname -> services with that hostname (one per namespace).
    by_host: HashMap<Arc<str>, Vec<ServiceEntry>>,
    /// workload uid -> services it is an endpoint of.
    by_endpoint: HashMap<Arc<str>, Vec<Arc<Service>>>,
    /// Bytes of the config file this snapshot was built from, if any.
    pub(super) source: Option<Arc<[u8]>>,
}

impl ProxyState {
    /// Pods on `node` that the local config enrolls in capture.
    pub fn captures_on_node(&self, node: &str) -> Vec<Arc<PodCapture>> {
        self.captures.iter().filter(|c| &*c.node == node).cloned().collect()
    }

    /// Services the workload `uid` is an endpoint of (no allocation: per-connection lookups).
    pub fn services_of(&self, uid: &str) -> &[Arc<Service>] {
        self.by_endpoint.get(uid).map(Vec::as_slice).unwrap_or_default()
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

    /// Indexes workloads, services and policies from any source. Entries are taken in the
    /// order given; where two workloads share a uid, or an address in one network, or two
    /// services share a VIP, the first one is found by lookups. Endpoints naming a workload
    /// that is not given are skipped.
    pub(crate) fn from_parts(
        workloads: impl IntoIterator<Item = Arc<Workload>>,
        services: impl IntoIterator<Item = Arc<Service>>,
        policies: Vec<Authorization>,
        network: &str,
    ) -> ProxyState {
        let mut st = ProxyState::empty(network);
        st.policies = PolicyStore::new(policies);
        for w in workloads {
            st.by_uid.entry(w.uid.clone()).or_insert_with(|| w.clone());
            st.by_node.entry(w.node.clone()).or_default().push(w.clone());
            if w.network_mode != NetworkMode::HostNetwork {
                for ip in &w.workload_ips {
                    st.by_ip.entry(*ip).or_default().push((w.network.clone(), w.clone()));
                }
            }
            st.workloads.push(w);
        }
        for s in services {
            for vip in &s.vips {
                st.by_vip.entry(vip.address).or_default().push((vip.network.clone(), s.clone()));
            }
            let by_port = s.ports.iter().map(|(&port, &target)| (port, st.candidates(&s, port, target))).collect();
            st.by_host.entry(s.hostname.clone()).or_default().push(ServiceEntry { service: s.clone(), by_port });
            for uid in s.endpoints.keys() {
                st.by_endpoint.entry(uid.clone()).or_default().push(s.clone());
            }
            st.services.push(s);
        }
        st
    }

    /// Endpoints of `svc` that may take traffic for service port `port`, with Istio's rules:
    /// the endpoint must be healthy (or the service's health policy is `AllowAll`), its
    /// workload must be reachable, and the target port is the endpoint's own mapping for
    /// `port`, else the service's target port unless that is 0.
    fn candidates(&self, svc: &Service, port: u16, service_target: u16) -> Vec<Candidate> {
        let mut cumulative = 0u64;
        let mut out = Vec::new();
        for ep in svc.endpoints.values() {
            if !svc.accepts(ep.status) {
                continue;
            }
            let Some(workload) = self.by_uid.get(&ep.workload_uid) else {
                continue;
            };
            if !self.reachable(workload) {
                continue;
            }
            let target_port = match ep.port.get(&port) {
                Some(&p) => p,
                None if service_target != 0 => service_target,
                None => continue,
            };
            cumulative += u64::from(workload.capacity);
            out.push(Candidate { workload: workload.clone(), target_port, cumulative });
        }
        out
    }

    /// A workload can be sent to if it has an address, or a hostname to resolve, or (in
    /// another network) a gateway to go through.
    fn reachable(&self, w: &Workload) -> bool {
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
        find_in_network(self.by_ip.get(&ip)?, network)
    }

    pub fn workload_by_uid(&self, uid: &str) -> Option<Arc<Workload>> {
        self.by_uid.get(uid).cloned()
    }

    /// The service with VIP `ip` in this proxy's network.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.service_by_address(&self.network, ip)
    }

    /// The service with VIP `ip` in `network`.
    pub fn service_by_address(&self, network: &str, ip: IpAddr) -> Option<Arc<Service>> {
        find_in_network(self.by_vip.get(&ip)?, network)
    }

    pub fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>> {
        self.service_entry(namespace, hostname).map(|e| e.service.clone())
    }

    fn service_entry(&self, namespace: &str, hostname: &str) -> Option<&ServiceEntry> {
        self.by_host.get(hostname)?.iter().find(|e| &*e.service.namespace == namespace)
    }

    /// The eligible endpoints for `port` of the service with `svc`'s namespace and hostname in
    /// this snapshot (so an `Arc<Service>` from an older snapshot still finds current endpoints).
    fn port_candidates(&self, svc: &Service, port: u16) -> &[Candidate] {
        self.service_entry(&svc.namespace, &svc.hostname).and_then(|e| e.by_port.get(&port)).map_or(&[], Vec::as_slice)
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

    pub fn workloads_on_node(&self, node: &str) -> Vec<Arc<Workload>> {
        self.by_node.get(node).cloned().unwrap_or_default()
    }

    /// All workloads, in config order.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.iter()
    }

    /// All services, in config order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.iter()
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

fn find_in_network<T>(entries: &ByNetwork<T>, network: &str) -> Option<Arc<T>> {
    entries.iter().find(|(n, _)| &**n == network).map(|(_, v)| v.clone())
}
