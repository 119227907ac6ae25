//! Resources the fake istiod serves, described with plain Rust values so tests never touch
//! generated protobuf types; each turns into the encoded message istiod would send.

use std::net::IpAddr;

use prost::Message;

use crate::xds::proto::{security, workload as pb};
use crate::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};

/// One resource as the fake sends it: type, name and encoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeResource {
    pub type_url: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

impl FakeResource {
    /// An Address resource whose workload has a 5-byte address: it decodes, but must be
    /// rejected by conversion (field `workload.addresses[0]`).
    pub fn malformed_workload(uid: &str) -> FakeResource {
        let w = pb::Workload {
            uid: uid.into(),
            name: "broken".into(),
            namespace: "default".into(),
            addresses: vec![vec![10, 0, 0, 1, 9]],
            ..Default::default()
        };
        address(uid, pb::address::Type::Workload(w))
    }
}

fn bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn address(name: &str, t: pb::address::Type) -> FakeResource {
    FakeResource { type_url: ADDRESS_TYPE, name: name.into(), bytes: pb::Address { r#type: Some(t) }.encode_to_vec() }
}

/// A workload as istiod describes a pod.
#[derive(Clone, Debug)]
pub struct FakeWorkload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ips: Vec<IpAddr>,
    pub node: String,
    pub hbone: bool,
    /// `("namespace/hostname", service port, target port)`.
    pub services: Vec<(String, u16, u16)>,
}

impl FakeWorkload {
    pub fn resource(&self) -> FakeResource {
        let mut services = std::collections::HashMap::<String, pb::PortList>::new();
        for (key, port, target) in &self.services {
            services
                .entry(key.clone())
                .or_default()
                .ports
                .push(pb::Port { service_port: u32::from(*port), target_port: u32::from(*target) });
        }
        let w = pb::Workload {
            uid: self.uid.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            addresses: self.ips.iter().map(bytes).collect(),
            node: self.node.clone(),
            tunnel_protocol: if self.hbone { pb::TunnelProtocol::Hbone } else { pb::TunnelProtocol::None } as i32,
            canonical_name: self.name.clone(),
            canonical_revision: "v1".into(),
            workload_name: self.name.clone(),
            workload_type: pb::WorkloadType::Pod as i32,
            cluster_id: "Kubernetes".into(),
            services,
            ..Default::default()
        };
        address(&self.uid, pb::address::Type::Workload(w))
    }
}

/// A service with VIPs in the default network.
#[derive(Clone, Debug)]
pub struct FakeService {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    /// `(service port, target port)`.
    pub ports: Vec<(u16, u16)>,
}

impl FakeService {
    /// Named `namespace/hostname`, as istiod names services.
    pub fn resource(&self) -> FakeResource {
        let s = pb::Service {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            hostname: self.hostname.clone(),
            addresses: self
                .vips
                .iter()
                .map(|ip| pb::NetworkAddress { network: String::new(), address: bytes(ip) })
                .collect(),
            ports: self
                .ports
                .iter()
                .map(|(p, t)| pb::Port { service_port: u32::from(*p), target_port: u32::from(*t) })
                .collect(),
            ..Default::default()
        };
        address(&format!("{}/{}", self.namespace, self.hostname), pb::address::Type::Service(s))
    }
}

/// A namespace-scoped policy denying connections to some destination ports.
#[derive(Clone, Debug)]
pub struct FakeDenyPorts {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<u32>,
}

impl FakeDenyPorts {
    /// Named `namespace/name`, as istiod names policies.
    pub fn resource(&self) -> FakeResource {
        let a = security::Authorization {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            scope: security::Scope::Namespace as i32,
            action: security::Action::Deny as i32,
            rules: vec![security::Rule {
                clauses: vec![security::Clause {
                    matches: vec![security::Match { destination_ports: self.ports.clone(), ..Default::default() }],
                }],
            }],
            ..Default::default()
        };
        FakeResource {
            type_url: AUTHORIZATION_TYPE,
            name: format!("{}/{}", self.namespace, self.name),
            bytes: a.encode_to_vec(),
        }
    }
}
