//! Provisional map mirrors.
#![allow(unsafe_code)]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PodConfig {
    pub ip4: u32,
    pub ip6: [u8; 16],
    pub flags: u32,
}
impl PodConfig {
    pub fn ready(ip4: Option<Ipv4Addr>, ip6: Option<Ipv6Addr>) -> PodConfig {
        let mut c = PodConfig::default();
        if let Some(v4) = ip4 {
            c.ip4 = u32::from_ne_bytes(v4.octets());
            c.flags |= 2;
        }
        if let Some(v6) = ip6 {
            c.ip6 = v6.octets();
            c.flags |= 4;
        }
        c.flags |= 1;
        c
    }
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OrigDst {
    pub ip: [u8; 16],
    pub port: u16,
    pub family: u16,
}
impl OrigDst {
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let port = u16::from_be(self.port);
        match self.family {
            2 => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3])), port)),
            10 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(self.ip)), port)),
            _ => None,
        }
    }
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerKey {
    pub ip: [u8; 16],
    pub port: u16,
    pub family: u16,
}
impl From<SocketAddr> for PeerKey {
    fn from(a: SocketAddr) -> Self {
        let mut k = PeerKey { port: a.port(), ..Default::default() };
        match a.ip() {
            IpAddr::V4(v4) => {
                k.ip[..4].copy_from_slice(&v4.octets());
                k.family = 2;
            }
            IpAddr::V6(v6) => {
                k.ip = v6.octets();
                k.family = 10;
            }
        }
        k
    }
}
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IpKey {
    pub ip: [u8; 16],
    pub family: u32,
}
impl From<IpAddr> for IpKey {
    fn from(a: IpAddr) -> Self {
        let mut k = IpKey::default();
        match a {
            IpAddr::V4(v4) => {
                k.ip[..4].copy_from_slice(&v4.octets());
                k.family = 2;
            }
            IpAddr::V6(v6) => {
                k.ip = v6.octets();
                k.family = 10;
            }
        }
        k
    }
}
// SAFETY: plain old data, repr(C), no padding-sensitive invariants.
unsafe impl aya::Pod for PodConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for OrigDst {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for IpKey {}
