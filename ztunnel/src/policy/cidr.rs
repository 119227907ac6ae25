//! [`Cidr`]: an IP network (`10.0.0.0/8`, `fd00::/64`, or a bare address for a single host)
//! as used by `sourceIps` and `destinationIps`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP network. Host bits are cleared on construction (`10.1.2.3/8` is `10.0.0.0/8`), as
/// Istio's ztunnel effectively does when it tests containment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text or an xDS address is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR {text:?}: {reason}")]
    Text { text: String, reason: String },
    #[error("prefix length {prefix} is too long for {family} (at most {max})")]
    Prefix { prefix: u32, family: &'static str, max: u8 },
    #[error("address of {len} bytes is neither IPv4 (4) nor IPv6 (16)")]
    Octets { len: usize },
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits.
    pub fn new(addr: IpAddr, prefix: u32) -> Result<Cidr, CidrError> {
        let (family, max) = match addr {
            IpAddr::V4(_) => ("IPv4", 32),
            IpAddr::V6(_) => ("IPv6", 128),
        };
        if prefix > u32::from(max) {
            return Err(CidrError::Prefix { prefix, family, max });
        }
        let prefix = prefix as u8;
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
        };
        Ok(Cidr { network, prefix })
    }

    /// From xDS's `Address { address: bytes, length }` (4 or 16 address bytes).
    pub fn from_octets(octets: &[u8], prefix: u32) -> Result<Cidr, CidrError> {
        let addr = if let Ok(v4) = <[u8; 4]>::try_from(octets) {
            IpAddr::from(v4)
        } else if let Ok(v6) = <[u8; 16]>::try_from(octets) {
            IpAddr::from(v6)
        } else {
            return Err(CidrError::Octets { len: octets.len() });
        };
        Cidr::new(addr, prefix)
    }

    /// A network holding exactly `addr`.
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { network: addr, prefix }
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. Families never mix: `0.0.0.0/0` holds every IPv4
    /// address and no IPv6 one. Callers pass canonical addresses (IPv4-mapped IPv6 addresses
    /// already turned into IPv4), see [`super::Connection`].
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & mask_v4(self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & mask_v6(self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = |reason: &str| CidrError::Text { text: s.to_string(), reason: reason.to_string() };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let prefix: u32 = prefix.parse().map_err(|_| bad("the prefix length after '/' must be a number"))?;
                (addr, Some(prefix))
            }
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("expected an IP address, optionally followed by /length"))?;
        match prefix {
            Some(prefix) => Cidr::new(addr, prefix).map_err(|e| bad(&e.to_string())),
            None => Ok(Cidr::host(addr)),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CidrVisitor;
        impl Visitor<'_> for CidrVisitor {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR string such as \"10.0.0.0/8\" or an IP address")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CidrVisitor)
    }
}
