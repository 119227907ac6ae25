//! Checks the policy part of a local config file: every policy follows the model's rules and
//! has a unique `namespace/name`; `namespaces` entries are well formed; and the `mtls`
//! shorthand is turned into what istiod would send, the STRICT policy
//! (`istio-system/istio_converted_static_strict`) listed in each STRICT workload's
//! `authorizationPolicies`.
//!
//! A workload may list a policy key the file does not define (Istio's ztunnel skips such keys
//! until the policy arrives): that is reported as a warning, not a rejection.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::checks::{Rejection, reject};
use super::local_format::{NamespaceEntry, WorkloadEntry};
use super::validate::{required, workload_label};
use super::workload::Workload;
use crate::policy::{Authorization, MtlsMode, PolicyKey, static_strict_key, static_strict_policy};

/// `policies[2] (policy "ns/name")`, falling back to the bare index.
pub(super) fn policy_label(index: usize, namespace: Option<&str>, name: Option<&str>) -> String {
    match (namespace.filter(|s| !s.is_empty()), name.filter(|s| !s.is_empty())) {
        (Some(ns), Some(name)) => format!("policies[{index}] (policy \"{ns}/{name}\")"),
        (None, Some(name)) => format!("policies[{index}] (name {name:?})"),
        _ => format!("policies[{index}]"),
    }
}

/// `namespaces[0] (name "shop")`.
pub(super) fn namespace_label(index: usize, name: Option<&str>) -> String {
    match name.filter(|s| !s.is_empty()) {
        Some(name) => format!("namespaces[{index}] (name {name:?})"),
        None => format!("namespaces[{index}]"),
    }
}

pub(super) fn check_policies(policies: &[Authorization]) -> Result<(), Rejection> {
    let mut keys: HashMap<PolicyKey, String> = HashMap::new();
    for (i, p) in policies.iter().enumerate() {
        let label = policy_label(i, Some(&p.namespace), Some(&p.name));
        p.check().map_err(|e| reject(&label, e.field, e.problem.to_string()))?;
        match keys.entry(p.key()) {
            Entry::Occupied(first) => {
                return Err(reject(
                    &label,
                    "name",
                    format!("policy \"{}\" is already defined by {}", first.key(), first.get()),
                ));
            }
            Entry::Vacant(v) => {
                v.insert(label);
            }
        }
    }
    Ok(())
}

/// The mTLS mode of each namespace that sets one.
pub(super) fn check_namespaces(entries: &[NamespaceEntry]) -> Result<HashMap<String, MtlsMode>, Rejection> {
    let mut out = HashMap::new();
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (i, ns) in entries.iter().enumerate() {
        let label = namespace_label(i, ns.name.as_deref());
        let name = required(&label, "name", &ns.name)?;
        if name.contains('/') {
            return Err(reject(&label, "name", format!("{name:?} must not contain '/'")));
        }
        if let Some(first) = seen.insert(name, label.clone()) {
            return Err(reject(&label, "name", format!("namespace {name:?} is already listed by {first}")));
        }
        if let Some(mode) = ns.mtls {
            out.insert(name.to_string(), mode);
        }
    }
    Ok(out)
}

/// Lists the STRICT policy on every workload whose effective mode (its own, else its
/// namespace's, else PERMISSIVE) is STRICT, and adds the policy itself unless the file
/// defines one under that key. Returns warnings for listed keys no policy defines.
pub(super) fn apply_mtls(
    entries: &[WorkloadEntry],
    workloads: &mut [Workload],
    namespaces: &HashMap<String, MtlsMode>,
    policies: &mut Vec<Authorization>,
) -> Vec<String> {
    let strict = static_strict_key();
    let mut any_strict = false;
    for (w, entry) in workloads.iter_mut().zip(entries) {
        let mode = entry.mtls.or_else(|| namespaces.get(&*w.namespace).copied()).unwrap_or_default();
        if mode == MtlsMode::Strict {
            any_strict = true;
            if !w.authorization_policies.iter().any(|k| **k == *strict.as_str()) {
                w.authorization_policies.push(strict.as_str().into());
            }
        }
    }
    if any_strict && !policies.iter().any(|p| p.key() == strict) {
        policies.push(static_strict_policy());
    }
    let defined: HashMap<PolicyKey, ()> = policies.iter().map(|p| (p.key(), ())).collect();
    let mut warnings = Vec::new();
    for (i, (w, entry)) in workloads.iter().zip(entries).enumerate() {
        for (j, key) in w.authorization_policies.iter().enumerate() {
            if !defined.contains_key(&**key) {
                warnings.push(format!(
                    "{}: authorizationPolicies[{j}]: no policy {key:?} in this file; it is skipped until one is defined",
                    workload_label(i, entry.uid.as_deref(), entry.name.as_deref())
                ));
            }
        }
    }
    warnings
}
