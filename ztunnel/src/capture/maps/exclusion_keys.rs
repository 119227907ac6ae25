//! Mirrors of the load-time configuration (`struct ztunnel_config`) and of the per-pod
//! exclusion keys (`struct pod_port_key`, `pod_cidr4_key`, `pod_cidr6_key`, `ip_port_key`)
//! in `ebpf/include/ztunnel_maps.h`. Layouts only, like the rest of [`super`].

#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{NetnsCookie, encode_ip};

/// Value of `ztunnel_config` (C `struct ztunnel_config`), written at every load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ZtunnelConfig {
    /// `SO_MARK` of ztunnel's sockets, host order; 0 = none (no socket is exempt by mark).
    pub socket_mark: u32,
}

/// Key of `pod_excluded_ports` (C `struct pod_port_key`): a pod's excluded destination port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct PodPortKey {
    /// The pod's netns cookie.
    netns: u64,
    /// HOST order.
    port: u16,
    pad: [u16; 3],
}

impl PodPortKey {
    pub(crate) fn new(netns: NetnsCookie, port: u16) -> Self {
        Self { netns, port, pad: [0; 3] }
    }

    pub(crate) fn netns(&self) -> NetnsCookie {
        self.netns
    }
}

/// A prefix length longer than the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {prefix} is longer than {max} bits")]
pub(crate) struct InvalidPrefix {
    pub prefix: u8,
    pub max: u8,
}

/// Bits that cover the netns cookie at the front of the per-pod LPM keys.
const NETNS_BITS: u32 = 64;

/// Key of `pod_excluded_cidrs4` (C `struct pod_cidr4_key`): one of a pod's excluded IPv4
/// networks. With aya use `LpmTrie<_, [u8; 12], Present>` and [`PodCidrKey::to_lpm`].
pub(crate) type PodCidr4Key = PodCidrKey<4>;
/// Key of `pod_excluded_cidrs6` (C `struct pod_cidr6_key`). With aya use
/// `LpmTrie<_, [u8; 24], Present>` and [`PodCidrKey::to_lpm`].
pub(crate) type PodCidr6Key = PodCidrKey<16>;

/// A per-pod LPM key: the netns cookie, then a network address of `ADDR` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PodCidrKey<const ADDR: usize> {
    /// 64 + prefix bits, host order.
    prefixlen: u32,
    /// The netns cookie in host byte order.
    netns: [u8; 8],
    /// Network address, network order; bits past the prefix are zero.
    addr: [u8; ADDR],
}

impl PodCidr4Key {
    /// `net/prefix` for the pod in `netns`; host bits are cleared.
    pub(crate) fn new(netns: NetnsCookie, net: Ipv4Addr, prefix: u8) -> Result<Self, InvalidPrefix> {
        Self::from_octets(netns, net.octets(), prefix)
    }

    #[cfg(test)]
    pub(crate) fn network(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(self.addr), self.prefix())
    }
}

impl PodCidr6Key {
    /// `net/prefix` for the pod in `netns`; host bits are cleared.
    pub(crate) fn new(netns: NetnsCookie, net: Ipv6Addr, prefix: u8) -> Result<Self, InvalidPrefix> {
        Self::from_octets(netns, net.octets(), prefix)
    }

    #[cfg(test)]
    pub(crate) fn network(&self) -> (Ipv6Addr, u8) {
        (Ipv6Addr::from(self.addr), self.prefix())
    }
}

impl<const ADDR: usize> PodCidrKey<ADDR> {
    /// The address bytes with every bit past `prefix` cleared.
    fn from_octets(netns: NetnsCookie, mut addr: [u8; ADDR], prefix: u8) -> Result<Self, InvalidPrefix> {
        let max = (ADDR * 8) as u8;
        if prefix > max {
            return Err(InvalidPrefix { prefix, max });
        }
        for (i, byte) in addr.iter_mut().enumerate() {
            let kept = usize::from(prefix).saturating_sub(i * 8).min(8);
            *byte &= !(0xffu16 >> kept) as u8;
        }
        Ok(Self { prefixlen: NETNS_BITS + u32::from(prefix), netns: netns.to_ne_bytes(), addr })
    }

    pub(crate) fn netns(&self) -> NetnsCookie {
        u64::from_ne_bytes(self.netns)
    }

    #[cfg(test)]
    fn prefix(&self) -> u8 {
        (self.prefixlen - NETNS_BITS) as u8
    }

    /// The LPM trie key: `DATA` must be 8 + `ADDR` (checked at compile time).
    pub(crate) fn to_lpm<const DATA: usize>(self) -> aya::maps::lpm_trie::Key<[u8; DATA]> {
        const { assert!(DATA == 8 + ADDR, "an LPM key is the netns cookie and the address") };
        let mut data = [0; DATA];
        data[..8].copy_from_slice(&self.netns);
        data[8..].copy_from_slice(&self.addr);
        aya::maps::lpm_trie::Key::new(self.prefixlen, data)
    }

    pub(crate) fn from_lpm<const DATA: usize>(key: &aya::maps::lpm_trie::Key<[u8; DATA]>) -> Self {
        const { assert!(DATA == 8 + ADDR, "an LPM key is the netns cookie and the address") };
        let data = key.data();
        Self {
            prefixlen: key.prefix_len(),
            netns: data[..8].try_into().unwrap_or_default(),
            addr: data[8..].try_into().unwrap_or([0; ADDR]),
        }
    }
}

/// Key of `pod_inbound_exclusions` (C `struct ip_port_key`): a pod address and a local port
/// whose inbound TCP bypasses 15006; port 0 stands for every port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct IpPortKey {
    /// Network order; IPv4 in the first 4 bytes.
    ip: [u8; 16],
    /// HOST order; 0 = every port.
    port: u16,
    /// [`super::FAMILY_V4`] or [`super::FAMILY_V6`], host order.
    family: u16,
}

impl IpPortKey {
    /// Inbound to `ip` at `port` bypasses capture.
    pub(crate) fn port(ip: IpAddr, port: u16) -> Self {
        let (ip, family) = encode_ip(ip);
        Self { ip, port, family }
    }

    /// Inbound to `ip` at any port bypasses capture.
    pub(crate) fn every_port(ip: IpAddr) -> Self {
        Self::port(ip, 0)
    }

    /// Both keys are about the same pod address (any ports).
    pub(crate) fn same_address(&self, other: &IpPortKey) -> bool {
        self.ip == other.ip && self.family == other.family
    }
}

// SAFETY: #[repr(C)] of one u32; every bit pattern is a valid value.
unsafe impl aya::Pod for ZtunnelConfig {}
// SAFETY: #[repr(C)] of a u64, a u16 and a [u16; 3] without padding (8 + 2 + 6 = 16, align 8);
// every bit pattern is a valid value.
unsafe impl aya::Pod for PodPortKey {}
// SAFETY: #[repr(C)] of a u32 and two u8 arrays without padding (4 + 8 + 4 = 16, align 4);
// every bit pattern is a valid value.
unsafe impl aya::Pod for PodCidr4Key {}
// SAFETY: #[repr(C)] of a u32 and two u8 arrays without padding (4 + 8 + 16 = 28, align 4);
// every bit pattern is a valid value.
unsafe impl aya::Pod for PodCidr6Key {}
// SAFETY: #[repr(C)] of a u8 array and two u16s without padding (16 + 2 + 2 = 20, align 2);
// every bit pattern is a valid value.
unsafe impl aya::Pod for IpPortKey {}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;
    use std::mem::{offset_of, size_of};

    use super::*;

    /// (size, member offsets) of a C struct in the object's BTF.
    type Lookup<'a> = &'a dyn Fn(&str) -> Option<(usize, HashMap<String, usize>)>;

    fn check(lookup: Lookup<'_>, c_name: &str, size: usize, fields: &[(&str, usize)]) {
        let (c_size, members) = lookup(c_name).unwrap_or_else(|| panic!("struct {c_name} is not in the object's BTF"));
        assert_eq!(size, c_size, "size of the mirror of C struct {c_name}");
        assert_eq!(members.len(), fields.len(), "fields of the mirror of C struct {c_name}: {members:?}");
        for (field, offset) in fields {
            assert_eq!(members.get(*field), Some(offset), "offset of {c_name}.{field}");
        }
    }

    pub(in crate::capture::maps) fn assert_layouts(lookup: Lookup<'_>) {
        check(
            lookup,
            "pod_port_key",
            size_of::<PodPortKey>(),
            &[
                ("netns", offset_of!(PodPortKey, netns)),
                ("port", offset_of!(PodPortKey, port)),
                ("pad", offset_of!(PodPortKey, pad)),
            ],
        );
        check(
            lookup,
            "pod_cidr4_key",
            size_of::<PodCidr4Key>(),
            &[
                ("prefixlen", offset_of!(PodCidr4Key, prefixlen)),
                ("netns", offset_of!(PodCidr4Key, netns)),
                ("addr", offset_of!(PodCidr4Key, addr)),
            ],
        );
        check(
            lookup,
            "pod_cidr6_key",
            size_of::<PodCidr6Key>(),
            &[
                ("prefixlen", offset_of!(PodCidr6Key, prefixlen)),
                ("netns", offset_of!(PodCidr6Key, netns)),
                ("addr", offset_of!(PodCidr6Key, addr)),
            ],
        );
        check(
            lookup,
            "ip_port_key",
            size_of::<IpPortKey>(),
            &[
                ("ip", offset_of!(IpPortKey, ip)),
                ("port", offset_of!(IpPortKey, port)),
                ("family", offset_of!(IpPortKey, family)),
            ],
        );
        // aya's LPM key type is what actually goes to the kernel.
        assert_eq!(size_of::<aya::maps::lpm_trie::Key<[u8; 12]>>(), size_of::<PodCidr4Key>());
        assert_eq!(size_of::<aya::maps::lpm_trie::Key<[u8; 24]>>(), size_of::<PodCidr6Key>());
    }
}
