//! Typed addresses used as keys in the mesh state: `network/IP` pairs and `namespace/hostname`
//! service names, with the string forms of Istio's local config (`"/10.0.0.1"`,
//! `"default/example.com"`).
//!
//! Owns parsing and printing of those forms only; it must not know about workloads or services.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP address inside one network; the network is empty for the default network.
/// Written `network/IP`, for example `"/10.0.0.1"` or `"remote/10.0.0.1"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkAddress {
    pub network: Arc<str>,
    pub address: IpAddr,
}

impl NetworkAddress {
    pub fn new(network: &str, address: IpAddr) -> NetworkAddress {
        NetworkAddress { network: network.into(), address }
    }
}

impl FromStr for NetworkAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((network, ip)) = s.split_once('/') else {
            return Err(format!(
                "invalid network address {s:?}: expected \"network/IP\" (the network may be empty, as in \"/10.0.0.1\")"
            ));
        };
        let address =
            ip.parse::<IpAddr>().map_err(|_| format!("invalid network address {s:?}: {ip:?} is not an IP address"))?;
        Ok(NetworkAddress::new(network, address))
    }
}

impl fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.address)
    }
}

impl Serialize for NetworkAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NetworkAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<NetworkAddress>::new("a string \"network/IP\""))
    }
}

/// A service name: namespace plus hostname, written `namespace/hostname`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedHostname {
    pub namespace: Arc<str>,
    pub hostname: Arc<str>,
}

impl NamespacedHostname {
    pub fn new(namespace: &str, hostname: &str) -> NamespacedHostname {
        NamespacedHostname { namespace: namespace.into(), hostname: hostname.into() }
    }
}

impl FromStr for NamespacedHostname {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, host)) if !ns.is_empty() && !host.is_empty() && !host.contains('/') => {
                Ok(NamespacedHostname::new(ns, host))
            }
            _ => Err(format!("invalid service name {s:?}: expected \"namespace/hostname\"")),
        }
    }
}

impl fmt::Display for NamespacedHostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.hostname)
    }
}

impl Serialize for NamespacedHostname {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An IP address read from a string, whose parse error quotes the offending text
/// (serde's own `IpAddr` error does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpText(pub(crate) IpAddr);

impl FromStr for IpText {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(IpText).map_err(|_| format!("invalid IP address {s:?}"))
    }
}

impl<'de> Deserialize<'de> for IpText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FromStrVisitor::<IpText>::new("an IP address string"))
    }
}

/// Visitor for types parsed from a string with a `String` error.
pub(crate) struct FromStrVisitor<T> {
    expecting: &'static str,
    _marker: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    pub(crate) fn new(expecting: &'static str) -> Self {
        FromStrVisitor { expecting, _marker: std::marker::PhantomData }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_address_forms() {
        let a: NetworkAddress = "/10.0.0.1".parse().unwrap();
        assert_eq!(&*a.network, "");
        assert_eq!(a.to_string(), "/10.0.0.1");
        let b: NetworkAddress = "remote/fd00::1".parse().unwrap();
        assert_eq!(&*b.network, "remote");
        assert_eq!(b.address, "fd00::1".parse::<IpAddr>().unwrap());
        for bad in ["10.0.0.1", "/10.0.0.300", "net/", ""] {
            let err = bad.parse::<NetworkAddress>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "error for {bad:?} should quote it: {err}");
        }
    }

    #[test]
    fn namespaced_hostname_forms() {
        let n: NamespacedHostname = "default/example.com".parse().unwrap();
        assert_eq!((&*n.namespace, &*n.hostname), ("default", "example.com"));
        assert_eq!(n.to_string(), "default/example.com");
        for bad in ["example.com", "/example.com", "default/", "a/b/c"] {
            assert!(bad.parse::<NamespacedHostname>().is_err(), "{bad:?} should be rejected");
        }
    }
}
