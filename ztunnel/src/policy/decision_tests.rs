//! The decision over every applicable policy: scopes, Istio's order (DENY first, no ALLOW ->
//! allow, matching ALLOW -> allow, else deny), dry-run, and STRICT mTLS as a policy. Each
//! table row is one store and one connection with the expected reason.

use std::net::SocketAddr;
use std::sync::Arc;

use super::matching_tests::policy;
use super::*;
use crate::identity::Identity;

/// A policy in `ns` named `name` with `action`, matching one namespace of the peer.
fn from_ns(ns: &str, name: &str, scope: Scope, action: Action, peer_ns: &str) -> Authorization {
    let m = Match { namespaces: vec![StringMatch::Exact(peer_ns.into())], ..Match::default() };
    Authorization { name: name.into(), namespace: ns.into(), scope, action, ..policy(vec![vec![vec![m]]]) }
}

fn dry(mut p: Authorization) -> Authorization {
    p.dry_run = true;
    p
}

fn key(s: &str) -> PolicyKey {
    let (ns, name) = s.split_once('/').unwrap();
    PolicyKey::new(ns, name)
}

fn allowed(s: &str) -> Reason {
    Reason::Allowed(key(s))
}

fn denied(s: &str) -> Reason {
    Reason::Denied(key(s))
}

/// Decides a connection from `peer_ns` (or plaintext for `None`) to a workload in namespace
/// `dst` listing `listed`.
fn decide(store: &PolicyStore, dst: &str, listed: &[&str], peer_ns: Option<&str>) -> Decision {
    let id = peer_ns.map(|ns| Identity::new("cluster.local", ns, "sa"));
    let listed: Vec<Arc<str>> = listed.iter().map(|s| Arc::from(*s)).collect();
    let conn = Connection {
        source_identity: id.as_ref(),
        source_ip: "10.0.0.1".parse().unwrap(),
        destination: "10.0.0.2:8080".parse::<SocketAddr>().unwrap(),
    };
    store.evaluate(&Target { namespace: dst, policies: &listed }, &conn)
}

use Action::{Allow, Deny};
use Scope::{Global, Namespace, WorkloadSelector};

struct Case {
    name: &'static str,
    policies: Vec<Authorization>,
    listed: Vec<&'static str>,
    peer: Option<&'static str>,
    reason: Reason,
    dry_run: Option<Reason>,
}

fn run(cases: Vec<Case>) {
    for c in cases {
        let store = PolicyStore::new(c.policies);
        let got = decide(&store, "app", &c.listed, c.peer);
        assert_eq!(got.reason, c.reason, "case {:?}: enforced reason", c.name);
        assert_eq!(got.dry_run, c.dry_run, "case {:?}: dry-run reason", c.name);
        assert_eq!(got.is_allowed(), c.reason.is_allowed(), "case {:?}", c.name);
    }
}

fn case(name: &'static str, policies: Vec<Authorization>, peer: Option<&'static str>, reason: Reason) -> Case {
    Case { name, policies, listed: vec![], peer, reason, dry_run: None }
}

#[test]
fn decision_order() {
    run(vec![
        case("no policies: allow", vec![], Some("a"), Reason::NoAllowPolicy),
        case(
            "non-matching deny: allow",
            vec![from_ns("app", "d", Namespace, Deny, "b")],
            Some("a"),
            Reason::NoAllowPolicy,
        ),
        case("matching deny", vec![from_ns("app", "d", Namespace, Deny, "a")], Some("a"), denied("app/d")),
        case("matching allow", vec![from_ns("app", "y", Namespace, Allow, "a")], Some("a"), allowed("app/y")),
        case(
            "allow exists, none matches",
            vec![from_ns("app", "y", Namespace, Allow, "b")],
            Some("a"),
            Reason::NotAllowed,
        ),
        case(
            "deny beats a matching allow",
            vec![from_ns("app", "y", Namespace, Allow, "a"), from_ns("app", "d", Namespace, Deny, "a")],
            Some("a"),
            denied("app/d"),
        ),
        case(
            "any matching allow among several",
            vec![from_ns("app", "y1", Namespace, Allow, "b"), from_ns("app", "y2", Namespace, Allow, "a")],
            Some("a"),
            allowed("app/y2"),
        ),
        case(
            "first matching deny is named",
            vec![from_ns("app", "d1", Namespace, Deny, "a"), from_ns("app", "d2", Namespace, Deny, "a")],
            Some("a"),
            denied("app/d1"),
        ),
        // Istio's "allow nothing": an ALLOW policy without rules denies everything.
        case(
            "allow nothing",
            vec![Authorization { name: "none".into(), namespace: "app".into(), scope: Namespace, ..policy(vec![]) }],
            Some("a"),
            Reason::NotAllowed,
        ),
        // Namespaces come from the verified identity only: plaintext has none.
        case(
            "plaintext is not in any namespace",
            vec![from_ns("app", "y", Namespace, Allow, "a")],
            None,
            Reason::NotAllowed,
        ),
    ]);
}

#[test]
fn scopes_choose_the_applicable_policies() {
    let listed = |name, policies, listed: Vec<&'static str>, reason| Case {
        name,
        policies,
        listed,
        peer: Some("a"),
        reason,
        dry_run: None,
    };
    run(vec![
        case("own namespace applies", vec![from_ns("app", "d", Namespace, Deny, "a")], Some("a"), denied("app/d")),
        case(
            "other namespace does not",
            vec![from_ns("other", "d", Namespace, Deny, "a")],
            Some("a"),
            Reason::NoAllowPolicy,
        ),
        case(
            "global applies everywhere",
            vec![from_ns("istio-system", "d", Global, Deny, "a")],
            Some("a"),
            denied("istio-system/d"),
        ),
        case(
            "global allow makes allow policies exist",
            vec![from_ns("istio-system", "y", Global, Allow, "b")],
            Some("a"),
            Reason::NotAllowed,
        ),
        case(
            "unlisted selector policy does not apply",
            vec![from_ns("app", "d", WorkloadSelector, Deny, "a")],
            Some("a"),
            Reason::NoAllowPolicy,
        ),
        listed(
            "listed selector policy applies",
            vec![from_ns("app", "d", WorkloadSelector, Deny, "a")],
            vec!["app/d"],
            denied("app/d"),
        ),
        listed(
            "listed allow from another namespace applies",
            vec![from_ns("other", "y", WorkloadSelector, Allow, "a")],
            vec!["other/y"],
            allowed("other/y"),
        ),
        listed("unknown listed key is skipped", vec![], vec!["app/ghost"], Reason::NoAllowPolicy),
        listed(
            "listing a scoped policy again changes nothing",
            vec![from_ns("app", "y", Namespace, Allow, "b")],
            vec!["app/y", "app/y"],
            Reason::NotAllowed,
        ),
        listed(
            "a namespace policy of another namespace applies when listed",
            vec![from_ns("other", "d", Namespace, Deny, "a")],
            vec!["other/d"],
            denied("other/d"),
        ),
    ]);
}

#[test]
fn dry_run_never_changes_the_outcome() {
    let with_dry =
        |name, policies, peer, reason, dry_run| Case { name, policies, listed: vec![], peer, reason, dry_run };
    run(vec![
        with_dry(
            "dry-run deny matches: allowed, dry-run would deny",
            vec![dry(from_ns("app", "d", Namespace, Deny, "a"))],
            Some("a"),
            Reason::NoAllowPolicy,
            Some(denied("app/d")),
        ),
        with_dry(
            "dry-run allow not matching: allowed, dry-run would deny",
            vec![dry(from_ns("app", "y", Namespace, Allow, "b"))],
            Some("a"),
            Reason::NoAllowPolicy,
            Some(Reason::NotAllowed),
        ),
        with_dry(
            "dry-run allow matching: allowed either way",
            vec![dry(from_ns("app", "y", Namespace, Allow, "a"))],
            Some("a"),
            Reason::NoAllowPolicy,
            Some(allowed("app/y")),
        ),
        with_dry(
            "real deny wins over dry-run allow",
            vec![from_ns("app", "d", Namespace, Deny, "a"), dry(from_ns("app", "y", Namespace, Allow, "a"))],
            Some("a"),
            denied("app/d"),
            Some(denied("app/d")),
        ),
        with_dry(
            "dry-run allow would rescue a not-allowed connection",
            vec![from_ns("app", "y", Namespace, Allow, "b"), dry(from_ns("app", "y2", Namespace, Allow, "a"))],
            Some("a"),
            Reason::NotAllowed,
            Some(allowed("app/y2")),
        ),
        with_dry(
            "real allow stays the dry-run answer",
            vec![from_ns("app", "y", Namespace, Allow, "a"), dry(from_ns("app", "y2", Namespace, Allow, "b"))],
            Some("a"),
            allowed("app/y"),
            Some(allowed("app/y")),
        ),
        with_dry(
            "dry-run deny of another namespace does not apply",
            vec![dry(from_ns("other", "d", Namespace, Deny, "a"))],
            Some("a"),
            Reason::NoAllowPolicy,
            None,
        ),
    ]);
    let store = PolicyStore::new([dry(from_ns("app", "d", Namespace, Deny, "a"))]);
    let decision = decide(&store, "app", &[], Some("a"));
    assert_eq!(decision.dry_run_denial(), Some(&denied("app/d")), "allowed but dry-run would deny");
    assert_eq!(decide(&store, "app", &[], Some("b")).dry_run_denial(), None, "dry-run allows too");
}

#[test]
fn strict_mtls_is_a_deny_policy_on_missing_identity() {
    let strict = static_strict_policy();
    let key = static_strict_key();
    assert_eq!(key.as_str(), "istio-system/istio_converted_static_strict");
    assert_eq!(strict.key(), key);
    let store = PolicyStore::new([strict]);
    let listed = [key.as_str()];
    assert_eq!(decide(&store, "app", &listed, None).reason, Reason::Denied(key.clone()), "STRICT refuses plaintext");
    assert_eq!(decide(&store, "app", &listed, Some("a")).reason, Reason::NoAllowPolicy, "STRICT allows mTLS");
    assert_eq!(
        decide(&store, "app", &[], None).reason,
        Reason::NoAllowPolicy,
        "PERMISSIVE (not listed) allows plaintext"
    );

    // istiod's port-level PERMISSIVE exception under STRICT: deny plaintext on every port but 9000.
    let exception = Authorization {
        name: "converted_peer_authentication_app".into(),
        namespace: "app".into(),
        scope: WorkloadSelector,
        action: Deny,
        ..policy(vec![vec![
            vec![Match { not_principals: vec![StringMatch::Presence], ..Match::default() }],
            vec![Match { not_destination_ports: vec![9000], ..Match::default() }],
        ]])
    };
    let store = PolicyStore::new([exception]);
    let listed: Vec<Arc<str>> = vec!["app/converted_peer_authentication_app".into()];
    let target = Target { namespace: "app", policies: &listed };
    let at = |port: u16, id: Option<&Identity>| {
        let conn = Connection {
            source_identity: id,
            source_ip: "10.0.0.1".parse().unwrap(),
            destination: SocketAddr::new("10.0.0.2".parse().unwrap(), port),
        };
        store.evaluate(&target, &conn).is_allowed()
    };
    let id = Identity::new("cluster.local", "a", "sa");
    assert!(!at(8080, None), "plaintext on a STRICT port is denied");
    assert!(at(9000, None), "plaintext on the PERMISSIVE port is allowed");
    assert!(at(8080, Some(&id)), "mTLS is allowed on every port");
}

#[test]
fn later_duplicate_replaces_earlier() {
    let store =
        PolicyStore::new([from_ns("app", "p", Namespace, Deny, "a"), from_ns("app", "p", Namespace, Allow, "a")]);
    assert_eq!(store.len(), 1);
    assert_eq!(store.get("app/p").map(|p| p.action), Some(Allow));
    assert_eq!(decide(&store, "app", &[], Some("a")).reason, allowed("app/p"));
}
