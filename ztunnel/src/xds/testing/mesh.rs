//! A synthetic mesh the size of a big cluster, described as istiod describes it: pods as
//! `istio.workload.Address` workloads (uid `Kubernetes//Pod/<namespace>/<pod>`, one IPv4
//! address, node, service account, trust domain, HBONE, canonical labels, cluster id) and one
//! service per 15 pods (hostname, one VIP, port 80 -> 8080), each pod naming its service in
//! its `services` map. Used by the state-scale example and the state benchmark.
//!
//! Deterministic: workload `i` and service `j` are the same on every call, so benchmarks can
//! look them up by IP or VIP.

use std::net::{IpAddr, Ipv4Addr};

use prost::Message;

use super::FakeResource;
use crate::xds::ADDRESS_TYPE;
use crate::xds::proto::workload as pb;

/// Pods per service when the caller does not say how many services there are.
pub const PODS_PER_SERVICE: usize = 15;
/// Services per namespace.
const SERVICES_PER_NAMESPACE: usize = 10;
/// Pods per node.
const PODS_PER_NODE: usize = 100;

/// `workloads` pods spread over `services` services (at least one).
#[derive(Clone, Copy, Debug)]
pub struct SyntheticMesh {
    pub workloads: usize,
    pub services: usize,
}

impl SyntheticMesh {
    /// `workloads` pods and one service per [`PODS_PER_SERVICE`] of them.
    pub fn new(workloads: usize) -> SyntheticMesh {
        SyntheticMesh { workloads, services: (workloads / PODS_PER_SERVICE).max(1) }
    }

    /// Every service, then every workload, as istiod's first response carries them.
    pub fn resources(&self) -> Vec<FakeResource> {
        let services = (0..self.services).map(|j| self.service(j));
        services.chain((0..self.workloads).map(|i| self.workload(i, 0))).collect()
    }

    /// The service workload `i` is an endpoint of.
    pub fn service_of(&self, i: usize) -> usize {
        i % self.services.max(1)
    }

    /// IP of workload `i` (10.0.0.0/8, skipping .0 and .255 host bytes), moved to another
    /// address for each `revision`.
    pub fn workload_ip(&self, i: usize, revision: usize) -> IpAddr {
        let n = (i + revision * self.workloads) as u32;
        let host = n % 254 + 1;
        let rest = n / 254;
        IpAddr::V4(Ipv4Addr::new(10, (rest >> 8) as u8 & 0x7f, rest as u8, host as u8))
    }

    /// VIP of service `j` (10.128.0.0/9).
    pub fn service_vip(&self, j: usize) -> IpAddr {
        let j = j as u32 + 1;
        IpAddr::V4(Ipv4Addr::new(10, 128 | ((j >> 16) as u8 & 0x7f), (j >> 8) as u8, j as u8))
    }

    /// `(namespace, name, hostname)` of service `j`.
    pub fn service_name(&self, j: usize) -> (String, String, String) {
        let namespace = format!("ns-{}", j / SERVICES_PER_NAMESPACE);
        let name = format!("app-{j}");
        let hostname = format!("{name}.{namespace}.svc.cluster.local");
        (namespace, name, hostname)
    }

    pub fn service(&self, j: usize) -> FakeResource {
        let (namespace, name, hostname) = self.service_name(j);
        let s = pb::Service {
            name,
            namespace: namespace.clone(),
            hostname: hostname.clone(),
            addresses: vec![pb::NetworkAddress { network: String::new(), address: ip_bytes(self.service_vip(j)) }],
            ports: vec![pb::Port { service_port: 80, target_port: 8080 }],
            ..Default::default()
        };
        address(format!("{namespace}/{hostname}"), pb::address::Type::Service(s))
    }

    /// Workload `i` as a pod of its service's deployment; `revision` changes its IP (a pod
    /// restarted in place keeps its name in this model, as a StatefulSet pod does).
    pub fn workload(&self, i: usize, revision: usize) -> FakeResource {
        let j = self.service_of(i);
        let (namespace, app, hostname) = self.service_name(j);
        // Deployment pods: `<app>-<replica set hash>-<5 chars>`; the low bits of the suffix
        // are the pod's index within its service, so names never collide.
        let suffix = (pod_hash(i as u64) & 0xff000) | ((i / self.services.max(1)) as u64 & 0xfff);
        let pod = format!("{app}-{:08x}-{suffix:05x}", pod_hash(j as u64) as u32);
        let uid = format!("Kubernetes//Pod/{namespace}/{pod}");
        let mut services = std::collections::HashMap::new();
        let ports = vec![pb::Port { service_port: 80, target_port: 8080 }];
        services.insert(format!("{namespace}/{hostname}"), pb::PortList { ports });
        let w = pb::Workload {
            uid: uid.clone(),
            name: pod,
            namespace,
            addresses: vec![ip_bytes(self.workload_ip(i, revision))],
            tunnel_protocol: pb::TunnelProtocol::Hbone as i32,
            trust_domain: "cluster.local".into(),
            service_account: app.clone(),
            node: format!("node-{}", i / PODS_PER_NODE),
            canonical_name: app.clone(),
            canonical_revision: "v1".into(),
            workload_type: pb::WorkloadType::Pod as i32,
            workload_name: app,
            services,
            cluster_id: "Kubernetes".into(),
            ..Default::default()
        };
        address(uid, pb::address::Type::Workload(w))
    }
}

/// A stable pseudo-random number, for the generated parts of pod names.
fn pod_hash(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn address(name: String, t: pb::address::Type) -> FakeResource {
    FakeResource { type_url: ADDRESS_TYPE, name, bytes: pb::Address { r#type: Some(t) }.encode_to_vec() }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_and_addresses_are_unique() {
        let mesh = SyntheticMesh::new(70_000);
        let ips: HashSet<_> = (0..mesh.workloads).map(|i| mesh.workload_ip(i, 0)).collect();
        assert_eq!(ips.len(), mesh.workloads, "workload IPs must be unique");
        assert!(!ips.contains(&mesh.workload_ip(0, 1)), "a new revision must move the workload");
        let vips: HashSet<_> = (0..mesh.services).map(|j| mesh.service_vip(j)).collect();
        assert_eq!(vips.len(), mesh.services, "VIPs must be unique");
        assert!(vips.is_disjoint(&ips), "VIPs and workload IPs must not overlap");
        let names: HashSet<_> = mesh.resources().into_iter().map(|r| r.name).collect();
        assert_eq!(names.len(), mesh.workloads + mesh.services, "resource names must be unique");
    }
}
