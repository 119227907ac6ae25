//! Authorization time per connection with 10,000 policies of 10 rules each (the size Istio's
//! ztunnel benchmarks), in four layouts:
//!
//! - `all-apply/not-allowed`: every policy is scoped to the destination's namespace and none
//!   matches, so all 100,000 rules are checked (the worst case);
//! - `all-apply/allowed-by-last`: the same, but the last ALLOW policy matches;
//! - `all-apply/denied-by-first`: the first DENY policy matches (DENY stops the scan);
//! - `spread/1000-namespaces`: the policies are spread over 1,000 namespaces, so the
//!   destination sees 10 of them (the usual case).
//!
//! Run: `cargo bench -p ztunnel --bench policy`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ztunnel::identity::Identity;
use ztunnel::policy::{
    Action, Authorization, Cidr, Clause, Connection, Match, PolicyStore, Rule, Scope, StringMatch, Target,
};

const POLICIES: usize = 10_000;
const RULES: usize = 10;

/// Rule `r` of policy `i`: one clause whose match never holds for the benchmark connection
/// (peer `shop/client` at 10.0.0.1 -> 10.0.0.2:8080), in a mix of match kinds.
fn rule(i: usize, r: usize) -> Rule {
    let tag = format!("p{i}-r{r}");
    let m = match r % 5 {
        0 => Match { namespaces: vec![StringMatch::Exact(tag.into())], ..Match::default() },
        1 => Match {
            principals: vec![StringMatch::Exact(format!("cluster.local/ns/{tag}/sa/x").into())],
            destination_ports: vec![8080],
            ..Match::default()
        },
        2 => Match {
            source_ips: vec![Cidr::new(IpAddr::V4(Ipv4Addr::new(11, (i % 250) as u8, r as u8, 0)), 24).unwrap()],
            ..Match::default()
        },
        3 => Match {
            principals: vec![StringMatch::Prefix(format!("cluster.local/ns/{tag}/").into())],
            ..Match::default()
        },
        _ => Match {
            destination_ports: vec![9000 + r as u16],
            not_namespaces: vec![StringMatch::Presence],
            ..Match::default()
        },
    };
    Rule { clauses: vec![Clause { matches: vec![m] }] }
}

/// A rule that matches the benchmark connection.
fn matching_rule() -> Rule {
    let m = Match { namespaces: vec![StringMatch::Exact("shop".into())], ..Match::default() };
    Rule { clauses: vec![Clause { matches: vec![m] }] }
}

/// Policy `i` in `namespace`: DENY for even `i`, ALLOW for odd.
fn policy(i: usize, namespace: &str) -> Authorization {
    Authorization {
        name: format!("policy-{i}").into(),
        namespace: namespace.into(),
        scope: Scope::Namespace,
        action: if i.is_multiple_of(2) { Action::Deny } else { Action::Allow },
        rules: (0..RULES).map(|r| rule(i, r)).collect(),
        dry_run: false,
        unevaluated: Vec::new(),
    }
}

fn store(namespace_of: impl Fn(usize) -> String, matching: Option<usize>) -> PolicyStore {
    PolicyStore::new((0..POLICIES).map(|i| {
        let mut p = policy(i, &namespace_of(i));
        if Some(i) == matching {
            p.rules[RULES - 1] = matching_rule();
        }
        p
    }))
}

fn bench(c: &mut Criterion) {
    let peer = Identity::new("cluster.local", "shop", "client");
    let conn = Connection {
        source_identity: Some(&peer),
        source_ip: "10.0.0.1".parse().unwrap(),
        destination: "10.0.0.2:8080".parse::<SocketAddr>().unwrap(),
    };
    let listed: Vec<Arc<str>> = Vec::new();
    let target = Target { namespace: "app", policies: &listed };
    let mut group = c.benchmark_group("authorize-10000x10");
    group.throughput(Throughput::Elements(1));
    let layouts = [
        ("all-apply/not-allowed", store(|_| "app".into(), None), false),
        ("all-apply/allowed-by-last", store(|_| "app".into(), Some(POLICIES - 1)), true),
        ("all-apply/denied-by-first", store(|_| "app".into(), Some(0)), false),
        (
            "spread/1000-namespaces",
            store(|i| if i < 10 { "app".into() } else { format!("ns-{}", i / 10) }, None),
            false,
        ),
    ];
    for (name, store, allowed) in &layouts {
        assert_eq!(store.evaluate(&target, &conn).is_allowed(), *allowed, "{name}: unexpected decision");
        group.bench_function(*name, |b| b.iter(|| std::hint::black_box(store.evaluate(&target, &conn))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
