//! `istio.security.Authorization` -> a checked [`crate::policy::Authorization`], the model the
//! local config file's `policies` use and the proxy enforces.
//!
//! Every field we know is checked here (enum values, match kinds, CIDR bytes and prefix
//! lengths, port ranges), so a policy that reaches state is well-formed; a malformed one is
//! rejected naming the field.
//!
//! Content we cannot evaluate is different: fields our proto does not declare (a newer
//! istiod's, found by [`super::wire`]), including Istio's opaque `extensions`. Such a policy
//! is kept, never dropped or rejected (either would leave a DENY unenforced, or an older,
//! more permissive version in force), and made to fail closed. The element holding the
//! content (the whole policy, a rule, a clause or a match) gets the stricter outcome, whatever
//! the content would have meant: in a DENY policy it holds for every connection, so the DENY
//! applies to all the traffic the rest of its rule selects; in an ALLOW policy it holds for
//! none, so the rule containing it never allows. This is written into the rules themselves
//! (a clause without matches always holds, a rule without clauses matches everything, an
//! ALLOW without rules allows nothing), so evaluation needs no special case, and listed in
//! [`Authorization::unevaluated`] for the config dump and the log. Istio's ztunnel decodes
//! `extensions` and ignores them, and istiod itself omits the HTTP-only parts of a policy in
//! the same direction: DENY without them (stricter), ALLOW rules holding them dropped.

use std::collections::BTreeMap;

use prost::Message;

use super::wire::{self, Found, Place};
use super::{Blame, Named, ResourceError, ip_from_bytes, known};
use crate::policy::{
    Action, Authorization, Cidr, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch, TreatedAs, Unevaluated,
};
use crate::xds::proto::security as pb;

/// A checked authorization policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) authorization: Authorization,
}

/// Decodes the encoded resource, finds the content our proto does not declare, converts.
impl TryFrom<Named<'_, &[u8]>> for Policy {
    type Error = ResourceError;

    fn try_from(r: Named<'_, &[u8]>) -> Result<Policy, ResourceError> {
        let blame = Blame::new("Authorization", r.name, "");
        let message = pb::Authorization::decode(r.message).map_err(|e| blame.whole(format!("cannot decode: {e}")))?;
        convert(blame, &message, &wire::unknown_fields(r.message))
    }
}

fn convert(blame: Blame<'_>, a: &pb::Authorization, unknown: &BTreeMap<Place, Found>) -> Result<Policy, ResourceError> {
    if a.name.is_empty() {
        return Err(blame.field("name", "must not be empty"));
    }
    let scope = match known(blame, "scope", a.scope)? {
        pb::Scope::Global => Scope::Global,
        pb::Scope::Namespace => Scope::Namespace,
        pb::Scope::WorkloadSelector => Scope::WorkloadSelector,
    };
    if scope != Scope::Global && a.namespace.is_empty() {
        return Err(blame.field("namespace", format!("must be set for scope {scope:?}")));
    }
    let action = match known(blame, "action", a.action)? {
        pb::Action::Allow => Action::Allow,
        pb::Action::Deny => Action::Deny,
    };
    let treated_as = TreatedAs::for_action(action);
    let unevaluated = unknown
        .iter()
        .map(|(place, found)| Unevaluated { at: place.to_string(), content: found.describe(*place), treated_as })
        .collect();
    let unevaluable = |place: &Place| unknown.contains_key(place);
    let rules = if unevaluable(&Place::Policy) {
        match action {
            Action::Deny => vec![Rule::default()],
            Action::Allow => Vec::new(),
        }
    } else {
        let mut rules = Vec::with_capacity(a.rules.len());
        for (i, rule) in a.rules.iter().enumerate() {
            if let Some(rule) = convert_rule(blame, action, i, rule, &unevaluable)? {
                rules.push(rule);
            }
        }
        rules
    };
    let authorization = Authorization {
        name: a.name.as_str().into(),
        namespace: a.namespace.as_str().into(),
        scope,
        action,
        rules,
        dry_run: a.dry_run,
        unevaluated,
    };
    Ok(Policy { authorization })
}

/// Rule `i`, or `None` for an ALLOW rule that can never match.
fn convert_rule(
    blame: Blame<'_>,
    action: Action,
    i: usize,
    rule: &pb::Rule,
    unevaluable: &impl Fn(&Place) -> bool,
) -> Result<Option<Rule>, ResourceError> {
    if unevaluable(&Place::Rule(i)) {
        return Ok(match action {
            Action::Deny => Some(Rule::default()),
            Action::Allow => None,
        });
    }
    let mut clauses = Vec::with_capacity(rule.clauses.len());
    for (j, clause) in rule.clauses.iter().enumerate() {
        let whole_clause = unevaluable(&Place::Clause(i, j));
        let mut matches = Vec::with_capacity(clause.matches.len());
        let mut skipped = false;
        for (k, m) in clause.matches.iter().enumerate() {
            if whole_clause || unevaluable(&Place::Match(i, j, k)) {
                skipped = true;
                continue;
            }
            matches.push(convert_match(blame, &format!("rules[{i}].clauses[{j}].matches[{k}]"), m)?);
        }
        match action {
            // The clause holds as soon as one of its matches does: make it hold always.
            Action::Deny if skipped || whole_clause => matches.clear(),
            // What is left may still match; a clause with nothing left never does.
            Action::Allow if whole_clause || (skipped && matches.is_empty()) => return Ok(None),
            _ => {}
        }
        clauses.push(Clause { matches });
    }
    Ok(Some(Rule { clauses }))
}

fn convert_match(blame: Blame<'_>, at: &str, m: &pb::Match) -> Result<Match, ResourceError> {
    let strings = |name: &str, list: &[pb::StringMatch]| -> Result<Vec<StringMatch>, ResourceError> {
        list.iter().enumerate().map(|(n, s)| string_match(blame, &format!("{at}.{name}[{n}]"), s)).collect()
    };
    let cidrs = |name: &str, list: &[pb::Address]| -> Result<Vec<Cidr>, ResourceError> {
        list.iter().enumerate().map(|(n, a)| cidr(blame, &format!("{at}.{name}[{n}]"), a)).collect()
    };
    let ports = |name: &str, list: &[u32]| -> Result<Vec<u16>, ResourceError> {
        list.iter()
            .enumerate()
            .map(|(n, &port)| match u16::try_from(port) {
                Ok(p) if p != 0 => Ok(p),
                _ => Err(blame.field(format!("{at}.{name}[{n}]"), format!("port {port} is not in 1..65535"))),
            })
            .collect()
    };
    // Compared exactly, as istiod writes them (it fills in the policy's namespace when the
    // AuthorizationPolicy names a bare service account).
    let accounts = |list: &[pb::ServiceAccountMatch]| -> Vec<ServiceAccountMatch> {
        list.iter()
            .map(|s| ServiceAccountMatch {
                namespace: s.namespace.as_str().into(),
                service_account: s.service_account.as_str().into(),
            })
            .collect()
    };
    Ok(Match {
        namespaces: strings("namespaces", &m.namespaces)?,
        not_namespaces: strings("not_namespaces", &m.not_namespaces)?,
        service_accounts: accounts(&m.service_accounts),
        not_service_accounts: accounts(&m.not_service_accounts),
        principals: strings("principals", &m.principals)?,
        not_principals: strings("not_principals", &m.not_principals)?,
        source_ips: cidrs("source_ips", &m.source_ips)?,
        not_source_ips: cidrs("not_source_ips", &m.not_source_ips)?,
        destination_ips: cidrs("destination_ips", &m.destination_ips)?,
        not_destination_ips: cidrs("not_destination_ips", &m.not_destination_ips)?,
        destination_ports: ports("destination_ports", &m.destination_ports)?,
        not_destination_ports: ports("not_destination_ports", &m.not_destination_ports)?,
    })
}

fn string_match(blame: Blame<'_>, field: &str, s: &pb::StringMatch) -> Result<StringMatch, ResourceError> {
    use pb::string_match::MatchType;
    Ok(match &s.match_type {
        Some(MatchType::Exact(v)) => StringMatch::Exact(v.as_str().into()),
        Some(MatchType::Prefix(v)) => StringMatch::Prefix(v.as_str().into()),
        Some(MatchType::Suffix(v)) => StringMatch::Suffix(v.as_str().into()),
        Some(MatchType::Presence(_)) => StringMatch::Presence,
        None => return Err(blame.field(field, "no match type (exact, prefix, suffix or presence) is set")),
    })
}

/// `address/length` with the prefix length checked against the address family.
fn cidr(blame: Blame<'_>, field: &str, a: &pb::Address) -> Result<Cidr, ResourceError> {
    let ip = ip_from_bytes(blame, format_args!("{field}.address"), &a.address)?;
    Cidr::new(ip, a.length).map_err(|_| {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        blame.field(format!("{field}.length"), format!("prefix length {} exceeds {max} for {ip}", a.length))
    })
}
