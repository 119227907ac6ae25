//! Policy conversion tests: the resource converts to the same model the local config gives
//! (including `dry_run` and service accounts), malformed fields are rejected naming them, and
//! content we cannot evaluate is kept and fails closed. The fail-closed cases are checked by
//! deciding real connections with the converted policy, one table row per case.

use prost::Message;

use super::*;
use crate::identity::Identity;
use crate::policy::{
    Action, Authorization, Clause, Connection, Decision, Match, PolicyStore, Reason, Rule, Scope, ServiceAccountMatch,
    StringMatch, Target, TreatedAs, Unevaluated,
};
use crate::xds::proto::security as sec;
use crate::xds::testing::{ExtraAt, FakePolicy};

fn pb_policy() -> sec::Authorization {
    sec::Authorization {
        name: "deny-80".into(),
        namespace: "shop".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        rules: vec![sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match {
                    principals: vec![sec::StringMatch {
                        match_type: Some(sec::string_match::MatchType::Prefix("spiffe://mesh.example/".into())),
                    }],
                    source_ips: vec![sec::Address { address: vec![10, 0, 0, 0], length: 8 }],
                    destination_ports: vec![80],
                    service_accounts: vec![sec::ServiceAccountMatch {
                        namespace: "lab".into(),
                        service_account: "sleep".into(),
                    }],
                    not_service_accounts: vec![sec::ServiceAccountMatch {
                        namespace: "lab".into(),
                        service_account: "admin".into(),
                    }],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: true,
    }
}

fn convert_bytes(name: &str, bytes: &[u8]) -> Result<Policy, ResourceError> {
    let d = Defaults::new("mesh.example");
    Policy::try_from(Named { name, message: bytes, defaults: &d })
}

#[test]
fn authorization_converts_to_the_policy_model() {
    let p = convert_bytes("shop/deny-80", &pb_policy().encode_to_vec()).expect("valid");
    // The same policy as the local config would give it.
    let local: Authorization = serde_yaml::from_str(
        "{name: deny-80, namespace: shop, scope: Namespace, action: Deny, dryRun: true, rules: [[[{
          principals: [!Prefix \"spiffe://mesh.example/\"], sourceIps: [10.0.0.0/8], destinationPorts: [80],
          serviceAccounts: [{namespace: lab, serviceAccount: sleep}],
          notServiceAccounts: [{namespace: lab, serviceAccount: admin}]}]]]}",
    )
    .unwrap();
    assert_eq!(p.authorization, local);
    assert!(p.authorization.unevaluated.is_empty(), "every field is known: {:?}", p.authorization.unevaluated);
}

#[test]
fn malformed_authorizations_are_rejected_naming_the_field() {
    type Edit = fn(&mut sec::Authorization);
    let cases: [(&str, Edit, &str); 5] = [
        ("action", |a| a.action = 9, "action"),
        (
            "prefix length",
            |a| a.rules[0].clauses[0].matches[0].source_ips[0].length = 33,
            "rules[0].clauses[0].matches[0].source_ips[0].length",
        ),
        (
            "no match type",
            |a| a.rules[0].clauses[0].matches[0].principals[0].match_type = None,
            "rules[0].clauses[0].matches[0].principals[0]",
        ),
        (
            "port",
            |a| a.rules[0].clauses[0].matches[0].destination_ports[0] = 65536,
            "rules[0].clauses[0].matches[0].destination_ports[0]",
        ),
        ("namespace", |a| a.namespace.clear(), "namespace"),
    ];
    for (name, edit, field) in cases {
        let mut a = pb_policy();
        edit(&mut a);
        let err = convert_bytes("shop/p", &a.encode_to_vec()).expect_err(name);
        assert_eq!(err.field.as_deref(), Some(field), "{name}: {err}");
        assert!(err.to_string().starts_with("Authorization \"shop/p\": "), "{name}: {err}");
    }
    let err = convert_bytes("shop/p", &[0xff, 0xff]).expect_err("garbage");
    assert!(err.reason.contains("cannot decode"), "{err}");
    check_authorization("p", &pb_policy().encode_to_vec()).expect("the public checker accepts a valid policy");
}

fn peer(ns: &str, sa: &str) -> Identity {
    Identity::new("mesh.example", ns, sa)
}

fn ns(name: &str) -> Match {
    Match { namespaces: vec![StringMatch::Exact(name.into())], ..Match::default() }
}

fn sa(namespace: &str, name: &str) -> Match {
    let account = ServiceAccountMatch { namespace: namespace.into(), service_account: name.into() };
    Match { service_accounts: vec![account], ..Match::default() }
}

fn not_sa(namespace: &str, name: &str) -> Match {
    Match { not_service_accounts: sa(namespace, name).service_accounts, ..Match::default() }
}

fn port(p: u16) -> Match {
    Match { destination_ports: vec![p], ..Match::default() }
}

/// A namespace policy in `shop`; `rules[i][j]` are the matches of clause `j` of rule `i`.
fn policy(action: Action, rules: Vec<Vec<Vec<Match>>>) -> Authorization {
    Authorization {
        name: "p".into(),
        namespace: "shop".into(),
        scope: Scope::Namespace,
        action,
        rules: rules
            .into_iter()
            .map(|r| Rule { clauses: r.into_iter().map(|matches| Clause { matches }).collect() })
            .collect(),
        dry_run: false,
        unevaluated: Vec::new(),
    }
}

/// What the converted `fake` decides for a peer `ns/sa` connecting to a `shop` workload on `port`.
fn decide(fake: &FakePolicy, (ns, sa, port): Peer) -> Decision {
    let converted = convert_bytes("shop/p", &fake.encode()).unwrap_or_else(|e| panic!("must convert, got {e}"));
    let store = PolicyStore::new([converted.authorization]);
    let id = peer(ns, sa);
    let conn = Connection {
        source_identity: Some(&id),
        source_ip: "10.0.0.1".parse().unwrap(),
        destination: std::net::SocketAddr::new("10.0.1.2".parse().unwrap(), port),
    };
    store.evaluate(&Target { namespace: "shop", policies: &[] }, &conn)
}

/// A peer's namespace and service account, and the destination port.
type Peer = (&'static str, &'static str, u16);

const SLEEP_8080: Peer = ("lab", "sleep", 8080);
const SLEEP_9090: Peer = ("lab", "sleep", 9090);
const GOOD_8080: Peer = ("shop", "good", 8080);
const GOOD_9090: Peer = ("shop", "good", 9090);
const ALL: [Peer; 4] = [SLEEP_8080, SLEEP_9090, GOOD_8080, GOOD_9090];

#[test]
fn new_fields_and_unevaluable_content_decide_fail_closed() {
    use Action::{Allow, Deny};
    let m = |i, j, k| ExtraAt::Match(i, j, k);
    let fake = |p| FakePolicy::new(p);
    let mut dry = policy(Deny, vec![vec![vec![ns("lab")]]]);
    dry.dry_run = true;
    // (case, policy as sent, connections it lets through; all others are refused)
    let cases: Vec<(&str, FakePolicy, Vec<Peer>)> = vec![
        ("deny serviceAccounts", fake(policy(Deny, vec![vec![vec![sa("lab", "sleep")]]])), vec![GOOD_8080, GOOD_9090]),
        (
            "deny notServiceAccounts",
            fake(policy(Deny, vec![vec![vec![not_sa("shop", "good")]]])),
            vec![GOOD_8080, GOOD_9090],
        ),
        (
            "allow serviceAccounts",
            fake(policy(Allow, vec![vec![vec![sa("shop", "good")]]])),
            vec![GOOD_8080, GOOD_9090],
        ),
        ("dry-run deny is not enforced", fake(dry), ALL.to_vec()),
        // DENY: the element holding unknown content matches every connection.
        (
            "deny, unknown field in the only match",
            fake(policy(Deny, vec![vec![vec![ns("lab")]]])).with_extra(m(0, 0, 0), 14),
            vec![],
        ),
        (
            "deny, unknown field in a match of the second clause: the first clause still selects",
            fake(policy(Deny, vec![vec![vec![port(8080)], vec![ns("lab")]]])).with_extra(m(0, 1, 0), 14),
            vec![SLEEP_9090, GOOD_9090],
        ),
        (
            "deny, unknown field in the second clause",
            fake(policy(Deny, vec![vec![vec![port(8080)], vec![ns("lab")]]])).with_extra(ExtraAt::Clause(0, 1), 3),
            vec![SLEEP_9090, GOOD_9090],
        ),
        (
            "deny, unknown field in the rule",
            fake(policy(Deny, vec![vec![vec![port(8080)], vec![ns("lab")]]])).with_extra(ExtraAt::Rule(0), 2),
            vec![],
        ),
        (
            "deny, unknown top-level field",
            fake(policy(Deny, vec![vec![vec![ns("lab")]]])).with_extra(ExtraAt::Policy, 8),
            vec![],
        ),
        ("deny, match extensions", fake(policy(Deny, vec![vec![vec![ns("lab")]]])).with_extra(m(0, 0, 0), 13), vec![]),
        // ALLOW: the element holding unknown content matches no connection.
        (
            "allow, unknown field in the only match",
            fake(policy(Allow, vec![vec![vec![ns("shop")]]])).with_extra(m(0, 0, 0), 14),
            vec![],
        ),
        (
            "allow, unknown field in one of two matches: the other still allows",
            fake(policy(Allow, vec![vec![vec![ns("shop"), ns("lab")]]])).with_extra(m(0, 0, 1), 14),
            vec![GOOD_8080, GOOD_9090],
        ),
        (
            "allow, unknown field in a clause",
            fake(policy(Allow, vec![vec![vec![ns("shop")], vec![port(8080)]]])).with_extra(ExtraAt::Clause(0, 1), 1),
            vec![],
        ),
        (
            "allow, unknown field in one of two rules",
            fake(policy(Allow, vec![vec![vec![ns("shop")]], vec![vec![ns("lab")]]])).with_extra(ExtraAt::Rule(0), 2),
            vec![SLEEP_8080, SLEEP_9090],
        ),
        (
            "allow, policy extensions: it still exists, so nothing is allowed",
            fake(policy(Allow, vec![vec![vec![ns("shop")]]])).with_extra(ExtraAt::Policy, 7),
            vec![],
        ),
    ];
    let mut wrong = Vec::new();
    for (case, fake, allowed) in &cases {
        for conn in ALL {
            let got = decide(fake, conn);
            if got.is_allowed() != allowed.contains(&conn) {
                wrong.push(format!("{case}: {conn:?} expected allowed={}, got {got:?}", allowed.contains(&conn)));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} decisions wrong:\n{}", wrong.len(), cases.len() * ALL.len(), wrong.join("\n"));
}

#[test]
fn dry_run_from_istiod_is_reported_not_enforced() {
    let mut p = policy(Action::Deny, vec![vec![vec![ns("lab")]]]);
    p.dry_run = true;
    let got = decide(&FakePolicy::new(p), SLEEP_8080);
    assert_eq!(got.reason, Reason::NoAllowPolicy, "a dry-run policy never decides");
    assert_eq!(got.dry_run_denial(), Some(&Reason::Denied(crate::policy::PolicyKey::new("shop", "p"))));
}

#[test]
fn unevaluable_content_is_kept_and_listed() {
    let sent = FakePolicy::new(policy(Action::Deny, vec![vec![vec![port(8080)], vec![ns("lab"), ns("x")]]]))
        .with_extra(ExtraAt::Match(0, 1, 1), 14)
        .with_extra(ExtraAt::Match(0, 1, 1), 13)
        .with_extra(ExtraAt::Policy, 7);
    let p = convert_bytes("shop/p", &sent.encode()).expect("kept, not rejected").authorization;
    let every = TreatedAs::MatchingEveryConnection;
    let note = |at: &str, content: &str| Unevaluated { at: at.into(), content: content.into(), treated_as: every };
    assert_eq!(
        p.unevaluated,
        vec![
            note("policy", "extensions (field 7)"),
            note("rules[0].clauses[1].matches[1]", "unknown field 14, extensions (field 13)")
        ]
    );
    assert_eq!(p.rules, vec![Rule::default()], "a DENY with top-level unknown content matches everything");
    assert_eq!(
        p.unevaluated[1].to_string(),
        "rules[0].clauses[1].matches[1]: unknown field 14, extensions (field 13) cannot be evaluated, so it is treated as matching every connection"
    );
    let dump = serde_json::to_value(&p).unwrap();
    assert_eq!(dump["unevaluated"][0]["treatedAs"], "matchingEveryConnection", "{dump}");
}

/// A string match with a kind this build does not know (field 5 of `StringMatch`) must not
/// get the policy rejected: its match is unevaluable, and a DENY then applies.
#[test]
fn unknown_string_match_kind_makes_its_match_unevaluable_not_the_policy_rejected() {
    let mut top = sec::Authorization {
        name: "p".into(),
        namespace: "shop".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        ..Default::default()
    }
    .encode_to_vec();
    // StringMatch { 5: "^lab$" } inside Match.principals, in one clause of one rule.
    let string_match = [&[0x2a, 5][..], b"^lab$"].concat();
    let one_match = [&[0x1a, string_match.len() as u8][..], &string_match].concat();
    let clause = [&[0x12, one_match.len() as u8][..], &one_match].concat();
    let rule = [&[0x0a, clause.len() as u8][..], &clause].concat();
    top.extend([0x2a, rule.len() as u8]);
    top.extend(&rule);
    let p = convert_bytes("shop/p", &top).expect("kept, not rejected").authorization;
    assert_eq!(p.unevaluated.len(), 1, "{:?}", p.unevaluated);
    assert_eq!(p.unevaluated[0].at, "rules[0].clauses[0].matches[0]");
    assert_eq!(p.rules, vec![Rule { clauses: vec![Clause::default()] }], "the clause holds for every connection");
}
