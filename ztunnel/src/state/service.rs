//! The service model: a named set of VIPs and ports whose traffic is spread over endpoints
//! (workloads), with the fields of Istio's `Service` that ztunnel keeps.
//!
//! Data only, with serde names as in Istio's local config and `/config_dump`; endpoint choice
//! lives in `store`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::address::{NamespacedHostname, NetworkAddress};
use super::endpoints::Endpoints;
use super::port_map::PortMap;
use super::workload::{GatewayAddress, HealthStatus};
use crate::types::WorkloadUid;

/// A workload serving a service, with its own port map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub workload_uid: WorkloadUid,
    /// The service this endpoint belongs to.
    pub service_key: NamespacedHostname,
    /// Service port -> target port on this endpoint. A service port missing here falls back
    /// to the service's own target port.
    pub port: PortMap,
    pub status: HealthStatus,
}

/// How endpoints are chosen. Istio's field names and values; `routingPreferences` and the
/// non-standard modes need the caller's locality and are kept for later use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadBalancer {
    pub routing_preferences: Vec<LoadBalancerScope>,
    pub mode: LoadBalancerMode,
    pub health_policy: LoadBalancerHealthPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancerScope {
    Region,
    Zone,
    Subzone,
    Node,
    Cluster,
    Network,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancerMode {
    #[default]
    Standard,
    Strict,
    Failover,
    Passthrough,
}

/// `AllowAll` lets unhealthy endpoints receive traffic, as in Istio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadBalancerHealthPolicy {
    #[default]
    OnlyHealthy,
    AllowAll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpFamily {
    Dual,
    IPv4,
    IPv6,
}

/// One service. Built only by validated config: `name`, `namespace` and `hostname` are
/// non-empty and every endpoint names a workload of the same config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub hostname: Arc<str>,
    pub vips: Vec<NetworkAddress>,
    /// Service port -> target port; a target of 0 means "each endpoint's own mapping".
    pub ports: BTreeMap<u16, u16>,
    /// Endpoints keyed by workload uid, unhealthy ones included (they are skipped when picking).
    pub endpoints: Endpoints,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<GatewayAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<IpFamily>,
}

impl Service {
    pub fn key(&self) -> NamespacedHostname {
        NamespacedHostname { namespace: self.namespace.clone(), hostname: self.hostname.clone() }
    }

    /// Whether an endpoint with this status may receive traffic.
    pub fn accepts(&self, status: HealthStatus) -> bool {
        status == HealthStatus::Healthy
            || self.load_balancer.as_ref().is_some_and(|lb| lb.health_policy == LoadBalancerHealthPolicy::AllowAll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_balancer_uses_istio_spellings() {
        let lb: LoadBalancer =
            serde_yaml::from_str("routingPreferences: [Network, Zone]\nmode: Failover\nhealthPolicy: AllowAll\n")
                .unwrap();
        assert_eq!(lb.routing_preferences, vec![LoadBalancerScope::Network, LoadBalancerScope::Zone]);
        assert_eq!(lb.mode, LoadBalancerMode::Failover);
        assert_eq!(lb.health_policy, LoadBalancerHealthPolicy::AllowAll);
        let err = serde_yaml::from_str::<LoadBalancer>("weights: 1\n").unwrap_err();
        assert!(err.to_string().contains("weights"), "{err}");
        assert_eq!(serde_yaml::from_str::<IpFamily>("IPv6").unwrap(), IpFamily::IPv6);
    }
}
