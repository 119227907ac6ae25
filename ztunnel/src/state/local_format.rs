//! The on-disk shape of Istio ztunnel's local config file (`LOCAL_XDS_PATH`), field for field,
//! so an existing file parses unchanged.
//!
//! Facts taken from Istio's format: top-level `workloads`, `services`, `policies`, each
//! optional; camelCase keys; unknown keys are an error everywhere except inside `locality`;
//! a workload's `services` maps `"namespace/hostname"` to `{servicePort: targetPort}`;
//! `capacity` (default 1) is the endpoint weight; `policies` are Istio ztunnel's serialized
//! `Authorization` (the [`crate::policy`] model). These types only describe the syntax:
//! required fields, defaults and cross-references are checked in `validate`.
//!
//! Our additions, which Istio's format does not have: `mtls: STRICT | PERMISSIVE` on a
//! workload, and a top-level `namespaces` list giving a namespace's default `mtls`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::address::{IpText, NetworkAddress};
use super::service::{IpFamily, LoadBalancer};
use super::workload::{ApplicationTunnel, GatewayAddress, HealthStatus, Locality, NetworkMode, Protocol};
use crate::policy::{Authorization, MtlsMode};

#[derive(Debug, Deserialize)]
#[serde(rename = "LocalConfig", rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct LocalConfigFile {
    #[serde(default)]
    pub workloads: Vec<WorkloadEntry>,
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    #[serde(default)]
    pub policies: Vec<Authorization>,
    /// Per-namespace settings (ours): the namespace's default mTLS mode.
    #[serde(default)]
    pub namespaces: Vec<NamespaceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Namespace", rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NamespaceEntry {
    pub name: Option<String>,
    /// Default for the namespace's workloads; unset means PERMISSIVE, as in Istio.
    pub mtls: Option<MtlsMode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Workload", rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct WorkloadEntry {
    pub uid: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub workload_ips: Vec<IpText>,
    pub waypoint: Option<GatewayAddress>,
    pub network_gateway: Option<GatewayAddress>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub network_mode: NetworkMode,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub workload_name: String,
    #[serde(default)]
    pub workload_type: String,
    #[serde(default)]
    pub canonical_name: String,
    #[serde(default)]
    pub canonical_revision: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub native_tunnel: bool,
    pub application_tunnel: Option<ApplicationTunnel>,
    #[serde(default)]
    pub authorization_policies: Vec<String>,
    #[serde(default)]
    pub status: HealthStatus,
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default)]
    pub locality: Locality,
    #[serde(default, deserialize_with = "service_port_maps")]
    pub services: BTreeMap<String, BTreeMap<u16, u16>>,
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Extension: the pod's network namespace, to enroll it in eBPF capture.
    pub capture: Option<super::capture::CaptureEntry>,
    /// Overrides the namespace's mTLS mode (ours, not in Istio's format).
    pub mtls: Option<MtlsMode>,
}

fn default_capacity() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Service", rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ServiceEntry {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub vips: Vec<NetworkAddress>,
    #[serde(default, deserialize_with = "port_map")]
    pub ports: BTreeMap<u16, u16>,
    /// Endpoints declared on the service itself, keyed by workload uid.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointEntry>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    pub waypoint: Option<GatewayAddress>,
    pub load_balancer: Option<LoadBalancer>,
    pub ip_families: Option<IpFamily>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Endpoint", rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct EndpointEntry {
    pub workload_uid: String,
    #[serde(default, deserialize_with = "port_map")]
    pub port: BTreeMap<u16, u16>,
    #[serde(default)]
    pub status: HealthStatus,
}

/// A port number in a port map, with an error that says the allowed range (serde's own says
/// "expected u16"). 0 passes here; whether it is allowed depends on the field.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct PortValue(u16);

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = PortValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortValue, E> {
                u16::try_from(v).map(PortValue).map_err(|_| E::custom(format!("invalid port {v}: must be in 1..65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortValue, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("invalid port {v}: must be in 1..65535")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        deserializer.deserialize_u64(PortVisitor)
    }
}

fn port_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<u16, u16>, D::Error> {
    let raw = BTreeMap::<PortValue, PortValue>::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|(k, v)| (k.0, v.0)).collect())
}

fn service_port_maps<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, BTreeMap<u16, u16>>, D::Error> {
    #[derive(Deserialize)]
    struct PortMap(#[serde(deserialize_with = "port_map")] BTreeMap<u16, u16>);
    let raw = BTreeMap::<String, PortMap>::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}
