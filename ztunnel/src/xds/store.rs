//! The resources istiod sent, by type and name with their versions, and their publication
//! into [`SharedState`]: every response becomes exactly one new state snapshot.
//!
//! A resource that fails to decode or convert is reported and left out; the previous version
//! of that resource (if any) stays, and the rest of the response applies. Removals of names
//! never seen are ignored, as the Delta xDS protocol allows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;

use super::convert::{AddressEntry, Defaults, Named, Policy, ResourceError};
use super::proto::{discovery, security, workload as pb};
use crate::state::{Endpoint, NamespacedHostname, ProxyState, SharedState};

pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";
pub const AUTHORIZATION_TYPE: &str = "type.googleapis.com/istio.security.Authorization";
/// The types subscribed to, in the order of the initial requests.
pub const TYPES: [&str; 2] = [ADDRESS_TYPE, AUTHORIZATION_TYPE];

struct Versioned<T> {
    version: String,
    value: T,
}

/// What one response did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) rejected: Vec<ResourceError>,
    pub(crate) generation: u64,
}

pub(crate) struct XdsStore {
    defaults: Defaults,
    state: SharedState,
    addresses: BTreeMap<String, Versioned<AddressEntry>>,
    policies: BTreeMap<String, Versioned<Policy>>,
}

impl XdsStore {
    pub(crate) fn new(state: SharedState, defaults: Defaults) -> XdsStore {
        XdsStore { defaults, state, addresses: BTreeMap::new(), policies: BTreeMap::new() }
    }

    /// Known resource names of `type_url` with their versions, for `initial_resource_versions`.
    pub(crate) fn versions(&self, type_url: &str) -> HashMap<String, String> {
        fn of<T>(m: &BTreeMap<String, Versioned<T>>) -> HashMap<String, String> {
            m.iter().map(|(k, v)| (k.clone(), v.version.clone())).collect()
        }
        match type_url {
            ADDRESS_TYPE => of(&self.addresses),
            AUTHORIZATION_TYPE => of(&self.policies),
            _ => HashMap::new(),
        }
    }

    /// Applies one response of `type_url` and publishes the result as one snapshot. `None`
    /// for a type this store does not handle (nothing changes then).
    pub(crate) fn apply(
        &mut self,
        type_url: &str,
        resources: Vec<discovery::Resource>,
        removed: Vec<String>,
    ) -> Option<Applied> {
        let mut rejected = Vec::new();
        match type_url {
            ADDRESS_TYPE => {
                for name in &removed {
                    self.addresses.remove(name);
                }
                for r in resources {
                    match self.decode::<pb::Address>("Address", type_url, &r) {
                        Ok(message) => {
                            let named = Named { name: &r.name, message, defaults: &self.defaults };
                            match AddressEntry::try_from(named) {
                                Ok(value) => {
                                    self.addresses.insert(r.name, Versioned { version: r.version, value });
                                }
                                Err(e) => rejected.push(e),
                            }
                        }
                        Err(e) => rejected.push(e),
                    }
                }
            }
            AUTHORIZATION_TYPE => {
                for name in &removed {
                    self.policies.remove(name);
                }
                for r in resources {
                    let converted =
                        self.decode::<security::Authorization>("Authorization", type_url, &r).and_then(|message| {
                            Policy::try_from(Named { name: &r.name, message, defaults: &self.defaults })
                        });
                    match converted {
                        Ok(value) => {
                            self.policies.insert(r.name, Versioned { version: r.version, value });
                        }
                        Err(e) => rejected.push(e),
                    }
                }
            }
            _ => return None,
        }
        let generation = self.publish();
        Some(Applied { rejected, generation })
    }

    fn decode<M: Message + Default>(
        &self,
        kind: &'static str,
        type_url: &str,
        r: &discovery::Resource,
    ) -> Result<M, ResourceError> {
        let error = |field: Option<&str>, reason: String| ResourceError {
            kind,
            name: r.name.clone(),
            field: field.map(str::to_string),
            reason,
        };
        if r.name.is_empty() {
            return Err(error(Some("name"), "resource has no name".into()));
        }
        let any = r.resource.as_ref().ok_or_else(|| error(Some("resource"), "resource body is missing".into()))?;
        if !any.type_url.is_empty() && any.type_url != type_url {
            return Err(error(Some("resource.type_url"), format!("is {:?} in a {type_url} response", any.type_url)));
        }
        M::decode(any.value.as_slice()).map_err(|e| error(None, format!("cannot decode: {e}")))
    }

    /// Builds a snapshot from every resource held: services get their endpoints from the
    /// workloads that name them.
    fn publish(&self) -> u64 {
        let mut workloads = Vec::new();
        let mut endpoints: HashMap<&NamespacedHostname, Vec<&Endpoint>> = HashMap::new();
        for entry in self.addresses.values() {
            if let AddressEntry::Workload { workload, endpoints: eps } = &entry.value {
                workloads.push(workload.clone());
                for ep in eps {
                    endpoints.entry(&ep.service_key).or_default().push(ep);
                }
            }
        }
        let services = self.addresses.values().filter_map(|entry| match &entry.value {
            AddressEntry::Service(s) => {
                let key = s.key();
                let Some(eps) = endpoints.get(&key) else {
                    return Some(s.clone());
                };
                let mut with = (**s).clone();
                with.endpoints = eps.iter().map(|ep| (ep.workload_uid.clone(), (*ep).clone())).collect();
                Some(Arc::new(with))
            }
            AddressEntry::Workload { .. } => None,
        });
        let policies = self.policies.values().map(|p| p.value.authorization.clone()).collect();
        let next =
            ProxyState::from_parts(workloads, services.collect::<Vec<_>>(), policies, self.state.local_network());
        self.state.replace(next)
    }
}
