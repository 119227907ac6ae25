//! Rust mirrors of the eBPF maps' keys and values, one `#[repr(C)]` type per C struct in
//! `ebpf/include/ztunnel_maps.h` (the authority on layouts and byte orders), with conversions
//! to and from `std::net` types so that no other module handles raw bytes or byte orders.
//!
//! This module owns layouts only: it does no IO and never touches a map. The unit tests
//! compare every size and field offset here with the BTF that clang emitted for the C structs
//! into the committed `ebpf/ztunnel.bpf.o` (see `maps/tests.rs`).
//!
//! Network-order IPv4 fields are `[u8; 4]` rather than the header's `__u32`: same size and
//! offset, and no way to store host-order bytes by mistake.

// `aya::Pod` is an unsafe marker trait: implementing it promises that every bit pattern is a
// valid value and that the type has no padding, so aya can copy it to and from the kernel.
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

#[cfg(test)]
/// The default `SO_MARK` of ztunnel's sockets (`--socket-mark`); the programs read the
/// configured one from `ztunnel_config` ([`ZtunnelConfig`]).
pub(crate) const ZTUNNEL_MARK: u32 = 0x539;

/// `family` value for IPv4 (Linux `AF_INET`).
pub(crate) const FAMILY_V4: u16 = 2;
/// `family` value for IPv6 (Linux `AF_INET6`).
pub(crate) const FAMILY_V6: u16 = 10;

/// Key of `pod_config`: the pod's network-namespace cookie (`SO_NETNS_COOKIE`).
pub(crate) type NetnsCookie = u64;
#[cfg(test)]
/// Key of `orig_dst_by_cookie`: a socket's cookie (`SO_COOKIE`).
pub(crate) type SocketCookie = u64;
/// Value of the exclusion maps (ignored; write 1).
pub(crate) type Present = u8;

/// Value of `pod_config` (C `struct pod_config`): one enrolled pod's addresses and state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PodConfig {
    /// IPv4 address, network order; valid with [`PodConfig::HAS_V4`].
    ip4: [u8; 4],
    /// IPv6 address, network order; valid with [`PodConfig::HAS_V6`].
    ip6: [u8; 16],
    /// `POD_*` bits, host order.
    flags: u32,
}

impl PodConfig {
    /// ztunnel's listeners for the pod exist; without it the pod's connects are refused.
    pub(crate) const READY: u32 = 1;
    /// `ip4` is valid.
    pub(crate) const HAS_V4: u32 = 2;
    /// `ip6` is valid.
    pub(crate) const HAS_V6: u32 = 4;

    /// A pod with these addresses, not ready yet.
    pub(crate) fn new(ip4: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> Self {
        let mut config = Self::default();
        if let Some(ip) = ip4 {
            config.ip4 = ip.octets();
            config.flags |= Self::HAS_V4;
        }
        if let Some(ip) = ip6 {
            config.ip6 = ip.octets();
            config.flags |= Self::HAS_V6;
        }
        config
    }

    /// The same pod, ready (captured connects are redirected) or not (they are refused).
    #[must_use]
    pub(crate) fn with_ready(mut self, ready: bool) -> Self {
        if ready {
            self.flags |= Self::READY;
        } else {
            self.flags &= !Self::READY;
        }
        self
    }

    #[cfg(test)]
    pub(crate) fn is_ready(&self) -> bool {
        self.flags & Self::READY != 0
    }

    pub(crate) fn ip4(&self) -> Option<Ipv4Addr> {
        (self.flags & Self::HAS_V4 != 0).then(|| Ipv4Addr::from(self.ip4))
    }

    pub(crate) fn ip6(&self) -> Option<Ipv6Addr> {
        (self.flags & Self::HAS_V6 != 0).then(|| Ipv6Addr::from(self.ip6))
    }

    #[cfg(test)]
    /// The raw `POD_*` bits.
    pub(crate) fn flags(&self) -> u32 {
        self.flags
    }
}

/// An IP address as the programs store it: 16 bytes in network order (IPv4 in the first 4,
/// the rest zero) and a family. IPv4-mapped IPv6 addresses count as IPv4, because that is how
/// the kernel hands IPv4 connections to IPv6 sockets while the programs see plain IPv4.
pub(crate) fn encode_ip(ip: IpAddr) -> ([u8; 16], u16) {
    match ip {
        IpAddr::V4(v4) => (v4_bytes(v4), FAMILY_V4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (v4_bytes(v4), FAMILY_V4),
            None => (v6.octets(), FAMILY_V6),
        },
    }
}

fn v4_bytes(ip: Ipv4Addr) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..4].copy_from_slice(&ip.octets());
    bytes
}

fn decode_ip(ip: [u8; 16], family: u16) -> Result<IpAddr, UnknownFamily> {
    match family {
        FAMILY_V4 => Ok(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))),
        FAMILY_V6 => Ok(IpAddr::V6(Ipv6Addr::from(ip))),
        other => Err(UnknownFamily(other)),
    }
}

fn socket_addr(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    }
}

/// A map entry whose `family` is neither `AF_INET` nor `AF_INET6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ebpf map entry has unknown address family {0}")]
pub struct UnknownFamily(pub u16);

/// Value of `orig_dst_by_cookie` and `orig_dst` (C `struct orig_dst`): the destination the
/// application asked for before connect4/6 redirected it to 15001.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// Network order; IPv4 in the first 4 bytes.
    ip: [u8; 16],
    /// NETWORK order.
    port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`], host order.
    family: u16,
}

impl From<SocketAddr> for OrigDst {
    fn from(addr: SocketAddr) -> Self {
        let (ip, family) = encode_ip(addr.ip());
        Self { ip, port: addr.port().to_be(), family }
    }
}

impl TryFrom<OrigDst> for SocketAddr {
    type Error = UnknownFamily;

    fn try_from(dst: OrigDst) -> Result<Self, Self::Error> {
        Ok(socket_addr(decode_ip(dst.ip, dst.family)?, u16::from_be(dst.port)))
    }
}

/// Key of `orig_dst` (C `struct peer_key`): the client socket's local address, which is the
/// peer address of the connection ztunnel accepts on 15001.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Network order; IPv4 in the first 4 bytes.
    ip: [u8; 16],
    /// HOST order (as `bpf_sock_ops.local_port`).
    port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`], host order.
    family: u16,
}

impl From<SocketAddr> for PeerKey {
    /// From the peer address of an accepted socket; an IPv4-mapped IPv6 peer (an IPv4 client
    /// accepted by a dual-stack listener) becomes the IPv4 key that sockops wrote.
    fn from(peer: SocketAddr) -> Self {
        let (ip, family) = encode_ip(peer.ip());
        Self { ip, port: peer.port(), family }
    }
}

impl TryFrom<PeerKey> for SocketAddr {
    type Error = UnknownFamily;

    fn try_from(key: PeerKey) -> Result<Self, Self::Error> {
        Ok(socket_addr(decode_ip(key.ip, key.family)?, key.port))
    }
}

/// Key of `inbound_sockets` (C `struct ip_key`): a pod IP whose 15006 listener is the value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpKey {
    /// Network order; IPv4 in the first 4 bytes.
    ip: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`] (as a 32-bit field), host order.
    family: u32,
}

impl From<IpAddr> for IpKey {
    fn from(addr: IpAddr) -> Self {
        let (ip, family) = encode_ip(addr);
        Self { ip, family: u32::from(family) }
    }
}

impl TryFrom<IpKey> for IpAddr {
    type Error = UnknownFamily;

    fn try_from(key: IpKey) -> Result<Self, Self::Error> {
        let family = u16::try_from(key.family).map_err(|_| UnknownFamily(u16::MAX))?;
        decode_ip(key.ip, family)
    }
}

/// Key of `host_probes` and `inbound_dials` (C `struct conn_key`): one TCP connection, as its
/// SYN shows it. IPv4-mapped addresses fold to IPv4 (the SYN is IPv4 then).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    /// The connecting socket's address; network order, IPv4 in the first 4 bytes.
    src: [u8; 16],
    /// The pod's address, the same encoding.
    dst: [u8; 16],
    /// HOST order.
    src_port: u16,
    /// HOST order.
    dst_port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`] (as a 32-bit field), host order.
    family: u32,
}

impl ConnKey {
    /// The connection from `src` to `dst`, or `None` when their families differ.
    pub(crate) fn new(src: SocketAddr, dst: SocketAddr) -> Option<Self> {
        let (src_ip, family) = encode_ip(src.ip());
        let (dst_ip, dst_family) = encode_ip(dst.ip());
        (family == dst_family).then_some(Self {
            src: src_ip,
            dst: dst_ip,
            src_port: src.port(),
            dst_port: dst.port(),
            family: u32::from(family),
        })
    }
}

// SAFETY: #[repr(C)] of u8 arrays and u32s laid out without padding (4 + 16 + 4 = 24, align 4;
// checked against the C struct by the tests); every bit pattern is a valid value.
unsafe impl aya::Pod for PodConfig {}
// SAFETY: #[repr(C)] of a u8 array and two u16s without padding (16 + 2 + 2 = 20, align 2);
// every bit pattern is a valid value.
unsafe impl aya::Pod for OrigDst {}
// SAFETY: #[repr(C)] of a u8 array and two u16s without padding (16 + 2 + 2 = 20, align 2);
// every bit pattern is a valid value.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: #[repr(C)] of a u8 array and a u32 without padding (16 + 4 = 20, align 4); every bit
// pattern is a valid value.
unsafe impl aya::Pod for IpKey {}
// SAFETY: #[repr(C)] of two u8 arrays, two u16s and a u32 without padding
// (16 + 16 + 2 + 2 + 4 = 40, align 4); every bit pattern is a valid value.
unsafe impl aya::Pod for ConnKey {}

mod exclusion_keys;
#[cfg(test)]
pub(crate) use exclusion_keys::InvalidPrefix;
pub(crate) use exclusion_keys::{IpPortKey, PodCidr4Key, PodCidr6Key, PodPortKey, ZtunnelConfig};

#[cfg(test)]
mod tests;
