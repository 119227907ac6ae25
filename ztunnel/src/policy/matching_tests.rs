//! Matching one policy against one connection: every field and its negation, every string
//! match kind, CIDR edges, and the rule/clause/match nesting. One table row per case, each
//! checked against three connections: plaintext (no identity), `td/ns/namespace/sa/account`
//! and `td-alt/ns/ns-alt/sa/sa-alt`.

use std::net::SocketAddr;

use super::*;
use crate::identity::Identity;

fn identity() -> Identity {
    Identity::new("td", "namespace", "account")
}

fn alt_identity() -> Identity {
    Identity::new("td-alt", "ns-alt", "sa-alt")
}

/// (plaintext, tls, tls_alt): 10.0.0.1 -> 10.0.1.2:8080 for the first two, 10.0.0.3 ->
/// 10.0.2.4:9090 for the third.
fn check(name: &str, policy: &Authorization, expect: [bool; 3]) {
    let (id, alt) = (identity(), alt_identity());
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let conns = [
        Connection {
            source_identity: None,
            source_ip: "10.0.0.1".parse().unwrap(),
            destination: addr("10.0.1.2:8080"),
        },
        Connection {
            source_identity: Some(&id),
            source_ip: "10.0.0.1".parse().unwrap(),
            destination: addr("10.0.1.2:8080"),
        },
        Connection {
            source_identity: Some(&alt),
            source_ip: "10.0.0.3".parse().unwrap(),
            destination: addr("10.0.2.4:9090"),
        },
    ];
    let got = conns.map(|c| policy.matches(&c));
    assert_eq!(got, expect, "case {name:?}: [plaintext, tls, tls_alt]");
}

pub(super) fn policy(rules: Vec<Vec<Vec<Match>>>) -> Authorization {
    Authorization {
        name: "p".into(),
        namespace: "ns".into(),
        scope: Scope::Global,
        action: Action::Allow,
        rules: rules
            .into_iter()
            .map(|r| Rule { clauses: r.into_iter().map(|matches| Clause { matches }).collect() })
            .collect(),
        dry_run: false,
        unevaluated: Vec::new(),
    }
}

fn one(m: Match) -> Authorization {
    policy(vec![vec![vec![m]]])
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn sa(ns: &str, name: &str) -> ServiceAccountMatch {
    ServiceAccountMatch { namespace: ns.into(), service_account: name.into() }
}

#[test]
fn every_field_and_its_negation() {
    let m = Match::default;
    let cases: Vec<(&str, Match, [bool; 3])> = vec![
        ("namespaces", Match { namespaces: vec![exact("namespace")], ..m() }, [false, true, false]),
        ("notNamespaces", Match { not_namespaces: vec![exact("namespace")], ..m() }, [true, false, true]),
        ("serviceAccounts", Match { service_accounts: vec![sa("namespace", "account")], ..m() }, [false, true, false]),
        (
            "notServiceAccounts",
            Match { not_service_accounts: vec![sa("namespace", "account")], ..m() },
            [true, false, true],
        ),
        // Both parts of a service account must agree.
        (
            "serviceAccounts other ns",
            Match { service_accounts: vec![sa("ns-alt", "account")], ..m() },
            [false, false, false],
        ),
        ("principals", Match { principals: vec![exact("td/ns/namespace/sa/account")], ..m() }, [false, true, false]),
        (
            "notPrincipals",
            Match { not_principals: vec![exact("td/ns/namespace/sa/account")], ..m() },
            [true, false, true],
        ),
        // Principals never carry the scheme.
        (
            "principals with scheme",
            Match { principals: vec![exact("spiffe://td/ns/namespace/sa/account")], ..m() },
            [false, false, false],
        ),
        ("sourceIps", Match { source_ips: vec![cidr("10.0.0.1/32")], ..m() }, [true, true, false]),
        ("notSourceIps", Match { not_source_ips: vec![cidr("10.0.0.1/32")], ..m() }, [false, false, true]),
        ("destinationIps", Match { destination_ips: vec![cidr("10.0.1.2/32")], ..m() }, [true, true, false]),
        ("notDestinationIps", Match { not_destination_ips: vec![cidr("10.0.1.2/32")], ..m() }, [false, false, true]),
        ("destinationPorts", Match { destination_ports: vec![8080], ..m() }, [true, true, false]),
        ("notDestinationPorts", Match { not_destination_ports: vec![8080], ..m() }, [false, false, true]),
        // Values inside a field are OR-ed.
        ("ports any of", Match { destination_ports: vec![1, 9090], ..m() }, [false, false, true]),
        ("not ports any of", Match { not_destination_ports: vec![1, 9090], ..m() }, [true, true, false]),
        // Fields are AND-ed.
        (
            "namespace and port",
            Match { namespaces: vec![exact("namespace")], destination_ports: vec![9090], ..m() },
            [false, false, false],
        ),
        (
            "port and not-source",
            Match { destination_ports: vec![8080], not_source_ips: vec![cidr("10.0.0.1")], ..m() },
            [false, false, false],
        ),
        // A field with both a positive and a negative list needs both to hold.
        (
            "prefix but not exact",
            Match {
                principals: vec![StringMatch::Prefix("td".into())],
                not_principals: vec![exact("td/ns/namespace/sa/account")],
                ..m()
            },
            [false, false, true],
        ),
        // STRICT mTLS: no identity.
        ("notPrincipals presence", Match { not_principals: vec![StringMatch::Presence], ..m() }, [true, false, false]),
        ("principals presence", Match { principals: vec![StringMatch::Presence], ..m() }, [false, true, true]),
        // Without an identity no principal matches, not even one matching every string (an
        // empty prefix, which the local config rejects but xDS could send).
        (
            "principals empty prefix",
            Match { principals: vec![StringMatch::Prefix("".into())], ..m() },
            [false, true, true],
        ),
        (
            "notPrincipals empty prefix",
            Match { not_principals: vec![StringMatch::Prefix("".into())], ..m() },
            [true, false, false],
        ),
        // Without an identity the namespace compares as "": presence fails, negations hold.
        ("namespaces presence", Match { namespaces: vec![StringMatch::Presence], ..m() }, [false, true, true]),
        ("notNamespaces presence", Match { not_namespaces: vec![StringMatch::Presence], ..m() }, [true, false, false]),
    ];
    for (name, m, expect) in cases {
        check(name, &one(m), expect);
    }
}

#[test]
fn string_match_kinds() {
    let cases: Vec<(StringMatch, &str, bool)> = vec![
        (exact("foo"), "foo", true),
        (exact("foo"), "foobar", false),
        (exact("foo"), "", false),
        (StringMatch::Prefix("foo".into()), "foobar", true),
        (StringMatch::Prefix("foo".into()), "foo", true),
        (StringMatch::Prefix("foo".into()), "barfoo", false),
        (StringMatch::Prefix("foo".into()), "", false),
        (StringMatch::Suffix("foo".into()), "barfoo", true),
        (StringMatch::Suffix("foo".into()), "foobar", false),
        (StringMatch::Suffix("foo".into()), "", false),
        (StringMatch::Presence, "x", true),
        (StringMatch::Presence, "", false),
    ];
    for (m, value, expect) in cases {
        assert_eq!(m.matches(value), expect, "{m:?} against {value:?}");
    }
    // Applied to principals and namespaces through a policy.
    let m = Match::default;
    check(
        "principal prefix",
        &one(Match { principals: vec![StringMatch::Prefix("td/ns/namespace/".into())], ..m() }),
        [false, true, false],
    );
    check(
        "principal suffix",
        &one(Match { principals: vec![StringMatch::Suffix("/sa/sa-alt".into())], ..m() }),
        [false, false, true],
    );
    check(
        "namespace prefix",
        &one(Match { namespaces: vec![StringMatch::Prefix("ns-".into())], ..m() }),
        [false, false, true],
    );
    check(
        "namespace suffix",
        &one(Match { not_namespaces: vec![StringMatch::Suffix("space".into())], ..m() }),
        [true, false, true],
    );
}

#[test]
fn cidr_edges() {
    let m = Match::default;
    let src = |s: &str| one(Match { source_ips: vec![cidr(s)], ..m() });
    check("/0 holds every IPv4 address", &src("0.0.0.0/0"), [true, true, true]);
    check("/0 of IPv6 holds no IPv4 address", &src("::/0"), [false, false, false]);
    check("/24 holds both sources", &src("10.0.0.0/24"), [true, true, true]);
    check("/31 holds .0 and .1", &src("10.0.0.0/31"), [true, true, false]);
    check("/31 at .2 holds .3", &src("10.0.0.2/31"), [false, false, true]);
    check("/32 is one host", &src("10.0.0.3/32"), [false, false, true]);
    check("bare address is /32", &src("10.0.0.3"), [false, false, true]);
    check("host bits are ignored", &src("10.0.0.255/24"), [true, true, true]);
    let dst = |s: &str| one(Match { destination_ips: vec![cidr(s)], ..m() });
    check("/23 splits .1.x and .2.x", &dst("10.0.0.0/23"), [true, true, false]);
    check("/22 holds both", &dst("10.0.0.0/22"), [true, true, true]);

    let v6 = cidr("fd00::/64");
    assert!(v6.contains("fd00::1".parse().unwrap()));
    assert!(v6.contains("fd00::ffff:ffff:ffff:ffff".parse().unwrap()));
    assert!(!v6.contains("fd00:0:0:1::".parse().unwrap()));
    assert!(cidr("::/0").contains("::1".parse().unwrap()));
    assert!(cidr("fd00::1/128").contains("fd00::1".parse().unwrap()));
    assert!(!cidr("fd00::1/128").contains("fd00::2".parse().unwrap()));
    // IPv4-mapped IPv6 sources (dual-stack sockets) compare as IPv4.
    let id = identity();
    let mapped = Connection {
        source_identity: Some(&id),
        source_ip: "::ffff:10.0.0.1".parse().unwrap(),
        destination: "[::ffff:10.0.1.2]:8080".parse().unwrap(),
    };
    assert!(src("10.0.0.1/32").matches(&mapped), "mapped source must match its IPv4 network");
    assert!(dst("10.0.1.0/24").matches(&mapped), "mapped destination must match its IPv4 network");
}

#[test]
fn nesting_of_rules_clauses_and_matches() {
    let ns = |s: &str| Match { namespaces: vec![exact(s)], ..Match::default() };
    let port = |p: u16| Match { destination_ports: vec![p], ..Match::default() };
    // Rules OR: either namespace.
    check("rules are OR-ed", &policy(vec![vec![vec![ns("namespace")]], vec![vec![ns("ns-alt")]]]), [false, true, true]);
    // Clauses AND: namespace (namespace or ns-alt) and port 8080.
    let anded = policy(vec![vec![vec![ns("namespace"), ns("ns-alt")], vec![port(8080)]]]);
    check("clauses are AND-ed, matches OR-ed", &anded, [false, true, false]);
    // Empty shapes: no rules never match; an empty rule or clause always does; an empty match
    // is skipped (never matches), even next to a clause that holds.
    check("no rules", &policy(vec![]), [false, false, false]);
    check("empty rule", &policy(vec![vec![]]), [true, true, true]);
    check("empty clause", &policy(vec![vec![vec![]]]), [true, true, true]);
    check("empty match", &policy(vec![vec![vec![Match::default()]]]), [false, false, false]);
    check("empty match or port", &policy(vec![vec![vec![Match::default(), port(9090)]]]), [false, false, true]);
    check("empty clause and port", &policy(vec![vec![vec![], vec![port(9090)]]]), [false, false, true]);
}
