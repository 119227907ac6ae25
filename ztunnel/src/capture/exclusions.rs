//! Writes a pod's capture exclusions ([`CaptureExclusions`], from Istio's pod annotations)
//! into the per-pod exclusion maps that connect4/6 and sk_lookup consult.
//!
//! Outbound entries are keyed by the pod's netns cookie (what connect4/6 know), inbound
//! entries by the pod's addresses (what sk_lookup knows). Applying a pod's exclusions first
//! removes every entry it had, so the maps always hold exactly the last applied set; clearing
//! is part of tearing a pod down. Failures name the map and the entry.

use std::net::IpAddr;

use aya::maps::{HashMap as BpfHashMap, LpmTrie, MapData};

use super::maps::{IpPortKey, NetnsCookie, PodCidr4Key, PodCidr6Key, PodPortKey, Present};
use crate::state::CaptureExclusions;

/// A failed update of an exclusion map.
#[derive(Debug, thiserror::Error)]
#[error("exclusion map {map}: {action}: {source}")]
pub(crate) struct ExclusionError {
    map: &'static str,
    action: String,
    #[source]
    source: aya::maps::MapError,
}

/// The four per-pod exclusion maps.
pub(crate) struct ExclusionMaps {
    pub(crate) ports: BpfHashMap<MapData, PodPortKey, Present>,
    pub(crate) cidrs4: LpmTrie<MapData, [u8; 12], Present>,
    pub(crate) cidrs6: LpmTrie<MapData, [u8; 24], Present>,
    pub(crate) inbound: BpfHashMap<MapData, IpPortKey, Present>,
}

impl ExclusionMaps {
    /// Makes the pod in `netns` with addresses `ips` exclude exactly `exclusions`.
    pub(crate) fn apply(
        &mut self,
        netns: NetnsCookie,
        ips: &[IpAddr],
        exclusions: &CaptureExclusions,
    ) -> Result<(), ExclusionError> {
        self.clear(netns, ips)?;
        let fail = |map: &'static str, action: String| move |source| ExclusionError { map, action, source };
        for &port in &exclusions.outbound_ports {
            self.ports
                .insert(PodPortKey::new(netns, port), 1, 0)
                .map_err(fail("pod_excluded_ports", format!("adding port {port}")))?;
        }
        for cidr in &exclusions.outbound_ranges {
            let what = format!("adding {}/{}", cidr.network(), cidr.prefix());
            match cidr.network() {
                IpAddr::V4(net) => {
                    let key = PodCidr4Key::new(netns, net, cidr.prefix()).unwrap_or_else(|_| unreachable!("a Cidr"));
                    self.cidrs4.insert(&key.to_lpm(), 1, 0).map_err(fail("pod_excluded_cidrs4", what))?;
                }
                IpAddr::V6(net) => {
                    let key = PodCidr6Key::new(netns, net, cidr.prefix()).unwrap_or_else(|_| unreachable!("a Cidr"));
                    self.cidrs6.insert(&key.to_lpm(), 1, 0).map_err(fail("pod_excluded_cidrs6", what))?;
                }
            }
        }
        for &ip in ips {
            let keys: Vec<IpPortKey> = if exclusions.bypass_inbound {
                vec![IpPortKey::every_port(ip)]
            } else {
                exclusions.inbound_ports.iter().map(|&port| IpPortKey::port(ip, port)).collect()
            };
            for key in keys {
                self.inbound.insert(key, 1, 0).map_err(fail("pod_inbound_exclusions", format!("adding {key:?}")))?;
            }
        }
        Ok(())
    }

    /// Removes every exclusion of the pod in `netns` with addresses `ips`.
    pub(crate) fn clear(&mut self, netns: NetnsCookie, ips: &[IpAddr]) -> Result<(), ExclusionError> {
        let fail = |map: &'static str| move |source| ExclusionError { map, action: "removing".into(), source };
        let ports: Vec<PodPortKey> = self.ports.keys().flatten().filter(|k| k.netns() == netns).collect();
        for key in ports {
            self.ports.remove(&key).map_err(fail("pod_excluded_ports"))?;
        }
        let cidrs4: Vec<_> =
            self.cidrs4.keys().flatten().filter(|k| PodCidr4Key::from_lpm(k).netns() == netns).collect();
        for key in cidrs4 {
            self.cidrs4.remove(&key).map_err(fail("pod_excluded_cidrs4"))?;
        }
        let cidrs6: Vec<_> =
            self.cidrs6.keys().flatten().filter(|k| PodCidr6Key::from_lpm(k).netns() == netns).collect();
        for key in cidrs6 {
            self.cidrs6.remove(&key).map_err(fail("pod_excluded_cidrs6"))?;
        }
        let mine: Vec<IpPortKey> = ips.iter().map(|&ip| IpPortKey::every_port(ip)).collect();
        let inbound: Vec<IpPortKey> =
            self.inbound.keys().flatten().filter(|k| mine.iter().any(|m| m.same_address(k))).collect();
        for key in inbound {
            self.inbound.remove(&key).map_err(fail("pod_inbound_exclusions"))?;
        }
        Ok(())
    }
}
