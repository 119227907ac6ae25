//! Authorization policies from the fake istiod, with real traffic from node-a's client to
//! node-b's server: a dry-run DENY is reported and not enforced, a DENY on `serviceAccounts`
//! refuses that account only, and a policy carrying content this build cannot evaluate (a
//! field its proto does not declare) fails closed: a DENY denies, an ALLOW never allows.

use ztunnel::policy::{Action, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch};
use ztunnel::xds::testing::{ExtraAt, FakePolicy};

use super::*;

const DENIED: &str = "istio_authorization_denied_connections_total";
const DRY_RUN_DENIED: &str = "istio_authorization_dry_run_denials_total";

/// A `default` namespace policy of one rule, one clause, one match.
fn policy(name: &str, action: Action, m: Match) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: "default".into(),
        scope: Scope::Namespace,
        action,
        rules: vec![Rule { clauses: vec![Clause { matches: vec![m] }] }],
        dry_run: false,
        unevaluated: Vec::new(),
    }
}

fn service_account(name: &str) -> Match {
    let sa = ServiceAccountMatch { namespace: "default".into(), service_account: name.into() };
    Match { service_accounts: vec![sa], ..Match::default() }
}

fn namespace(name: &str) -> Match {
    Match { namespaces: vec![StringMatch::Exact(name.into())], ..Match::default() }
}

/// Pushes `fake` and waits until node-b (the second stream) has answered the push: it
/// applies a response before answering it.
async fn push_policy(t: &TwoNodes, fake: &FakePolicy) {
    let nonces = t.istiod.push(vec![fake.resource()]);
    let what = format!("node-b's answer to {}", fake.policy.name);
    t.istiod.wait_request(&what, |r| r.response_nonce == nonces[0] && r.stream == 2).await;
}

/// Asserts the SOCKS5 connect from `source` is refused with reply 2: node-b answered the
/// CONNECT with 401.
async fn assert_refused(t: &TwoNodes, source: IpAddr, why: &str) {
    let err = socks5_connect(t.a.socks5(), source, t.server).await.map(|_| ()).expect_err(why);
    assert!(err.to_string().contains("reply code 2"), "{why}: expected SOCKS reply 2 (not allowed), got: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_deny_from_istiod_is_reported_not_enforced() {
    let t = two_nodes().await;
    let mut audit = policy("audit-default", Action::Deny, namespace("default"));
    audit.dry_run = true;
    push_policy(&t, &FakePolicy::new(audit)).await;

    round_trip(&t.a, t.client, t.server, b"dry run lets me through").await.expect("a dry-run DENY never denies");
    let would = [("policy", "default/audit-default"), ("reason", "explicitly_denied")];
    assert_eq!(t.b.wait_metric(DRY_RUN_DENIED, &would, 1).await, 1, "reported:\n{}", t.b.metrics().await);
    assert_eq!(t.b.wait_metric(DENIED, &[], 0).await, 0, "nothing enforced:\n{}", t.b.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_on_service_accounts_from_istiod_denies_that_account_only() {
    let t = two_nodes().await;
    let other = t.mesh.subnet.ip(11);
    t.istiod.push(vec![workload("other", "other", other, "node-a").resource()]);
    push_policy(&t, &FakePolicy::new(policy("deny-sleep", Action::Deny, service_account("sleep")))).await;

    assert_refused(&t, t.client, "default/sleep is denied by serviceAccounts").await;
    eventually("node-a knows the other client", Duration::from_secs(15), || async {
        t.a.state().read().workload_by_ip(other).is_some()
    })
    .await;
    round_trip(&t.a, other, t.server, b"another account").await.expect("default/other is not denied");
    let denied = [("policy", "default/deny-sleep"), ("reason", "explicitly_denied")];
    assert_eq!(t.b.wait_metric(DENIED, &denied, 1).await, 1, "{}", t.b.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_with_unknown_match_content_from_istiod_denies() {
    let t = two_nodes().await;
    // A DENY for a namespace no client is in, narrowed further by a condition this build
    // cannot read: the match holds for every connection, so the client is denied.
    let deny = FakePolicy::new(policy("deny-unknown", Action::Deny, namespace("nobody")))
        .with_extra(ExtraAt::Match(0, 0, 0), 14);
    push_policy(&t, &deny).await;
    assert_refused(&t, t.client, "a DENY whose match cannot be evaluated denies").await;
    let denied = [("policy", "default/deny-unknown"), ("reason", "explicitly_denied")];
    assert_eq!(t.b.wait_metric(DENIED, &denied, 1).await, 1, "{}", t.b.metrics().await);
    let dump = t.b.config_dump().await;
    let shown = dump["policies"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "deny-unknown")).cloned();
    let notes = shown.map(|p| p["unevaluated"].clone()).unwrap_or_default();
    assert_eq!(notes[0]["at"], "rules[0].clauses[0].matches[0]", "config_dump shows it: {}", dump["policies"]);
    assert_eq!(notes[0]["content"], "unknown field 14", "{notes}");
    assert_eq!(notes[0]["treatedAs"], "matchingEveryConnection", "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_with_unknown_match_content_from_istiod_never_allows() {
    let t = two_nodes().await;
    // An ALLOW for the client's own namespace with a condition this build cannot read never
    // allows; and since an ALLOW policy exists, nothing else allows the client either.
    let allow = FakePolicy::new(policy("allow-unknown", Action::Allow, namespace("default")))
        .with_extra(ExtraAt::Match(0, 0, 0), 14);
    push_policy(&t, &allow).await;
    assert_refused(&t, t.client, "an ALLOW whose match cannot be evaluated never allows").await;
    let not_allowed = [("policy", "-"), ("reason", "not_allowed")];
    assert_eq!(t.b.wait_metric(DENIED, &not_allowed, 1).await, 1, "{}", t.b.metrics().await);
}
