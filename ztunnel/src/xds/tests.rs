//! The ADS client against the fake istiod: initial requests, ACK/NACK with per-resource
//! detail, one snapshot per response, readiness, resync after a restart, and policies with
//! content this build cannot evaluate (ACKed and enforced fail closed, never NACKed).

use std::net::IpAddr;
use std::time::Duration;

use super::testing::{ExtraAt, FakeDenyPorts, FakeIstiod, FakePolicy, FakeResource, FakeService, FakeWorkload};
use super::*;
use crate::readiness::Ready;
use crate::state::SharedState;

fn workload(uid: &str, ip: &str) -> FakeWorkload {
    FakeWorkload {
        uid: uid.into(),
        name: uid.into(),
        namespace: "default".into(),
        service_account: "sleep".into(),
        ips: vec![ip.parse().unwrap()],
        node: "node-a".into(),
        hbone: true,
        services: vec![("default/web.default.svc.cluster.local".into(), 80, 8080)],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn syncs_nacks_bad_resources_and_resyncs_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let istiod = FakeIstiod::start(dir.path()).await;
    let service = FakeService {
        name: "web".into(),
        namespace: "default".into(),
        hostname: "web.default.svc.cluster.local".into(),
        vips: vec![ip("10.96.0.1")],
        ports: vec![(80, 8080)],
    };
    istiod.push(vec![
        workload("uid-a", "10.0.0.1").resource(),
        service.resource(),
        FakeResource::malformed_workload("uid-broken"),
        FakeDenyPorts { name: "deny".into(), namespace: "default".into(), ports: vec![9090] }.resource(),
    ]);

    let state = SharedState::new("");
    let ready = Ready::new();
    let config = XdsClientConfig {
        settings: istiod.xds_settings(),
        identity: istiod.identity("ztunnel-abc"),
        cluster_id: "cluster-7".into(),
        node_name: "node-a".into(),
        trust_domain: "cluster.local".into(),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let client = XdsClient::new(config, state.clone(), &ready).unwrap();
    assert_eq!(ready.pending().len(), 2, "one readiness task per type: {:?}", ready.pending());
    let mut synced = client.synced();
    let status = client.status();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(client.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(20), synced.wait_for(|s| *s)).await.unwrap().unwrap();
    assert!(ready.is_ready(), "ready once both types applied: {:?}", ready.pending());

    let initial = istiod.wait_request("the initial Address request", |r| r.type_url == ADDRESS_TYPE).await;
    assert_eq!(
        initial.node_id.as_deref(),
        Some("ztunnel~10.244.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local")
    );
    assert_eq!(initial.metadata.get("NODE_NAME").map(String::as_str), Some("node-a"));
    assert_eq!(initial.metadata.get("INSTANCE_IPS").map(String::as_str), Some("10.244.0.5"));
    assert_eq!(initial.cluster_id.as_deref(), Some("cluster-7"));
    assert!(initial.authorization.as_deref().is_some_and(|a| a.starts_with("Bearer ")));
    assert!(initial.initial_resource_versions.is_empty(), "nothing known on the first stream");

    let nack = istiod
        .wait_request("a NACK of the Address response", |r| r.type_url == ADDRESS_TYPE && r.error.is_some())
        .await;
    let detail = nack.error.unwrap();
    assert!(detail.contains("Address \"uid-broken\"") && detail.contains("workload.addresses[0]"), "{detail}");
    assert!(!detail.contains("uid-a"), "only the bad resource is named: {detail}");
    istiod
        .wait_request("an ACK of the Authorization response", |r| {
            r.type_url == AUTHORIZATION_TYPE && !r.response_nonce.is_empty() && r.error.is_none()
        })
        .await;

    let st = state.read();
    let a = st.workload_by_ip(ip("10.0.0.1")).expect("the good workload applied despite the NACK");
    assert_eq!(a.identity().to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
    let svc = st.service_by_vip(ip("10.96.0.1")).expect("service applied");
    assert_eq!(st.endpoints_for(&svc, 80).len(), 1, "endpoint from the workload's services map");
    assert_eq!(st.policies().len(), 1);
    assert_eq!(status.borrow().nacks, 1);

    // One push with two resources is one snapshot.
    let before = state.generation();
    let nonces = istiod.push(vec![workload("uid-b", "10.0.0.2").resource(), workload("uid-c", "10.0.0.3").resource()]);
    istiod.wait_request("ACK of the two-workload push", |r| r.is_ack_of(&nonces[0])).await;
    assert_eq!(state.generation(), before + 1, "one response, one new snapshot");

    // Restart: the config keeps serving while istiod is away, then the client resyncs.
    istiod.stop_xds().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(state.read().workload_by_ip(ip("10.0.0.1")).is_some(), "last config keeps serving while istiod is down");
    istiod.remove(ADDRESS_TYPE, &["uid-a"]);
    istiod.start_xds().await;
    let resync = istiod
        .wait_request("the resync request", |r| {
            r.stream == 2 && r.type_url == ADDRESS_TYPE && r.response_nonce.is_empty()
        })
        .await;
    let known: Vec<&str> = resync.initial_resource_versions.keys().map(String::as_str).collect();
    assert_eq!(known, ["default/web.default.svc.cluster.local", "uid-a", "uid-b", "uid-c"], "broken one never applied");
    wait_until("uid-a is removed after the resync", || state.read().workload_by_ip(ip("10.0.0.1")).is_none()).await;
    assert!(state.read().workload_by_ip(ip("10.0.0.2")).is_some());

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("client stops").unwrap();
}

/// Starts an ADS client against `istiod` and waits until both types are applied.
async fn synced_client(istiod: &FakeIstiod) -> (SharedState, tokio::sync::oneshot::Sender<()>) {
    let state = SharedState::new("");
    let ready = Ready::new();
    let config = XdsClientConfig {
        settings: istiod.xds_settings(),
        identity: istiod.identity("ztunnel-policies"),
        cluster_id: "Kubernetes".into(),
        node_name: "node-a".into(),
        trust_domain: "cluster.local".into(),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    let client = XdsClient::new(config, state.clone(), &ready).unwrap();
    let mut synced = client.synced();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(client.run(async move {
        let _ = stop_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(20), synced.wait_for(|s| *s)).await.unwrap().unwrap();
    (state, stop_tx)
}

/// `default/deny-lab`: DENY for one principal (`Match.principals`, field 3), whose only
/// string match is `exact` or, when `None`, a kind this build's proto does not declare
/// (field 5 of `StringMatch`, as a newer istiod could send).
fn deny_lab(exact: Option<&str>) -> FakeResource {
    use prost::Message;
    let top = proto::security::Authorization {
        name: "deny-lab".into(),
        namespace: "default".into(),
        scope: proto::security::Scope::Namespace as i32,
        action: proto::security::Action::Deny as i32,
        ..Default::default()
    };
    let string_match = match exact {
        Some(v) => [&[0x0a, v.len() as u8][..], v.as_bytes()].concat(),
        None => [&[0x2a, 7][..], b"^lab/.*"].concat(),
    };
    let nest = |tag: u8, body: &[u8]| [&[tag, body.len() as u8][..], body].concat();
    let rule = nest(0x0a, &nest(0x12, &nest(0x1a, &string_match)));
    let bytes = [top.encode_to_vec(), nest(0x2a, &rule)].concat();
    FakeResource { type_url: AUTHORIZATION_TYPE, name: "default/deny-lab".into(), bytes }
}

#[tokio::test]
async fn policies_with_unknown_content_are_acked_kept_and_fail_closed() {
    use crate::policy::{Action, Authorization, Clause, Rule, Scope, TreatedAs};
    let dir = tempfile::tempdir().unwrap();
    let istiod = FakeIstiod::start(dir.path()).await;
    istiod.push(vec![deny_lab(Some("cluster.local/ns/lab/sa/sleep"))]);
    let (state, stop) = synced_client(&istiod).await;
    let narrow = state.read().policies().get("default/deny-lab").cloned().expect("first version applied");
    assert_eq!(narrow.rules[0].clauses[0].matches[0].principals.len(), 1, "{narrow:?}");

    // A newer version whose only string match has an unknown kind: ACKed (a NACK would keep
    // the narrower first version in force), and the match holds for every connection.
    let nonces = istiod.push(vec![deny_lab(None)]);
    let answer = istiod.wait_request("the answer to the second version", |r| r.response_nonce == nonces[0]).await;
    assert!(answer.error.is_none(), "must be ACKed, got NACK: {:?}", answer.error);
    let kept = state.read().policies().get("default/deny-lab").cloned().expect("second version kept");
    assert_eq!(kept.rules, vec![Rule { clauses: vec![Clause::default()] }], "the clause holds for every connection");
    assert_eq!(kept.unevaluated.len(), 1, "{:?}", kept.unevaluated);
    assert_eq!(kept.unevaluated[0].at, "rules[0].clauses[0].matches[0]");
    assert_eq!(kept.unevaluated[0].treated_as, TreatedAs::MatchingEveryConnection);

    // An ALLOW with unknown top-level content is kept, and allows nothing.
    let allow = Authorization {
        name: "allow-all".into(),
        namespace: "default".into(),
        scope: Scope::Namespace,
        action: Action::Allow,
        rules: vec![Rule::default()],
        dry_run: false,
        unevaluated: Vec::new(),
    };
    let nonces = istiod.push(vec![FakePolicy::new(allow).with_extra(ExtraAt::Policy, 9).resource()]);
    istiod.wait_request("the ACK of the ALLOW", |r| r.is_ack_of(&nonces[0])).await;
    let kept = state.read().policies().get("default/allow-all").cloned().expect("ALLOW kept");
    assert!(kept.rules.is_empty(), "an ALLOW with unevaluable content matches nothing: {kept:?}");
    assert_eq!(kept.unevaluated[0].content, "unknown field 9");
    let _ = stop.send(());
}
