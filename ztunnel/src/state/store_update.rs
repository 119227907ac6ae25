//! Changes to a working [`ProxyState`]: adding, replacing and removing workloads and services
//! one at a time, keeping every index and the endpoint tables of the services touched in
//! step, so that publishing after a change to one resource costs about as much as that
//! resource, not the whole mesh.
//!
//! Endpoints come from two places: in xDS, each workload names the services it serves (with
//! its ports), and those endpoints are kept per service key even before the service itself
//! arrives; in the local config, validation has already put them on the services.

use std::sync::Arc;

use super::address::NamespacedHostname;
use super::arc_list::ArcList;
use super::endpoints::Endpoints;
use super::service::{Endpoint, Service};
use super::store::{Candidate, ProxyState, ServiceEntry};
use super::workload::{NetworkMode, Workload};
use crate::policy::{Authorization, PolicyStore};

impl ProxyState {
    /// Indexes workloads, services and policies from any source; services keep the endpoints
    /// they carry. Validated configs have unique uids, addresses and VIPs; where those clash
    /// anyway, the later workload of a uid wins and lookups by address find the smallest uid.
    pub(crate) fn from_parts(
        workloads: impl IntoIterator<Item = Arc<Workload>>,
        services: impl IntoIterator<Item = Arc<Service>>,
        policies: Vec<Authorization>,
        network: &str,
    ) -> ProxyState {
        let mut st = ProxyState::empty(network);
        st.set_policies(policies);
        for w in workloads {
            st.upsert_workload(w, Vec::new());
        }
        for s in services {
            st.endpoints.insert(s.key(), s.endpoints.clone());
            st.upsert_service(Arc::unwrap_or_clone(s));
        }
        st.settle();
        st
    }

    pub(crate) fn set_policies(&mut self, policies: Vec<Authorization>) {
        self.policies = Arc::new(PolicyStore::new(policies));
    }

    /// Adds or replaces the workload with `w`'s uid. `endpoints` are its endpoints in the
    /// services it names (xDS); they replace the ones it had.
    pub(crate) fn upsert_workload(&mut self, w: Arc<Workload>, endpoints: Vec<Endpoint>) {
        let old = self.workloads.insert(w.uid.clone(), w.clone());
        if let Some(old) = &old {
            self.unindex_workload(old);
        }
        self.index_workload(&w);
        let mut touched: Vec<(NamespacedHostname, bool)> = Vec::new();
        if let Some(old) = &old {
            for key in old.services.iter().filter(|k| !endpoints.iter().any(|e| &e.service_key == *k)) {
                let removed = self.remove_endpoint(key, &w.uid);
                touched.push((key.clone(), removed));
            }
        }
        for ep in endpoints {
            let key = ep.service_key.clone();
            let changed = self.put_endpoint(ep);
            touched.push((key, changed));
        }
        // Services that got their endpoints from elsewhere (the local config) still point at
        // the old workload in their tables.
        for key in &w.services {
            if !touched.iter().any(|(k, _)| k == key) {
                touched.push((key.clone(), false));
            }
        }
        for (key, endpoints_changed) in touched {
            self.mark_for_refresh(key, endpoints_changed);
        }
    }

    /// Removes the workload `uid` and its endpoints.
    pub(crate) fn remove_workload(&mut self, uid: &str) {
        let Some(old) = self.workloads.remove(uid) else {
            return;
        };
        self.unindex_workload(&old);
        for key in &old.services {
            let removed = self.remove_endpoint(key, uid);
            self.mark_for_refresh(key.clone(), removed);
        }
    }

    /// Notes that service `key` needs new endpoint tables (and, with `endpoints_changed`, a
    /// new endpoint list) before the next snapshot; see [`Self::settle`].
    fn mark_for_refresh(&mut self, key: NamespacedHostname, endpoints_changed: bool) {
        *self.stale_services.entry(key).or_default() |= endpoints_changed;
    }

    /// Brings every service touched by workload changes up to date. Done once per batch of
    /// changes, so a service whose many workloads change together is rebuilt once.
    pub(crate) fn settle(&mut self) {
        for (key, endpoints_changed) in std::mem::take(&mut self.stale_services) {
            self.refresh_service(&key, endpoints_changed);
        }
    }

    fn index_workload(&mut self, w: &Arc<Workload>) {
        // Callers take out the previous version first, so this is always an addition.
        let on_node = self.by_node.get_or_insert_with(w.node.clone(), Default::default);
        Arc::make_mut(on_node).push(w.clone());
        if w.network_mode == NetworkMode::HostNetwork {
            return;
        }
        for ip in &w.workload_ips {
            let list = ArcList::with(self.by_ip.get(ip), w.clone(), |x| x.uid.clone(), |a, b| a.uid == b.uid);
            self.by_ip.insert(*ip, list);
        }
    }

    fn unindex_workload(&mut self, w: &Workload) {
        if let Some(on_node) = self.by_node.get_mut(&*w.node) {
            let on_node = Arc::make_mut(on_node);
            // The very `Arc` indexed with it (cheaper than comparing uids).
            on_node.retain(|x| !std::ptr::eq(&**x, w));
            if on_node.is_empty() {
                self.by_node.remove(&*w.node);
            }
        }
        for ip in &w.workload_ips {
            let Some(list) = self.by_ip.get(ip) else {
                continue;
            };
            match ArcList::without(list, |x| x.uid == w.uid) {
                Some(rest) => self.by_ip.insert(*ip, rest),
                None => self.by_ip.remove(ip),
            };
        }
    }

    /// Records `ep`; false if it was there already, unchanged.
    /// (The endpoints map has one entry per service, so copying its shard is cheap; the
    /// endpoint list itself is copied only if `ep` changes it.)
    fn put_endpoint(&mut self, ep: Endpoint) -> bool {
        let key = ep.service_key.clone();
        self.endpoints.get_or_insert_with(key, Endpoints::default).upsert(ep)
    }

    /// Forgets the endpoint of `uid` in `key`; false if there was none.
    fn remove_endpoint(&mut self, key: &NamespacedHostname, uid: &str) -> bool {
        if !self.endpoints.get(key).is_some_and(|eps| eps.contains_key(uid)) {
            return false;
        }
        let Some(eps) = self.endpoints.get_mut(key) else {
            return false;
        };
        eps.remove(uid);
        if eps.is_empty() {
            self.endpoints.remove(key);
        }
        true
    }

    /// Adds or replaces the service with `s`'s namespace and hostname. Its endpoints are the
    /// ones recorded for that key, whatever `s` carries.
    pub(crate) fn upsert_service(&mut self, mut s: Service) {
        let key = s.key();
        s.endpoints = self.endpoints.get(&key).cloned().unwrap_or_default();
        self.remove_service(&key);
        let s = Arc::new(s);
        for vip in &s.vips {
            let list = ArcList::with(self.by_vip.get(&vip.address), s.clone(), Service::key, |a, b| a.key() == b.key());
            self.by_vip.insert(vip.address, list);
        }
        self.put_entry(ServiceEntry { by_port: self.endpoint_tables(&s), service: s });
    }

    /// Removes the service `key` (its endpoints stay recorded for when it comes back).
    pub(crate) fn remove_service(&mut self, key: &NamespacedHostname) {
        let Some(old) = self.service_entry(&key.namespace, &key.hostname).cloned() else {
            return;
        };
        let same = |s: &Service| s.namespace == key.namespace && s.hostname == key.hostname;
        for vip in &old.service.vips {
            let Some(list) = self.by_vip.get(&vip.address) else {
                continue;
            };
            match ArcList::without(list, same) {
                Some(rest) => self.by_vip.insert(vip.address, rest),
                None => self.by_vip.remove(&vip.address),
            };
        }
        let Some(list) = self.by_host.get(&key.hostname) else {
            return;
        };
        match ArcList::without(list, |e| same(&e.service)) {
            Some(rest) => self.by_host.insert(key.hostname.clone(), rest),
            None => self.by_host.remove(&key.hostname),
        };
    }

    /// Rebuilds the endpoint tables of service `key` (if known) after a change to one of its
    /// workloads; with `endpoints_changed`, its endpoint list too.
    fn refresh_service(&mut self, key: &NamespacedHostname, endpoints_changed: bool) {
        let Some(entry) = self.service_entry(&key.namespace, &key.hostname) else {
            return;
        };
        if endpoints_changed {
            let mut s = (*entry.service).clone();
            s.endpoints = self.endpoints.get(key).cloned().unwrap_or_default();
            self.upsert_service(s);
            return;
        }
        let service = entry.service.clone();
        self.put_entry(ServiceEntry { by_port: self.endpoint_tables(&service), service });
    }

    fn put_entry(&mut self, entry: ServiceEntry) {
        let host = entry.service.hostname.clone();
        let same = |a: &ServiceEntry, b: &ServiceEntry| a.service.namespace == b.service.namespace;
        let list = ArcList::with(self.by_host.get(&host), Arc::new(entry), |e| e.service.namespace.clone(), same);
        self.by_host.insert(host, list);
    }

    /// Per service port, the endpoints of `svc` that may take traffic on it.
    fn endpoint_tables(&self, svc: &Service) -> Box<[(u16, Box<[Candidate]>)]> {
        svc.ports.iter().map(|(&port, &target)| (port, self.candidates(svc, port, target))).collect()
    }

    /// Endpoints of `svc` that may take traffic for service port `port`, with Istio's rules:
    /// the endpoint must be healthy (or the service's health policy is `AllowAll`), its
    /// workload must be reachable, and the target port is the endpoint's own mapping for
    /// `port`, else the service's target port unless that is 0.
    fn candidates(&self, svc: &Service, port: u16, service_target: u16) -> Box<[Candidate]> {
        let mut cumulative = 0u64;
        let mut out = Vec::new();
        for ep in svc.endpoints.values() {
            if !svc.accepts(ep.status) {
                continue;
            }
            let Some(workload) = self.workloads.get(&*ep.workload_uid) else {
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
        out.into_boxed_slice()
    }
}
