//! [`PolicyStore`]: every known policy, indexed by key and by the workloads it applies to, and
//! the decision procedure over them.
//!
//! Which policies apply to a destination workload (Istio's rule): the ones scoped to its
//! namespace, the global ones, and the ones the workload lists by key (`authorizationPolicies`,
//! which is how `WorkloadSelector` policies, including the STRICT mTLS one, reach it). Listed
//! keys that name no known policy are skipped, as Istio's ztunnel does while istiod has not
//! sent the policy yet.
//!
//! The decision, in Istio's order: dry-run policies never change the outcome; any matching
//! DENY policy denies; with no ALLOW policy the connection is allowed; a matching ALLOW policy
//! allows; otherwise it is denied. Policies are kept in separate lists per action and dry-run
//! flag so a decision stops at the first matching DENY without looking at ALLOW policies.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::decision::{Decision, Reason};
use super::matching::{Connection, Facts};
use super::model::{Action, Authorization, PolicyKey, Scope};

#[derive(Debug)]
struct Entry {
    key: PolicyKey,
    policy: Authorization,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deny,
    Allow,
    DryRunDeny,
    DryRunAllow,
}

impl Kind {
    fn of(policy: &Authorization) -> Kind {
        match (policy.action, policy.dry_run) {
            (Action::Deny, false) => Kind::Deny,
            (Action::Allow, false) => Kind::Allow,
            (Action::Deny, true) => Kind::DryRunDeny,
            (Action::Allow, true) => Kind::DryRunAllow,
        }
    }
}

/// Policies of one scope (a namespace, or the global ones), split by [`Kind`].
#[derive(Debug, Default)]
struct Buckets {
    lists: [Vec<Arc<Entry>>; 4],
}

impl Buckets {
    fn list(&self, kind: Kind) -> &[Arc<Entry>] {
        &self.lists[kind as usize]
    }

    fn push(&mut self, entry: Arc<Entry>) {
        self.lists[Kind::of(&entry.policy) as usize].push(entry);
    }
}

/// The destination workload, as far as choosing its policies goes.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub namespace: &'a str,
    /// Keys (`namespace/name`) of the policies the workload lists.
    pub policies: &'a [Arc<str>],
}

/// Every known policy, immutable once built.
#[derive(Debug, Default)]
pub struct PolicyStore {
    ordered: Vec<Arc<Entry>>,
    by_key: HashMap<PolicyKey, Arc<Entry>>,
    global: Buckets,
    by_namespace: HashMap<Arc<str>, Buckets>,
}

impl PolicyStore {
    /// Indexes `policies`. A key given twice keeps the later policy (as an xDS update would).
    pub fn new(policies: impl IntoIterator<Item = Authorization>) -> PolicyStore {
        let mut store = PolicyStore::default();
        let entries: Vec<Arc<Entry>> =
            policies.into_iter().map(|policy| Arc::new(Entry { key: policy.key(), policy })).collect();
        for entry in &entries {
            store.by_key.insert(entry.key.clone(), entry.clone());
        }
        for entry in entries {
            if !Arc::ptr_eq(&store.by_key[&entry.key], &entry) {
                continue;
            }
            match entry.policy.scope {
                Scope::Global => store.global.push(entry.clone()),
                Scope::Namespace => {
                    store.by_namespace.entry(entry.policy.namespace.clone()).or_default().push(entry.clone())
                }
                Scope::WorkloadSelector => {}
            }
            store.ordered.push(entry);
        }
        store
    }

    pub fn get(&self, key: &str) -> Option<&Authorization> {
        self.by_key.get(key).map(|e| &e.policy)
    }

    /// Every policy, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Authorization> {
        self.ordered.iter().map(|e| &e.policy)
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The policies of `kind` that apply to a workload in `namespace` listing `listed`.
    fn applicable<'s>(
        &'s self,
        namespace: &'s str,
        listed: &'s [Arc<str>],
        kind: Kind,
    ) -> impl Iterator<Item = &'s Entry> {
        let in_namespace = self.by_namespace.get(namespace).map_or(&[][..], |b| b.list(kind));
        // A listed policy that also applies by scope is already covered by the lists above.
        let covered = move |p: &Authorization| match p.scope {
            Scope::Global => true,
            Scope::Namespace => *p.namespace == *namespace,
            Scope::WorkloadSelector => false,
        };
        let listed = listed
            .iter()
            .filter_map(|key| self.by_key.get(&**key))
            .filter(move |e| Kind::of(&e.policy) == kind && !covered(&e.policy));
        in_namespace.iter().chain(self.global.list(kind)).chain(listed).map(|e| &**e)
    }

    /// Authorizes `conn` to `target` (see the module docs for the procedure).
    pub fn evaluate(&self, target: &Target<'_>, conn: &Connection<'_>) -> Decision {
        let facts = Facts::new(conn);
        let (namespace, listed) = (target.namespace, target.policies);
        let first_match = |kind| {
            self.applicable(namespace, listed, kind).find(|e| e.policy.matches_facts(&facts)).map(|e| e.key.clone())
        };
        let exists = |kind| self.applicable(namespace, listed, kind).next().is_some();
        let dry_run_applies = exists(Kind::DryRunDeny) || exists(Kind::DryRunAllow);

        if let Some(key) = first_match(Kind::Deny) {
            let reason = Reason::Denied(key);
            return Decision { dry_run: dry_run_applies.then(|| reason.clone()), reason };
        }
        let allow_exists = exists(Kind::Allow);
        let reason = match allow_exists.then(|| first_match(Kind::Allow)) {
            None => Reason::NoAllowPolicy,
            Some(Some(key)) => Reason::Allowed(key),
            Some(None) => Reason::NotAllowed,
        };
        if !dry_run_applies {
            return Decision { reason, dry_run: None };
        }
        let dry_run = if let Some(key) = first_match(Kind::DryRunDeny) {
            Reason::Denied(key)
        } else if let Reason::Allowed(key) = &reason {
            Reason::Allowed(key.clone())
        } else if let Some(key) = first_match(Kind::DryRunAllow) {
            Reason::Allowed(key)
        } else if allow_exists || exists(Kind::DryRunAllow) {
            Reason::NotAllowed
        } else {
            Reason::NoAllowPolicy
        };
        Decision { reason, dry_run: Some(dry_run) }
    }
}

impl Serialize for PolicyStore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}
