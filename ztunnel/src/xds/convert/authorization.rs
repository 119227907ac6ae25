//! `istio.security.Authorization` -> a checked [`crate::policy::Authorization`], the model the
//! local config file's `policies` use and the proxy enforces.
//!
//! Every field is checked here (enum values, match kinds, CIDR bytes and prefix lengths,
//! port ranges), so a policy that reaches state is well-formed. Our proto does not carry
//! Istio's newer `dry_run` and `service_accounts` fields yet: converted policies are enforced
//! (`dry_run: false`) and match no service accounts.

use super::{Blame, Named, ResourceError, ip_from_bytes, known};
use crate::policy::{Action, Authorization, Cidr, Clause, Match, Rule, Scope, StringMatch};
use crate::xds::proto::security as pb;

/// A checked authorization policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) authorization: Authorization,
}

impl TryFrom<Named<'_, pb::Authorization>> for Policy {
    type Error = ResourceError;

    fn try_from(r: Named<'_, pb::Authorization>) -> Result<Policy, ResourceError> {
        let blame = Blame::new("Authorization", r.name, "");
        let a = r.message;
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
        let mut rules = Vec::with_capacity(a.rules.len());
        for (i, rule) in a.rules.iter().enumerate() {
            let mut clauses = Vec::with_capacity(rule.clauses.len());
            for (j, clause) in rule.clauses.iter().enumerate() {
                let mut matches = Vec::with_capacity(clause.matches.len());
                for (k, m) in clause.matches.iter().enumerate() {
                    matches.push(convert_match(blame, &format!("rules[{i}].clauses[{j}].matches[{k}]"), m)?);
                }
                clauses.push(Clause { matches });
            }
            rules.push(Rule { clauses });
        }
        let authorization = Authorization {
            name: a.name.as_str().into(),
            namespace: a.namespace.as_str().into(),
            scope,
            action,
            rules,
            dry_run: false,
        };
        Ok(Policy { authorization })
    }
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
    Ok(Match {
        namespaces: strings("namespaces", &m.namespaces)?,
        not_namespaces: strings("not_namespaces", &m.not_namespaces)?,
        principals: strings("principals", &m.principals)?,
        not_principals: strings("not_principals", &m.not_principals)?,
        source_ips: cidrs("source_ips", &m.source_ips)?,
        not_source_ips: cidrs("not_source_ips", &m.not_source_ips)?,
        destination_ips: cidrs("destination_ips", &m.destination_ips)?,
        not_destination_ips: cidrs("not_destination_ips", &m.not_destination_ips)?,
        destination_ports: ports("destination_ports", &m.destination_ports)?,
        not_destination_ports: ports("not_destination_ports", &m.not_destination_ports)?,
        ..Match::default()
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
