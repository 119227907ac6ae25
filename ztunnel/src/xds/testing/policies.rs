//! Authorization policies as the fake istiod sends them: any policy of the model, encoded as
//! `istio.security.Authorization`, optionally with fields this build's proto does not declare
//! (as a newer istiod would send) placed in the policy, a rule, a clause or a match.

use std::net::IpAddr;

use prost::Message;

use super::FakeResource;
use crate::policy::{Action, Authorization, Match, Scope, StringMatch};
use crate::xds::AUTHORIZATION_TYPE;
use crate::xds::proto::security as pb;

/// Where an extra field goes; indexes as in the policy's `rules[i].clauses[j].matches[k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraAt {
    Policy,
    Rule(usize),
    Clause(usize, usize),
    Match(usize, usize, usize),
}

/// A field our proto does not declare: `number` with the varint value 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraField {
    pub at: ExtraAt,
    pub number: u32,
}

/// A policy as istiod would send it, named `namespace/name`.
#[derive(Clone, Debug)]
pub struct FakePolicy {
    pub policy: Authorization,
    pub extra: Vec<ExtraField>,
}

impl FakePolicy {
    pub fn new(policy: Authorization) -> FakePolicy {
        FakePolicy { policy, extra: Vec::new() }
    }

    /// Adds field `number` at `at`.
    pub fn with_extra(mut self, at: ExtraAt, number: u32) -> FakePolicy {
        self.extra.push(ExtraField { at, number });
        self
    }

    pub fn resource(&self) -> FakeResource {
        FakeResource {
            type_url: AUTHORIZATION_TYPE,
            name: format!("{}/{}", self.policy.namespace, self.policy.name),
            bytes: self.encode(),
        }
    }

    /// The encoded `Authorization`. Rules, clauses and matches are nested by hand so extra
    /// fields can go inside any of them.
    pub fn encode(&self) -> Vec<u8> {
        let p = &self.policy;
        let top = pb::Authorization {
            name: p.name.to_string(),
            namespace: p.namespace.to_string(),
            scope: match p.scope {
                Scope::Global => pb::Scope::Global,
                Scope::Namespace => pb::Scope::Namespace,
                Scope::WorkloadSelector => pb::Scope::WorkloadSelector,
            } as i32,
            action: match p.action {
                Action::Allow => pb::Action::Allow,
                Action::Deny => pb::Action::Deny,
            } as i32,
            rules: Vec::new(),
            dry_run: p.dry_run,
        };
        let mut out = top.encode_to_vec();
        for (i, rule) in p.rules.iter().enumerate() {
            let mut rule_bytes = Vec::new();
            for (j, clause) in rule.clauses.iter().enumerate() {
                let mut clause_bytes = Vec::new();
                for (k, m) in clause.matches.iter().enumerate() {
                    let mut match_bytes = to_proto(m).encode_to_vec();
                    self.add_extra(ExtraAt::Match(i, j, k), &mut match_bytes);
                    length_delimited(2, &match_bytes, &mut clause_bytes);
                }
                self.add_extra(ExtraAt::Clause(i, j), &mut clause_bytes);
                length_delimited(1, &clause_bytes, &mut rule_bytes);
            }
            self.add_extra(ExtraAt::Rule(i), &mut rule_bytes);
            length_delimited(5, &rule_bytes, &mut out);
        }
        self.add_extra(ExtraAt::Policy, &mut out);
        out
    }

    fn add_extra(&self, at: ExtraAt, out: &mut Vec<u8>) {
        for extra in self.extra.iter().filter(|e| e.at == at) {
            varint(u64::from(extra.number) << 3, out);
            varint(1, out);
        }
    }
}

fn to_proto(m: &Match) -> pb::Match {
    let strings = |list: &[StringMatch]| list.iter().map(string_match).collect();
    let cidrs = |list: &[crate::policy::Cidr]| {
        list.iter().map(|c| pb::Address { address: ip_bytes(c.network()), length: u32::from(c.prefix()) }).collect()
    };
    let accounts = |list: &[crate::policy::ServiceAccountMatch]| {
        list.iter()
            .map(|s| pb::ServiceAccountMatch {
                namespace: s.namespace.to_string(),
                service_account: s.service_account.to_string(),
            })
            .collect()
    };
    let ports = |list: &[u16]| list.iter().map(|p| u32::from(*p)).collect();
    pb::Match {
        namespaces: strings(&m.namespaces),
        not_namespaces: strings(&m.not_namespaces),
        service_accounts: accounts(&m.service_accounts),
        not_service_accounts: accounts(&m.not_service_accounts),
        principals: strings(&m.principals),
        not_principals: strings(&m.not_principals),
        source_ips: cidrs(&m.source_ips),
        not_source_ips: cidrs(&m.not_source_ips),
        destination_ips: cidrs(&m.destination_ips),
        not_destination_ips: cidrs(&m.not_destination_ips),
        destination_ports: ports(&m.destination_ports),
        not_destination_ports: ports(&m.not_destination_ports),
    }
}

fn string_match(s: &StringMatch) -> pb::StringMatch {
    use pb::string_match::MatchType;
    let match_type = match s {
        StringMatch::Exact(v) => MatchType::Exact(v.to_string()),
        StringMatch::Prefix(v) => MatchType::Prefix(v.to_string()),
        StringMatch::Suffix(v) => MatchType::Suffix(v.to_string()),
        StringMatch::Presence => MatchType::Presence(()),
    };
    pb::StringMatch { match_type: Some(match_type) }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Field `number` holding `body`, wire type 2.
fn length_delimited(number: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(number) << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
