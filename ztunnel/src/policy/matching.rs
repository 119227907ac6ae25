//! Whether one policy matches one connection.
//!
//! Istio's semantics, rule by rule: a policy matches when any rule does; a rule when all its
//! clauses do (a clause without matches always does); a clause when any of its non-empty
//! matches does; a match when every field that is set holds. Identity-derived fields
//! (namespace, service account, principal) come only from the peer's verified SPIFFE
//! identity: without one, principals and service accounts never match (so their negations
//! always do) and the namespace compares as the empty string.

use std::net::{IpAddr, SocketAddr};

use super::model::{Authorization, Match};
use crate::identity::Identity;

/// The facts of one connection that policies look at.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    /// The peer's identity, verified by mTLS; `None` for plaintext.
    pub source_identity: Option<&'a Identity>,
    /// The client's address: the connection's peer (for HBONE, `forwarded: for=` only from the
    /// destination's waypoint).
    pub source_ip: IpAddr,
    /// Where the client connected: the destination workload's address and port.
    pub destination: SocketAddr,
}

/// A connection's facts in the form matching compares, computed once per decision.
pub(super) struct Facts<'a> {
    identity: Option<&'a Identity>,
    namespace: &'a str,
    /// `td/ns/NS/sa/SA` (Istio compares principals without `spiffe://`); empty without identity.
    principal: String,
    source: IpAddr,
    destination: IpAddr,
    port: u16,
}

impl<'a> Facts<'a> {
    pub(super) fn new(conn: &Connection<'a>) -> Facts<'a> {
        let identity = conn.source_identity;
        Facts {
            identity,
            namespace: identity.map_or("", Identity::namespace),
            principal: identity.map_or_else(String::new, |id| {
                format!("{}/ns/{}/sa/{}", id.trust_domain(), id.namespace(), id.service_account())
            }),
            // A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; compare them as IPv4.
            source: conn.source_ip.to_canonical(),
            destination: conn.destination.ip().to_canonical(),
            port: conn.destination.port(),
        }
    }
}

impl Authorization {
    /// Whether this policy's rules match `conn` (its action and dry-run flag are not looked at).
    pub fn matches(&self, conn: &Connection<'_>) -> bool {
        self.matches_facts(&Facts::new(conn))
    }

    pub(super) fn matches_facts(&self, facts: &Facts<'_>) -> bool {
        self.rules.iter().any(|rule| {
            rule.clauses
                .iter()
                .all(|clause| clause.matches.is_empty() || clause.matches.iter().any(|m| m.matches_facts(facts)))
        })
    }
}

/// One field of a match: any positive value matches (or there is none), and no negative one does.
fn holds<T>(positive: &[T], negative: &[T], mut matches: impl FnMut(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&mut matches)) && !negative.iter().any(&mut matches)
}

impl Match {
    fn matches_facts(&self, f: &Facts<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        holds(&self.destination_ports, &self.not_destination_ports, |p| *p == f.port)
            && holds(&self.destination_ips, &self.not_destination_ips, |c| c.contains(f.destination))
            && holds(&self.source_ips, &self.not_source_ips, |c| c.contains(f.source))
            && holds(&self.namespaces, &self.not_namespaces, |m| m.matches(f.namespace))
            && holds(&self.principals, &self.not_principals, |m| f.identity.is_some() && m.matches(&f.principal))
            && holds(&self.service_accounts, &self.not_service_accounts, |sa| {
                f.identity
                    .is_some_and(|id| id.namespace() == &*sa.namespace && id.service_account() == &*sa.service_account)
            })
    }
}
