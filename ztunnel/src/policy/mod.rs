//! L4 authorization with Istio's semantics: the policy model, matching one connection against
//! one policy, and the decision over every policy that applies to a destination workload.
//!
//! The model mirrors `istio.security.Authorization`, the resource istiod sends ztunnels
//! (name, namespace, scope, action, rules -> clauses -> matches, dry run), and serializes
//! exactly like Istio ztunnel's own `Authorization` (camelCase keys, `Allow`/`Deny`,
//! `Global`/`Namespace`/`WorkloadSelector`, string matches as `!Exact v` tags in YAML), so an
//! Istio local config file with `policies` loads unchanged.
//!
//! Converting the xDS resource (the `xds` layer) is a field-for-field `TryFrom`:
//! `rules[i].clauses[j].matches[k]` become [`Rule`] / [`Clause`] / [`Match`], `dry_run` and the
//! service-account matches included; a `StringMatch` whose oneof is unset is an error;
//! `Address { address, length }` becomes a [`Cidr`]; ports arrive as `uint32` and must fit in
//! 1..=65535 (Istio's ztunnel truncates them with `as u16`, we reject instead). Content the
//! resource carries that this build cannot evaluate is written into the rules as the stricter
//! outcome (a DENY element that always holds, an ALLOW element that never does) and noted in
//! [`Authorization::unevaluated`] (see [`Unevaluated`]).
//!
//! Layering: this module is pure (no IO, no clocks, no state). `state` owns which policies
//! exist and hands [`PolicyStore`] a destination [`Target`]; `proxy` supplies the
//! [`Connection`] facts and enforces the [`Decision`].

mod cidr;
mod decision;
mod matching;
mod model;
mod mtls;
mod store;
mod string_match;
mod unevaluated;

#[cfg(test)]
mod decision_tests;
#[cfg(test)]
mod matching_tests;
#[cfg(test)]
mod model_tests;

pub use cidr::{Cidr, CidrError};
pub use decision::{Decision, Reason};
pub use matching::Connection;
pub use model::{
    Action, Authorization, Clause, Match, PolicyError, PolicyKey, Problem, Rule, Scope, ServiceAccountMatch,
};
pub use mtls::{MtlsMode, ROOT_NAMESPACE, STATIC_STRICT_NAME, static_strict_key, static_strict_policy};
pub use store::{PolicyStore, Target};
pub use string_match::StringMatch;
pub use unevaluated::{TreatedAs, Unevaluated};
