//! The ADS client against the fake istiod: initial requests, ACK/NACK with per-resource
//! detail, one snapshot per response, readiness, and resync after a restart.

use std::net::IpAddr;
use std::time::Duration;

use super::testing::{FakeDenyPorts, FakeIstiod, FakeResource, FakeService, FakeWorkload};
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
