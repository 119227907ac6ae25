//! The policy model: one [`Authorization`] is a list of [`Rule`]s (OR), each a list of
//! [`Clause`]s (AND), each a list of [`Match`]es (OR); inside a match every field that is set
//! must hold (AND), and inside a field any value may match (OR), while a `not*` field holds
//! when none of its values match.
//!
//! Field names and enum spellings are Istio ztunnel's (`rbac.rs`), so its local config files
//! and config dumps read the same. [`Authorization::check`] holds the rules a policy must
//! follow beyond its syntax; it names the offending field.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::string_match::StringMatch;
use super::unevaluated::Unevaluated;

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(alias = "ALLOW")]
    Allow,
    #[serde(alias = "DENY")]
    Deny,
}

/// Which workloads a policy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every workload in the mesh (policies in Istio's root namespace).
    #[serde(alias = "GLOBAL")]
    Global,
    /// Every workload in the policy's namespace.
    #[serde(alias = "NAMESPACE")]
    Namespace,
    /// Only workloads that list the policy in their `authorizationPolicies`.
    #[serde(alias = "WORKLOAD_SELECTOR")]
    WorkloadSelector,
}

/// An authorization policy (`istio.security.Authorization`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub scope: Scope,
    pub action: Action,
    /// OR-ed. A policy without rules matches nothing (an ALLOW policy without rules is
    /// Istio's "allow nothing").
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Evaluated and reported, never enforced.
    #[serde(default)]
    pub dry_run: bool,
    /// Content istiod sent that this proxy cannot evaluate, and how `rules` were made to fail
    /// closed in its place. Shown in config dumps; a config file cannot set it.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub unevaluated: Vec<Unevaluated>,
}

/// Clauses, AND-ed (Istio's `from`, `to` and `when` become one clause each). A rule without
/// clauses matches every connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rule {
    pub clauses: Vec<Clause>,
}

/// Matches, OR-ed. A clause without matches holds for every connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Clause {
    pub matches: Vec<Match>,
}

/// Conditions on one connection. Fields that are set are AND-ed; values inside a field are
/// OR-ed; a `not*` field holds when none of its values match. A match with no field set never
/// matches (as in Istio: it is skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Namespace of the peer's verified identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    /// The peer's identity without `spiffe://`: `td/ns/NS/sa/SA`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
}

/// A service account: both the namespace and the name must equal the peer identity's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    pub namespace: Arc<str>,
    pub service_account: Arc<str>,
}

/// `namespace/name`: how workloads refer to policies and how decisions name them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey(Arc<str>);

impl PolicyKey {
    pub fn new(namespace: &str, name: &str) -> PolicyKey {
        PolicyKey(format!("{namespace}/{name}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for PolicyKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A policy that breaks a rule of the model, naming the field (`rules[0][1][0].destinationPorts[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PolicyError {
    pub field: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("{0:?} must not contain '/' (policies are referred to as \"namespace/name\")")]
    Slash(String),
    #[error("port 0 never matches; ports must be in 1..65535")]
    PortZero,
    #[error("an empty {0} string is ambiguous; use presence to match any value")]
    EmptyString(&'static str),
}

impl Authorization {
    pub fn key(&self) -> PolicyKey {
        PolicyKey::new(&self.namespace, &self.name)
    }

    /// Checks what the syntax cannot: names present and usable in keys, ports in range, no
    /// empty match strings.
    pub fn check(&self) -> Result<(), PolicyError> {
        let fail = |field: String, problem| Err(PolicyError { field, problem });
        for (field, value) in [("name", &self.name), ("namespace", &self.namespace)] {
            if value.is_empty() {
                return fail(field.into(), Problem::Empty);
            }
            if value.contains('/') {
                return fail(field.into(), Problem::Slash(value.to_string()));
            }
        }
        for (r, rule) in self.rules.iter().enumerate() {
            for (c, clause) in rule.clauses.iter().enumerate() {
                for (m, one) in clause.matches.iter().enumerate() {
                    one.check().map_err(|mut e| {
                        e.field = format!("rules[{r}][{c}][{m}].{}", e.field);
                        e
                    })?;
                }
            }
        }
        Ok(())
    }
}

impl Match {
    /// True when no field is set (such a match never matches).
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.not_namespaces.is_empty()
            && self.service_accounts.is_empty()
            && self.not_service_accounts.is_empty()
            && self.principals.is_empty()
            && self.not_principals.is_empty()
            && self.source_ips.is_empty()
            && self.not_source_ips.is_empty()
            && self.destination_ips.is_empty()
            && self.not_destination_ips.is_empty()
            && self.destination_ports.is_empty()
            && self.not_destination_ports.is_empty()
    }

    fn check(&self) -> Result<(), PolicyError> {
        let strings = [
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
        ];
        for (field, list) in strings {
            for (i, m) in list.iter().enumerate() {
                if m.value().is_some_and(str::is_empty) {
                    return Err(PolicyError {
                        field: format!("{field}[{i}]"),
                        problem: Problem::EmptyString(m.kind()),
                    });
                }
            }
        }
        for (field, list) in
            [("serviceAccounts", &self.service_accounts), ("notServiceAccounts", &self.not_service_accounts)]
        {
            for (i, sa) in list.iter().enumerate() {
                for (part, value) in [("namespace", &sa.namespace), ("serviceAccount", &sa.service_account)] {
                    if value.is_empty() {
                        return Err(PolicyError { field: format!("{field}[{i}].{part}"), problem: Problem::Empty });
                    }
                }
            }
        }
        for (field, list) in
            [("destinationPorts", &self.destination_ports), ("notDestinationPorts", &self.not_destination_ports)]
        {
            if let Some(i) = list.iter().position(|p| *p == 0) {
                return Err(PolicyError { field: format!("{field}[{i}]"), problem: Problem::PortZero });
            }
        }
        Ok(())
    }
}
