//! The resources istiod sent, by type and name with their versions, and their publication
//! into [`SharedState`]: every response becomes exactly one new state snapshot.
//!
//! The store keeps a working [`ProxyState`] and changes only what a response changes: each
//! converted resource is put into (or taken out of) the working copy's indexes, and a clone
//! of it is published. The converted resources live only there; the store itself remembers
//! per resource name just its version and what it became (a workload uid or a service key).
//!
//! A resource that fails to decode or convert is reported and left out; the previous version
//! of that resource (if any) stays, and the rest of the response applies. Removals of names
//! never seen are ignored, as the Delta xDS protocol allows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;

use super::convert::{AddressEntry, Defaults, Named, Policy, ResourceError};
use super::proto::{discovery, security, workload as pb};
use crate::state::{NamespacedHostname, ProxyState, SharedState};

pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";
pub const AUTHORIZATION_TYPE: &str = "type.googleapis.com/istio.security.Authorization";
/// The types subscribed to, in the order of the initial requests.
pub const TYPES: [&str; 2] = [ADDRESS_TYPE, AUTHORIZATION_TYPE];

struct Versioned<T> {
    version: Box<str>,
    value: T,
}

/// What an Address resource became in the state (kept small: one per workload).
#[derive(PartialEq, Eq)]
enum Held {
    /// A workload whose uid is the resource name, as istiod names workloads.
    WorkloadNamedByUid,
    /// Boxed, like the service key, so a `Held` is two words.
    Workload(Box<Arc<str>>),
    Service(Box<NamespacedHostname>),
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
    /// The state being changed; a clone of it is the published snapshot.
    working: ProxyState,
    addresses: HashMap<Arc<str>, Versioned<Held>>,
    policies: BTreeMap<String, Versioned<Policy>>,
}

impl XdsStore {
    pub(crate) fn new(state: SharedState, defaults: Defaults) -> XdsStore {
        let working = ProxyState::empty(state.local_network());
        XdsStore { defaults, state, working, addresses: HashMap::new(), policies: BTreeMap::new() }
    }

    /// Known resource names of `type_url` with their versions, for `initial_resource_versions`.
    pub(crate) fn versions(&self, type_url: &str) -> HashMap<String, String> {
        fn of<'a, K: AsRef<str> + 'a, T: 'a>(
            m: impl IntoIterator<Item = (&'a K, &'a Versioned<T>)>,
        ) -> HashMap<String, String> {
            m.into_iter().map(|(k, v)| (k.as_ref().to_string(), v.version.to_string())).collect()
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
                    if let Some(held) = self.addresses.remove(name.as_str()) {
                        self.forget(name, &held.value);
                    }
                }
                for r in resources {
                    let converted = self.decode::<pb::Address>("Address", type_url, &r).and_then(|message| {
                        AddressEntry::try_from(Named { name: &r.name, message, defaults: &self.defaults })
                    });
                    match converted {
                        Ok(entry) => self.put_address(r.name, r.version, entry),
                        Err(e) => rejected.push(e),
                    }
                }
                self.working.settle();
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
                            self.policies.insert(r.name, Versioned { version: r.version.into(), value });
                        }
                        Err(e) => rejected.push(e),
                    }
                }
                let policies = self.policies.values().map(|p| p.value.authorization.clone()).collect();
                self.working.set_policies(policies);
            }
            _ => return None,
        }
        self.defaults.prune_strings();
        let generation = self.state.replace(self.working.clone());
        Some(Applied { rejected, generation })
    }

    /// Puts a converted Address into the working state, replacing what its name held.
    fn put_address(&mut self, name: String, version: String, entry: AddressEntry) {
        let (name, held) = match entry {
            AddressEntry::Workload { workload, endpoints } => {
                // istiod names workloads by uid: share the text.
                let (name, held): (Arc<str>, _) = if *workload.uid == *name {
                    (workload.uid.clone(), Held::WorkloadNamedByUid)
                } else {
                    (name.into(), Held::Workload(Box::new(workload.uid.clone())))
                };
                self.forget_if_other(&name, &held);
                self.working.upsert_workload(workload, endpoints);
                (name, held)
            }
            AddressEntry::Service(service) => {
                let name: Arc<str> = name.into();
                let held = Held::Service(Box::new(service.key()));
                self.forget_if_other(&name, &held);
                self.working.upsert_service(service);
                (name, held)
            }
        };
        self.addresses.insert(name, Versioned { version: version.into(), value: held });
    }

    /// Takes out what `name` held if the new version of it becomes something else.
    fn forget_if_other(&mut self, name: &str, next: &Held) {
        let Some(old) = self.addresses.get(name) else {
            return;
        };
        if old.value != *next
            && let Some(old) = self.addresses.remove(name)
        {
            self.forget(name, &old.value);
        }
    }

    /// Takes out of the working state what resource `name` became.
    fn forget(&mut self, name: &str, held: &Held) {
        match held {
            Held::WorkloadNamedByUid => self.working.remove_workload(name),
            Held::Workload(uid) => self.working.remove_workload(uid),
            Held::Service(key) => self.working.remove_service(key),
        }
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
}
