//! A pod's entries in the capture maps, keyed by what the programs know: its network
//! namespace's cookie (`pod_config`, the exclusion maps) and its addresses
//! (`inbound_sockets`). Enrollment ([`crate::pods`]) decides when; this module only writes.
//!
//! A pod in `pod_config` is captured: with `POD_READY` clear its connects are refused, with
//! it set they go to its listeners. [`Loaded::forget_pod`] removes every entry of a pod.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use super::loader::Loaded;
use super::maps::{IpKey, PeerKey, PodConfig};
use crate::state::CaptureExclusions;

/// A failed map update; the message names the map and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PodMapError(String);

/// The first IPv4 and the first IPv6 address of `ips`.
pub(crate) fn families(ips: &[IpAddr]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let ip4 = ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let ip6 = ips.iter().find_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    });
    (ip4, ip6)
}

impl Loaded {
    /// Writes the pod's `pod_config` entry: its first address of each family, ready or
    /// refusing. `ips` must hold at least one address.
    pub(crate) fn set_pod(&self, netns_cookie: u64, ips: &[IpAddr], ready: bool) -> Result<(), PodMapError> {
        let (ip4, ip6) = families(ips);
        if ip4.is_none() && ip6.is_none() {
            return Err(PodMapError("pod_config: the pod has no address".into()));
        }
        let config = PodConfig::new(ip4, ip6).with_ready(ready);
        self.pod_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(netns_cookie, config, 0)
            .map_err(|e| PodMapError(format!("writing pod_config: {e}")))
    }

    /// The addresses in the pod's `pod_config` entry, if it has one.
    pub(crate) fn pod_ips(&self, netns_cookie: u64) -> Option<Vec<IpAddr>> {
        let entry = self.pod_config.lock().unwrap_or_else(|e| e.into_inner()).get(&netns_cookie, 0).ok()?;
        Some(entry.ip4().map(Into::into).into_iter().chain(entry.ip6().map(Into::into)).collect())
    }

    /// Makes the pod's exclusions exactly `exclusions`.
    pub(crate) fn apply_exclusions(
        &self,
        netns_cookie: u64,
        ips: &[IpAddr],
        exclusions: &CaptureExclusions,
    ) -> Result<(), PodMapError> {
        self.exclusions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(netns_cookie, ips, exclusions)
            .map_err(|e| PodMapError(e.to_string()))
    }

    /// Registers the 15006 listener `fd` for inbound plaintext to `ip` (`sk_lookup`).
    pub(crate) fn register_inbound(&self, ip: IpAddr, fd: RawFd) -> Result<(), PodMapError> {
        self.inbound_sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(IpKey::from(ip), fd, 0)
            .map_err(|e| PodMapError(format!("registering the 15006 socket for {ip}: {e}")))
    }

    /// Removes the 15006 registrations of `ips`.
    pub(crate) fn forget_inbound(&self, ips: &[IpAddr]) {
        let mut sockets = self.inbound_sockets.lock().unwrap_or_else(|e| e.into_inner());
        for ip in ips {
            let _ = sockets.remove(&IpKey::from(*ip));
        }
    }

    /// Removes every entry of the pod (`pod_config`, 15006 registrations, exclusions): its
    /// traffic is no longer captured.
    pub(crate) fn forget_pod(&self, netns_cookie: u64, ips: &[IpAddr]) -> Result<(), PodMapError> {
        let _ = self.pod_config.lock().unwrap_or_else(|e| e.into_inner()).remove(&netns_cookie);
        self.forget_inbound(ips);
        self.exclusions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear(netns_cookie, ips)
            .map_err(|e| PodMapError(format!("removing the pod's capture exclusions: {e}")))
    }

    /// Takes (reads and forgets) the original destination of the captured client at `client`.
    pub(crate) fn take_orig_dst(&self, client: SocketAddr) -> Option<SocketAddr> {
        let key = PeerKey::from(client);
        let mut map = self.orig_dst.lock().unwrap_or_else(|e| e.into_inner());
        let found = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        SocketAddr::try_from(found).ok()
    }
}
