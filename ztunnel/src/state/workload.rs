//! The workload model: one pod (or VM, or other addressable thing) in the mesh, with the
//! fields of Istio's `Workload` that ztunnel keeps, and the small enums and structs they use.
//!
//! The serde names are the ones of Istio's local config and `/config_dump` (camelCase fields,
//! `HBONE`/`TCP`, `Healthy`/`Unhealthy`). This module holds data only: parsing a file and
//! validating it live in `local`, indexing in `store`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::address::{FromStrVisitor, NamespacedHostname, NetworkAddress};
use crate::identity::Identity;
use crate::types::WorkloadUid;

/// How a workload accepts mesh traffic: HBONE tunnels on port 15008, or plain TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "HBONE")]
    Hbone,
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    #[default]
    Healthy,
    Unhealthy,
}

/// `HostNetwork` workloads share their node's IP, so they are not indexed by address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkMode {
    #[default]
    Standard,
    HostNetwork,
}

/// Where a workload runs. Unknown keys are tolerated, as Istio does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Locality {
    pub region: Arc<str>,
    pub zone: Arc<str>,
    pub subzone: Arc<str>,
}

impl Locality {
    fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }
}

/// A waypoint or network gateway: an address or a service name, plus its HBONE port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    pub hbone_mtls_port: u16,
}

/// `"network/IP"` when the text after the first `/` is an IP, otherwise `"namespace/hostname"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GatewayDestination {
    Address(NetworkAddress),
    Hostname(NamespacedHostname),
}

impl FromStr for GatewayDestination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<NetworkAddress>() {
            return Ok(GatewayDestination::Address(addr));
        }
        s.parse::<NamespacedHostname>().map(GatewayDestination::Hostname).map_err(|_| {
            format!("invalid gateway destination {s:?}: expected \"network/IP\" or \"namespace/hostname\"")
        })
    }
}

impl fmt::Display for GatewayDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayDestination::Address(a) => a.fmt(f),
            GatewayDestination::Hostname(h) => h.fmt(f),
        }
    }
}

impl Serialize for GatewayDestination {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GatewayDestination {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<GatewayDestination>::new(
            "a string \"network/IP\" or \"namespace/hostname\"",
        ))
    }
}

/// Protocol a waypoint-like workload expects inside its tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TunnelProtocol {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "PROXY")]
    Proxy,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationTunnel {
    pub protocol: TunnelProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// One workload. Built only by validated config, so its invariants hold: `uid`, `name` and
/// `namespace` are non-empty, `service_account` and `trust_domain` are filled in with defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub uid: WorkloadUid,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub service_account: Arc<str>,
    pub trust_domain: Arc<str>,
    pub workload_ips: Vec<IpAddr>,
    pub node: Arc<str>,
    pub network: Arc<str>,
    pub protocol: Protocol,
    pub status: HealthStatus,
    pub cluster_id: Arc<str>,
    pub canonical_name: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub workload_name: Arc<str>,
    pub workload_type: Arc<str>,
    pub hostname: Arc<str>,
    pub network_mode: NetworkMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_gateway: Option<GatewayAddress>,
    pub native_tunnel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_tunnel: Option<ApplicationTunnel>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorization_policies: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Locality::is_empty")]
    pub locality: Locality,
    /// Services this workload is an endpoint of.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<NamespacedHostname>,
    /// Load-balancing weight among a service's endpoints (Istio's `capacity`, default 1).
    pub capacity: u32,
}

impl Workload {
    /// The SPIFFE identity this workload's certificates carry.
    pub fn identity(&self) -> Identity {
        Identity::new(&self.trust_domain, &self.namespace, &self.service_account)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_destination_prefers_address() {
        let a: GatewayDestination = "net1/10.0.0.9".parse().unwrap();
        assert_eq!(a, GatewayDestination::Address(NetworkAddress::new("net1", "10.0.0.9".parse().unwrap())));
        let h: GatewayDestination = "istio-system/waypoint.example".parse().unwrap();
        assert_eq!(h, GatewayDestination::Hostname(NamespacedHostname::new("istio-system", "waypoint.example")));
        assert!("waypoint".parse::<GatewayDestination>().is_err());
    }

    #[test]
    fn enums_use_istio_spellings() {
        assert_eq!(serde_json::to_string(&Protocol::Hbone).unwrap(), "\"HBONE\"");
        assert_eq!(serde_yaml::from_str::<Protocol>("TCP").unwrap(), Protocol::Tcp);
        assert!(serde_yaml::from_str::<Protocol>("hbone").is_err());
        assert_eq!(serde_yaml::from_str::<HealthStatus>("Unhealthy").unwrap(), HealthStatus::Unhealthy);
    }
}
