//! `istio.security.Authorization` -> a checked policy, kept as the JSON that Istio's local
//! config file uses for policies (`name`, `namespace`, `scope`, `action`, `rules` as
//! rules -> clauses -> matches), which is what `state` stores until policies are evaluated.
//!
//! Every field is checked here (enum values, match kinds, CIDR bytes and prefix lengths,
//! port ranges), so a policy that reaches state is well-formed.

use serde_json::{Map, Value, json};

use super::{Blame, Named, ResourceError, ip_from_bytes, known};
use crate::xds::proto::security as pb;

/// A checked authorization policy in the local config's JSON shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) json: Value,
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
            pb::Scope::Global => "Global",
            pb::Scope::Namespace => "Namespace",
            pb::Scope::WorkloadSelector => "WorkloadSelector",
        };
        if scope != "Global" && a.namespace.is_empty() {
            return Err(blame.field("namespace", format!("must be set for scope {scope}")));
        }
        let action = match known(blame, "action", a.action)? {
            pb::Action::Allow => "Allow",
            pb::Action::Deny => "Deny",
        };
        let mut rules = Vec::with_capacity(a.rules.len());
        for (i, rule) in a.rules.iter().enumerate() {
            let mut clauses = Vec::with_capacity(rule.clauses.len());
            for (j, clause) in rule.clauses.iter().enumerate() {
                let mut matches = Vec::with_capacity(clause.matches.len());
                for (k, m) in clause.matches.iter().enumerate() {
                    matches.push(convert_match(blame, &format!("rules[{i}].clauses[{j}].matches[{k}]"), m)?);
                }
                clauses.push(Value::Array(matches));
            }
            rules.push(Value::Array(clauses));
        }
        Ok(Policy {
            json: json!({
                "name": a.name,
                "namespace": a.namespace,
                "scope": scope,
                "action": action,
                "rules": rules,
            }),
        })
    }
}

fn convert_match(blame: Blame<'_>, at: &str, m: &pb::Match) -> Result<Value, ResourceError> {
    let mut out = Map::new();
    let strings = [
        ("namespaces", "namespaces", &m.namespaces),
        ("not_namespaces", "notNamespaces", &m.not_namespaces),
        ("principals", "principals", &m.principals),
        ("not_principals", "notPrincipals", &m.not_principals),
    ];
    for (proto_name, json_name, list) in strings {
        if list.is_empty() {
            continue;
        }
        let values = list
            .iter()
            .enumerate()
            .map(|(n, s)| string_match(blame, &format!("{at}.{proto_name}[{n}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(json_name.into(), Value::Array(values));
    }
    let cidrs = [
        ("source_ips", "sourceIps", &m.source_ips),
        ("not_source_ips", "notSourceIps", &m.not_source_ips),
        ("destination_ips", "destinationIps", &m.destination_ips),
        ("not_destination_ips", "notDestinationIps", &m.not_destination_ips),
    ];
    for (proto_name, json_name, list) in cidrs {
        if list.is_empty() {
            continue;
        }
        let values = list
            .iter()
            .enumerate()
            .map(|(n, a)| cidr(blame, &format!("{at}.{proto_name}[{n}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(json_name.into(), Value::Array(values));
    }
    let ports = [
        ("destination_ports", "destinationPorts", &m.destination_ports),
        ("not_destination_ports", "notDestinationPorts", &m.not_destination_ports),
    ];
    for (proto_name, json_name, list) in ports {
        if list.is_empty() {
            continue;
        }
        let mut values = Vec::with_capacity(list.len());
        for (n, &port) in list.iter().enumerate() {
            if port == 0 || port > u32::from(u16::MAX) {
                return Err(blame.field(format!("{at}.{proto_name}[{n}]"), format!("port {port} is not in 1..65535")));
            }
            values.push(Value::from(port));
        }
        out.insert(json_name.into(), Value::Array(values));
    }
    Ok(Value::Object(out))
}

fn string_match(blame: Blame<'_>, field: &str, s: &pb::StringMatch) -> Result<Value, ResourceError> {
    use pb::string_match::MatchType;
    Ok(match &s.match_type {
        Some(MatchType::Exact(v)) => json!({ "Exact": v }),
        Some(MatchType::Prefix(v)) => json!({ "Prefix": v }),
        Some(MatchType::Suffix(v)) => json!({ "Suffix": v }),
        Some(MatchType::Presence(_)) => json!({ "Presence": {} }),
        None => return Err(blame.field(field, "no match type (exact, prefix, suffix or presence) is set")),
    })
}

/// `address/length` with the prefix length checked against the address family.
fn cidr(blame: Blame<'_>, field: &str, a: &pb::Address) -> Result<Value, ResourceError> {
    let ip = ip_from_bytes(blame, &format!("{field}.address"), &a.address)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if a.length > max {
        return Err(
            blame.field(format!("{field}.length"), format!("prefix length {} exceeds {max} for {ip}", a.length))
        );
    }
    Ok(Value::String(format!("{ip}/{}", a.length)))
}
