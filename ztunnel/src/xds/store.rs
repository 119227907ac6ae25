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
//!
//! A policy holding content this proxy cannot evaluate is not rejected: it is kept, enforced
//! fail closed (see `convert`), and logged at warn each time it arrives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;
use tracing::warn;

use super::convert::{AddressEntry, Defaults, Named, Policy, ResourceError};
use super::proto::{discovery, workload as pb};
use crate::state::{NamespacedHostname, ProxyState, SharedState};
use crate::types::WorkloadUid;

pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";
pub const AUTHORIZATION_TYPE: &str = "type.googleapis.com/istio.security.Authorization";
/// The types subscribed to, in the order of the initial requests.
pub const TYPES: [&str; 2] = [ADDRESS_TYPE, AUTHORIZATION_TYPE];

struct Versioned<T> {
    version: Box<str>,
    value: T,
}

/// What an Address resource (other than a workload named by its uid) became in the state.
#[derive(PartialEq, Eq)]
enum Held {
    /// A workload with another uid than the resource name.
    Workload(WorkloadUid),
    Service(NamespacedHostname),
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
    /// Workloads named by their uid, as istiod names them: name -> version. Kept apart from
    /// the other Address resources because there is one per workload, and this way an entry
    /// is 32 bytes (the name shares the workload's uid text).
    workload_versions: HashMap<WorkloadUid, Box<str>>,
    /// Every other Address resource: services, and workloads named otherwise.
    other_addresses: HashMap<Arc<str>, Versioned<Held>>,
    /// How many of `other_addresses` are workloads.
    renamed_workloads: usize,
    policies: BTreeMap<String, Versioned<Policy>>,
}

impl XdsStore {
    pub(crate) fn new(state: SharedState, defaults: Defaults) -> XdsStore {
        let working = ProxyState::empty(state.local_network());
        XdsStore {
            defaults,
            state,
            working,
            workload_versions: HashMap::new(),
            other_addresses: HashMap::new(),
            renamed_workloads: 0,
            policies: BTreeMap::new(),
        }
    }

    /// Known resource names of `type_url` with their versions, for `initial_resource_versions`.
    pub(crate) fn versions(&self, type_url: &str) -> HashMap<String, String> {
        fn of<'a, K: AsRef<str> + 'a, T: 'a>(
            m: impl IntoIterator<Item = (&'a K, &'a Versioned<T>)>,
        ) -> HashMap<String, String> {
            m.into_iter().map(|(k, v)| (k.as_ref().to_string(), v.version.to_string())).collect()
        }
        match type_url {
            ADDRESS_TYPE => {
                let mut all = of(&self.other_addresses);
                all.extend(self.workload_versions.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                all
            }
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
                    self.forget(name);
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
                    let converted = self.body("Authorization", type_url, &r).and_then(|message| {
                        Policy::try_from(Named { name: &r.name, message, defaults: &self.defaults })
                    });
                    match converted {
                        Ok(value) => {
                            report_unevaluated(&r.name, &value);
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
        match entry {
            AddressEntry::Workload { workload, endpoints } if *workload.uid == *name => {
                if self.other_addresses.contains_key(name.as_str()) {
                    self.forget(&name);
                }
                // The name shares the uid's text.
                self.workload_versions.insert(workload.uid.clone(), version.into());
                self.working.upsert_workload(workload, endpoints);
            }
            AddressEntry::Workload { workload, endpoints } => {
                let held = Held::Workload(workload.uid.clone());
                self.forget_unless(&name, &held);
                self.working.upsert_workload(workload, endpoints);
                self.put_other(name.into(), Versioned { version: version.into(), value: held });
            }
            AddressEntry::Service(service) => {
                let held = Held::Service(service.key());
                self.forget_unless(&name, &held);
                self.working.upsert_service(service);
                self.put_other(name.into(), Versioned { version: version.into(), value: held });
            }
        }
    }

    fn put_other(&mut self, name: Arc<str>, held: Versioned<Held>) {
        let added = usize::from(matches!(held.value, Held::Workload(_)));
        let old = self.other_addresses.insert(name, held);
        let replaced = usize::from(matches!(old.map(|v| v.value), Some(Held::Workload(_))));
        self.renamed_workloads = self.renamed_workloads + added - replaced;
    }

    /// Takes out what resource `name` held, unless it is `next` (which replaces it in place).
    fn forget_unless(&mut self, name: &str, next: &Held) {
        if self.other_addresses.get(name).is_none_or(|old| old.value != *next) {
            self.forget(name);
        }
    }

    /// Forgets the name `name`, and takes out of the working state what it became unless
    /// another name still holds the same workload or service (istiod does not do that, but
    /// nothing stops it).
    fn forget(&mut self, name: &str) {
        let held = if self.workload_versions.remove(name).is_some() {
            Held::Workload(name.into())
        } else {
            match self.other_addresses.remove(name).map(|v| v.value) {
                Some(Held::Workload(uid)) => {
                    self.renamed_workloads -= 1;
                    Held::Workload(uid)
                }
                Some(held) => held,
                None => return,
            }
        };
        // Workloads under other names than their uid are rare: look only if there are any.
        let held_elsewhere = match &held {
            Held::Workload(uid) => {
                self.workload_versions.contains_key(uid)
                    || (self.renamed_workloads > 0 && self.other_addresses.values().any(|v| v.value == held))
            }
            Held::Service(_) => self.other_addresses.values().any(|v| v.value == held),
        };
        if held_elsewhere {
            return;
        }
        match held {
            Held::Workload(uid) => self.working.remove_workload(&uid),
            Held::Service(key) => self.working.remove_service(&key),
        }
    }

    fn decode<M: Message + Default>(
        &self,
        kind: &'static str,
        type_url: &str,
        r: &discovery::Resource,
    ) -> Result<M, ResourceError> {
        let body = self.body(kind, type_url, r)?;
        M::decode(body).map_err(|e| ResourceError {
            kind,
            name: r.name.clone(),
            field: None,
            reason: format!("cannot decode: {e}"),
        })
    }

    /// The encoded message of `r`, once its name and type are checked.
    fn body<'r>(
        &self,
        kind: &'static str,
        type_url: &str,
        r: &'r discovery::Resource,
    ) -> Result<&'r [u8], ResourceError> {
        let error = |field: &str, reason: String| ResourceError {
            kind,
            name: r.name.clone(),
            field: Some(field.to_string()),
            reason,
        };
        if r.name.is_empty() {
            return Err(error("name", "resource has no name".into()));
        }
        let any = r.resource.as_ref().ok_or_else(|| error("resource", "resource body is missing".into()))?;
        if !any.type_url.is_empty() && any.type_url != type_url {
            return Err(error("resource.type_url", format!("is {:?} in a {type_url} response", any.type_url)));
        }
        Ok(any.value.as_slice())
    }
}

/// A policy kept with content it cannot evaluate is enforced fail closed; say so each time
/// istiod sends it.
fn report_unevaluated(name: &str, policy: &Policy) {
    let unevaluated = &policy.authorization.unevaluated;
    if unevaluated.is_empty() {
        return;
    }
    let details: Vec<String> = unevaluated.iter().map(ToString::to_string).collect();
    warn!(
        policy = name,
        action = ?policy.authorization.action,
        details = %details.join("; "),
        "authorization policy has content this proxy cannot evaluate; enforcing it fail closed"
    );
}
