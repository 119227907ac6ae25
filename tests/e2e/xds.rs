//! Two ztunnels configured only through a fake istiod: workloads, services and policies over
//! Delta xDS, certificates from the istiod CA. Covers traffic, removal, NACKs, an xDS restart
//! with resync, a CA outage past a refresh, and wrong CA answers. Policies from istiod with
//! real traffic are in `xds_policy.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztunnel::app::Running;
use ztunnel::config::ProxyConfig;
use ztunnel::telemetry::LogHandle;
use ztunnel::xds::ADDRESS_TYPE;
use ztunnel::xds::testing::{CaBehavior, FakeIstiod, FakeResource, FakeService, FakeWorkload};
use ztunnel_tests::counting::CountingServer;
use ztunnel_tests::wait::eventually;
use ztunnel_tests::{Mesh, MeshNode, echo_server, http_get, socks5_connect};

fn workload(name: &str, sa: &str, ip: IpAddr, node: &str) -> FakeWorkload {
    FakeWorkload {
        uid: format!("Kubernetes//Pod/default/{name}"),
        name: name.into(),
        namespace: "default".into(),
        service_account: sa.into(),
        ips: vec![ip],
        node: node.into(),
        hbone: true,
        services: Vec::new(),
    }
}

fn node_config(istiod: &FakeIstiod, node: &str) -> ProxyConfig {
    let mut config = ProxyConfig::istiod(node, istiod.xds_settings(), istiod.ca_settings(), istiod.identity(node));
    config.socks5_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.drain_deadline = Duration::from_secs(2);
    config
}

/// Starts a ztunnel without waiting for readiness.
async fn start_unready(config: ProxyConfig) -> Running {
    let log = LogHandle::detached("info").expect("log handle");
    ztunnel::app::start(config, log).await.expect("ztunnel starts")
}

/// Sends `msg` through the mesh and expects it echoed.
async fn round_trip(node: &MeshNode, source: IpAddr, dst: SocketAddr, msg: &[u8]) -> anyhow::Result<()> {
    let mut s = socks5_connect(node.socks5(), source, dst).await?;
    s.write_all(msg).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await??;
    anyhow::ensure!(back == msg, "echo differs: {back:?}");
    Ok(())
}

/// The certificate serial `/config_dump` shows for `identity`, if issued.
async fn serial(node: &MeshNode, identity: &str) -> Option<String> {
    let dump = node.config_dump().await;
    dump["certificates"]
        .as_array()?
        .iter()
        .find(|c| c["identity"] == identity)
        .and_then(|c| c["certChain"].as_array()?.first()?["serialNumber"].as_str().map(str::to_string))
}

struct TwoNodes {
    mesh: Mesh,
    istiod: FakeIstiod,
    client: IpAddr,
    server: SocketAddr,
    a: MeshNode,
    b: MeshNode,
}

/// Pushes `client` (node-a) and `server` (node-b) and starts the server's echo app; returns
/// the client's address and the app's.
async fn push_client_and_server(mesh: &Mesh, istiod: &FakeIstiod) -> (IpAddr, SocketAddr) {
    let client = mesh.subnet.ip(10);
    let server = SocketAddr::new(mesh.subnet.ip(20), 8080);
    istiod.push(vec![
        workload("client", "sleep", client, "node-a").resource(),
        workload("server", "echo", server.ip(), "node-b").resource(),
    ]);
    echo_server(server).await;
    (client, server)
}

/// client (node-a) and server (node-b) pushed through the fake istiod; both nodes ready.
async fn two_nodes() -> TwoNodes {
    let mesh = Mesh::new();
    let istiod = FakeIstiod::start(mesh.dir.path()).await;
    let (client, server) = push_client_and_server(&mesh, &istiod).await;
    let a = mesh.start_with(node_config(&istiod, "node-a")).await;
    let b = mesh.start_with(node_config(&istiod, "node-b")).await;
    TwoNodes { mesh, istiod, client, server, a, b }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_config_carries_traffic_with_ca_issued_certificates() {
    let t = two_nodes().await;
    round_trip(&t.a, t.client, t.server, b"hello over xds").await.expect("traffic flows through HBONE");
    let asked: Vec<String> = t.istiod.ca_requests().into_iter().filter_map(|r| r.impersonated).collect();
    assert!(asked.contains(&"spiffe://cluster.local/ns/default/sa/sleep".to_string()), "{asked:?}");
    assert!(asked.contains(&"spiffe://cluster.local/ns/default/sa/echo".to_string()), "{asked:?}");
    let dump = t.b.config_dump().await;
    assert_eq!(dump["certificates"][0]["state"], "Available", "{}", dump["certificates"]);
    assert_eq!(dump["xds"]["connected"], true, "{}", dump["xds"]);
    drop(t.mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_workload_stops_receiving_new_connections() {
    let mesh = Mesh::new();
    let istiod = FakeIstiod::start(mesh.dir.path()).await;
    let client = mesh.subnet.ip(10);
    let (s1, s2, vip) = (mesh.subnet.ip(21), mesh.subnet.ip(22), mesh.subnet.ip(100));
    let key = "default/web.default.svc.cluster.local".to_string();
    let mut w1 = workload("web-1", "web", s1, "node-b");
    let mut w2 = workload("web-2", "web", s2, "node-b");
    w1.services = vec![(key.clone(), 80, 8080)];
    w2.services = vec![(key, 80, 8080)];
    let web = FakeService {
        name: "web".into(),
        namespace: "default".into(),
        hostname: "web.default.svc.cluster.local".into(),
        vips: vec![vip],
        ports: vec![(80, 8080)],
    };
    istiod.push(vec![
        workload("client", "sleep", client, "node-a").resource(),
        w1.resource(),
        w2.resource(),
        web.resource(),
    ]);
    let (app1, app2) = (
        CountingServer::start(SocketAddr::new(s1, 8080)).await,
        CountingServer::start(SocketAddr::new(s2, 8080)).await,
    );
    let a = mesh.start_with(node_config(&istiod, "node-a")).await;
    let _b = mesh.start_with(node_config(&istiod, "node-b")).await;
    let connect = |n: usize| {
        let socks = a.socks5();
        async move {
            for _ in 0..n {
                let mut s = socks5_connect(socks, client, SocketAddr::new(vip, 80)).await.expect("VIP reachable");
                let _ = s.shutdown().await;
            }
        }
    };
    connect(20).await;
    eventually("both endpoints got connections", Duration::from_secs(10), || async {
        app1.accepted() > 0 && app2.accepted() > 0
    })
    .await;

    let nonces = istiod.remove(ADDRESS_TYPE, &[&w2.uid]);
    istiod.wait_request("node-a ACKs the removal", |r| r.is_ack_of(&nonces[0]) && r.stream == 1).await;
    istiod.wait_request("node-b ACKs the removal", |r| r.is_ack_of(&nonces[0]) && r.stream == 2).await;
    let (before1, before2) = (app1.accepted(), app2.accepted());
    connect(20).await;
    // All 20 reach the remaining endpoint; only then is "none went to the removed one" known.
    eventually("the remaining endpoint took all 20", Duration::from_secs(10), || async {
        app1.accepted() >= before1 + 20
    })
    .await;
    assert_eq!(app2.accepted(), before2, "the removed workload must get no new connections");
    let refused = tokio::net::TcpStream::connect(SocketAddr::new(s2, 15008)).await;
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "node-b must stop the removed workload's HBONE listener: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_resource_is_nacked_naming_it_while_others_apply() {
    let t = two_nodes().await;
    let extra = workload("late", "late", t.mesh.subnet.ip(30), "node-b");
    let nonces =
        t.istiod.push(vec![FakeResource::malformed_workload("Kubernetes//Pod/default/broken"), extra.resource()]);
    let nack = t.istiod.wait_request("a NACK of the push", |r| r.is_nack_of(&nonces[0])).await;
    let detail = nack.error.unwrap_or_default();
    assert!(
        detail.contains("Address \"Kubernetes//Pod/default/broken\"") && detail.contains("workload.addresses[0]"),
        "the NACK must name the resource and field: {detail}"
    );
    eventually("the good resource of the same push applies", Duration::from_secs(10), || async {
        let dump = t.a.config_dump().await;
        dump["workloads"].as_array().is_some_and(|w| w.iter().any(|w| w["name"] == "late"))
    })
    .await;
    let dump = t.a.config_dump().await;
    assert!(dump["xds"]["lastNack"].as_str().is_some_and(|n| n.contains("broken")), "{}", dump["xds"]);
    round_trip(&t.a, t.client, t.server, b"still fine").await.expect("earlier config keeps working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_restart_keeps_config_then_resyncs_with_initial_resource_versions() {
    let t = two_nodes().await;
    t.istiod.stop_xds().await;
    eventually("node-a notices istiod is gone", Duration::from_secs(10), || async {
        t.a.config_dump().await["xds"]["connected"] == false
    })
    .await;
    round_trip(&t.a, t.client, t.server, b"while istiod is down").await.expect("last config keeps serving");

    let late = workload("late", "late", t.mesh.subnet.ip(30), "node-b");
    t.istiod.push(vec![late.resource()]);
    t.istiod.start_xds().await;
    let resync = t
        .istiod
        .wait_request("node-a's resync", |r| r.stream > 2 && r.type_url == ADDRESS_TYPE && r.response_nonce.is_empty())
        .await;
    assert!(
        resync.initial_resource_versions.contains_key("Kubernetes//Pod/default/client")
            && resync.initial_resource_versions.contains_key("Kubernetes//Pod/default/server"),
        "initial_resource_versions must name what the client holds: {:?}",
        resync.initial_resource_versions
    );
    eventually("the change made while down arrives", Duration::from_secs(15), || async {
        let dump = t.a.config_dump().await;
        dump["workloads"].as_array().is_some_and(|w| w.iter().any(|w| w["name"] == "late"))
    })
    .await;
    round_trip(&t.a, t.client, t.server, b"after the restart").await.expect("traffic after resync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_outage_past_a_refresh_keeps_the_old_certificate_until_the_ca_returns() {
    let mesh = Mesh::new();
    let istiod = FakeIstiod::start(mesh.dir.path()).await;
    let (client, server) = push_client_and_server(&mesh, &istiod).await;
    // Leaves start a minute in the past (clock skew allowance): with a 70 s TTL the refresh
    // is due about 5 s after issuance, and the certificate stays valid for 70 s.
    let ttl = |node| {
        let mut c = node_config(&istiod, node);
        c.cert_ttl = Duration::from_secs(70);
        c
    };
    let a = mesh.start_with(ttl("node-a")).await;
    let b = mesh.start_with(ttl("node-b")).await;
    let echo_id = "spiffe://cluster.local/ns/default/sa/echo";
    let first = serial(&b, echo_id).await.expect("server certificate issued");

    istiod.set_ca(CaBehavior::Unavailable);
    let asked = istiod.ca_requests().len();
    eventually("a refresh is attempted while the CA is down", Duration::from_secs(20), || async {
        istiod.ca_requests().len() > asked + 1
    })
    .await;
    round_trip(&a, client, server, b"during the outage").await.expect("the old certificate keeps serving");
    assert_eq!(serial(&b, echo_id).await.as_deref(), Some(first.as_str()), "still the first certificate");

    istiod.set_ca(CaBehavior::Normal);
    eventually("a new certificate once the CA is back", Duration::from_secs(30), || async {
        serial(&b, echo_id).await.is_some_and(|s| s != first)
    })
    .await;
    round_trip(&a, client, server, b"after the outage").await.expect("traffic with the renewed certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_answers_with_the_wrong_san_or_chain_are_rejected() {
    let mesh = Mesh::new();
    let istiod = FakeIstiod::start(mesh.dir.path()).await;
    let server = SocketAddr::new(mesh.subnet.ip(20), 8080);
    istiod.push(vec![workload("server", "echo", server.ip(), "node-b").resource()]);
    for (behavior, expected) in [
        (CaBehavior::WrongSan, "sa/impostor when asked for spiffe://cluster.local/ns/default/sa/echo"),
        (CaBehavior::ForeignChain, "does not lead to the given roots"),
    ] {
        istiod.set_ca(behavior);
        let running = start_unready(node_config(&istiod, "node-b")).await;
        let node = MeshNode { running: Some(running) };
        eventually(&format!("the {behavior:?} answer is reported"), Duration::from_secs(15), || async {
            node.config_dump().await["certificates"].to_string().contains(expected)
        })
        .await;
        let addr = node.running.as_ref().unwrap().addrs.readiness;
        let (status, _) = http_get(addr, "/healthz/ready").await.expect("readiness answers");
        assert_ne!(status, 200, "not ready without an acceptable certificate ({behavior:?})");
        let hbone = tokio::net::TcpStream::connect(SocketAddr::new(server.ip(), 15008)).await;
        if let Ok(mut s) = hbone {
            // A listener may exist, but no handshake can succeed without a certificate.
            let mut buf = [0u8; 1];
            let _ = s.write_all(b"\x16\x03\x01\x00\x01\x00").await;
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            assert!(!matches!(n, Ok(Ok(1)) if buf[0] == 0x16), "no TLS server hello without a certificate");
        }
        node.shutdown().await;
    }
    istiod.set_ca(CaBehavior::Normal);
    let node = mesh.start_with(node_config(&istiod, "node-b")).await;
    assert!(serial(&node, "spiffe://cluster.local/ns/default/sa/echo").await.is_some());
}

#[path = "xds_policy.rs"]
mod policies;
