//! [`Endpoints`]: a service's endpoints keyed by workload uid, stored as one shared sorted
//! list. A service has a handful to a few thousand endpoints and is read far more often than
//! changed; a sorted list costs no per-entry node overhead (a `BTreeMap` of 15 endpoints takes
//! three nodes sized for 11 each), and clones share it, so a new state snapshot copies a
//! service without copying its endpoints.
//!
//! Data only: which endpoints may take traffic is decided in `store`.

use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::service::Endpoint;
use crate::types::WorkloadUid;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints(Arc<Vec<Endpoint>>);

impl Endpoints {
    fn position(&self, uid: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|e| (*e.workload_uid).cmp(uid))
    }

    pub fn get(&self, uid: &str) -> Option<&Endpoint> {
        self.position(uid).ok().map(|i| &self.0[i])
    }

    pub fn contains_key(&self, uid: &str) -> bool {
        self.position(uid).is_ok()
    }

    /// Adds `endpoint`, replacing the one with the same workload uid; returns that one.
    pub fn insert(&mut self, endpoint: Endpoint) -> Option<Endpoint> {
        match self.position(&endpoint.workload_uid) {
            Ok(i) => Some(std::mem::replace(&mut Arc::make_mut(&mut self.0)[i], endpoint)),
            Err(i) => {
                Arc::make_mut(&mut self.0).insert(i, endpoint);
                None
            }
        }
    }

    /// Adds or replaces `endpoint` unless an equal one is there (then nothing is copied);
    /// returns whether anything changed.
    pub(crate) fn upsert(&mut self, endpoint: Endpoint) -> bool {
        match self.position(&endpoint.workload_uid) {
            Ok(i) if self.0[i] == endpoint => false,
            Ok(i) => {
                Arc::make_mut(&mut self.0)[i] = endpoint;
                true
            }
            Err(i) => {
                Arc::make_mut(&mut self.0).insert(i, endpoint);
                true
            }
        }
    }

    pub fn remove(&mut self, uid: &str) -> Option<Endpoint> {
        let i = self.position(uid).ok()?;
        Some(Arc::make_mut(&mut self.0).remove(i))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Workload uids, in order.
    pub fn keys(&self) -> impl Iterator<Item = &WorkloadUid> {
        self.0.iter().map(|e| &e.workload_uid)
    }

    /// Endpoints, in uid order.
    pub fn values(&self) -> impl Iterator<Item = &Endpoint> {
        self.0.iter()
    }

    /// `(uid, endpoint)` pairs, in uid order.
    pub fn iter(&self) -> impl Iterator<Item = (&WorkloadUid, &Endpoint)> {
        self.into_iter()
    }
}

fn by_uid(e: &Endpoint) -> (&WorkloadUid, &Endpoint) {
    (&e.workload_uid, e)
}

impl<'a> IntoIterator for &'a Endpoints {
    type Item = (&'a WorkloadUid, &'a Endpoint);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, Endpoint>, fn(&Endpoint) -> (&WorkloadUid, &Endpoint)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(by_uid)
    }
}

/// Like a map's: panics if there is no endpoint for the uid.
impl<Q: AsRef<str> + ?Sized> std::ops::Index<&Q> for Endpoints {
    type Output = Endpoint;

    fn index(&self, uid: &Q) -> &Endpoint {
        let uid = uid.as_ref();
        self.get(uid).unwrap_or_else(|| panic!("no endpoint for workload {uid:?}"))
    }
}

/// As a map from workload uid to endpoint, as `/config_dump` has always shown it.
impl Serialize for Endpoints {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HealthStatus, NamespacedHostname};

    fn endpoint(uid: &str, port: u16) -> Endpoint {
        Endpoint {
            workload_uid: uid.into(),
            service_key: NamespacedHostname::new("ns", "web"),
            port: [(80, port)].into(),
            status: HealthStatus::Healthy,
        }
    }

    #[test]
    fn behaves_as_a_map_by_uid() {
        let mut eps = Endpoints::default();
        for uid in ["c", "a", "b"] {
            assert_eq!(eps.insert(endpoint(uid, 1)), None);
        }
        let shared = eps.clone();
        assert_eq!(eps.insert(endpoint("b", 2)).map(|e| e.port[&80]), Some(1));
        assert_eq!(eps.keys().map(|k| &**k).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(eps.get("b").map(|e| e.port[&80]), Some(2));
        assert_eq!(shared.get("b").map(|e| e.port[&80]), Some(1), "clones must not see later changes");
        assert_eq!(eps.remove("a").map(|e| e.workload_uid), Some("a".into()));
        assert!(eps.remove("a").is_none() && !eps.contains_key("a") && eps.len() == 2);
        let json = serde_json::to_value(&eps).unwrap();
        assert_eq!(json["c"]["port"]["80"], 1, "serialized as a map by uid: {json}");
    }
}
