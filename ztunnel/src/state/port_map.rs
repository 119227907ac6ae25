//! [`PortMap`]: an endpoint's own service port -> target port mapping. Almost always one or
//! two pairs, so it is a boxed sorted slice (no allocation when empty, four bytes a pair),
//! not a `BTreeMap` node sized for eleven.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortMap(Box<[(u16, u16)]>);

impl PortMap {
    /// The target port of service port `port`, if mapped.
    pub fn get(&self, port: &u16) -> Option<&u16> {
        let i = self.0.binary_search_by_key(port, |(p, _)| *p).ok()?;
        Some(&self.0[i].1)
    }

    /// Target ports, in service port order.
    pub fn values(&self) -> impl Iterator<Item = &u16> {
        self.0.iter().map(|(_, t)| t)
    }

    /// `(service port, target port)` pairs, in service port order.
    pub fn iter(&self) -> impl Iterator<Item = (&u16, &u16)> {
        self.0.iter().map(|(p, t)| (p, t))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeMap<u16, u16>> for PortMap {
    fn from(ports: BTreeMap<u16, u16>) -> PortMap {
        PortMap(ports.into_iter().collect())
    }
}

impl From<&BTreeMap<u16, u16>> for PortMap {
    fn from(ports: &BTreeMap<u16, u16>) -> PortMap {
        PortMap(ports.iter().map(|(p, t)| (*p, *t)).collect())
    }
}

/// Later pairs win for a repeated service port, as in a map.
impl<const N: usize> From<[(u16, u16); N]> for PortMap {
    fn from(pairs: [(u16, u16); N]) -> PortMap {
        PortMap::from(BTreeMap::from(pairs))
    }
}

impl<'a> IntoIterator for &'a PortMap {
    type Item = (&'a u16, &'a u16);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (u16, u16)>, fn(&(u16, u16)) -> (&u16, &u16)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(p, t)| (p, t))
    }
}

/// Like a map's: panics if `port` is not mapped.
impl std::ops::Index<&u16> for PortMap {
    type Output = u16;

    fn index(&self, port: &u16) -> &u16 {
        self.get(port).unwrap_or_else(|| panic!("service port {port} is not mapped"))
    }
}

/// As a map from service port to target port, as `/config_dump` has always shown it.
impl Serialize for PortMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_sorted_map() {
        let ports = PortMap::from([(443, 8443), (80, 8080), (80, 9090)]);
        assert_eq!(ports.iter().collect::<Vec<_>>(), [(&80, &9090), (&443, &8443)]);
        assert_eq!((ports.get(&443), ports.get(&81), ports[&80]), (Some(&8443), None, 9090));
        assert_eq!(ports.values().copied().collect::<Vec<_>>(), [9090, 8443]);
        assert_eq!(serde_json::to_string(&ports).unwrap(), r#"{"80":9090,"443":8443}"#);
        assert!(PortMap::default().is_empty() && ports.len() == 2);
    }
}
