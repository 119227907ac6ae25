//! What a peer holding a valid mesh certificate (of an unrelated workload) can make a
//! destination ztunnel do, and what a pooled tunnel can carry: each test performs the attack
//! and asserts the safe outcome a user would see (status codes, refusals, bounded memory,
//! a prompt shutdown).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztunnel::identity::Identity;
use ztunnel::policy::{Action, Cidr, Match};
use ztunnel_tests::counting::CountingServer;
use ztunnel_tests::h2_flood::{PAD_DECODED, RawH2};
use ztunnel_tests::mesh::TRUST_DOMAIN;
use ztunnel_tests::policies::{hbone_connect_with, mesh_tls_connect, namespace_policy};
use ztunnel_tests::process::spawn_ready_node;
use ztunnel_tests::{Mesh, http_get, socks5_connect};

fn forwarded_for(addr: SocketAddr) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::FORWARDED, HeaderValue::from_str(&format!("for=\"{addr}\"")).unwrap());
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarded_header_does_not_satisfy_a_source_ip_policy() {
    let mut mesh = Mesh::new();
    let lab = mesh.workload("sleep", "lab", "sleep", 10, "node-a", true);
    let server = mesh.workload("web", "shop", "web", 20, "node-b", true);
    let allow = Match { source_ips: vec![Cidr::host(lab)], ..Match::default() };
    mesh.policy(namespace_policy("shop", "allow-lab-ip", Action::Allow, allow));
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    mesh.write_config();
    let a = mesh.start_node("node-a").await;
    let b = mesh.start_node("node-b").await;

    // The real lab client is allowed: its tunnel comes from its own address.
    a.echo(lab, app.addr).await.expect("the lab workload's own address is allowed");
    assert_eq!(app.accepted(), 1);

    // An unrelated mesh identity, from another address, claiming to be forwarding for lab.
    let intruder = Identity::new(TRUST_DOMAIN, "lab", "intruder");
    let web = Identity::new(TRUST_DOMAIN, "shop", "web");
    let elsewhere = mesh.subnet.ip(99);
    let claimed = SocketAddr::new(lab, 41000);
    let status = hbone_connect_with(&mesh, &intruder, &web, app.addr, Some(elsewhere), forwarded_for(claimed))
        .await
        .expect("CONNECT answered");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "forwarded: for= from an ordinary peer must not be believed");
    assert_eq!(app.accepted(), 1, "the forged request must never reach the app");
    // Attributed to the address it really came from.
    let denied = [("reporter", "destination"), ("response_flags", "DENY"), ("source_workload", "unknown")];
    let metrics = b.metrics().await;
    assert_eq!(
        b.wait_metric("istio_tcp_connections_closed_total", &denied, 1).await,
        1,
        "the denial is not attributed to the claimed workload:\n{metrics}"
    );
    assert!(
        !metrics.contains("source_workload=\"sleep\",source_workload_namespace=\"lab\",source_principal=\"spiffe://cluster.local/ns/lab/sa/intruder\""),
        "metrics attribute the intruder to the workload it claimed:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_tunnel_never_carries_another_pods_traffic() {
    let mut mesh = Mesh::new();
    // Two pods of one deployment: same namespace and service account, different addresses.
    let first = mesh.workload("client-1", "shop", "client", 10, "node-a", true);
    let second = mesh.workload("client-2", "shop", "client", 11, "node-a", true);
    let server = mesh.workload("web", "shop", "web", 20, "node-b", true);
    let allow = Match { source_ips: vec![Cidr::host(first)], ..Match::default() };
    mesh.policy(namespace_policy("shop", "allow-first-pod", Action::Allow, allow));
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    mesh.write_config();
    let a = mesh.start_node("node-a").await;
    let _b = mesh.start_node("node-b").await;

    // The first pod's connection stays open, so its pooled tunnel is live and has room.
    let mut held = socks5_connect(a.socks5(), first, app.addr).await.expect("the first pod is allowed");
    held.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    held.read_exact(&mut one).await.expect("echo through the first pod's tunnel");

    // The second pod must get its own tunnel, from its own address, which policy refuses.
    let err = socks5_connect(a.socks5(), second, app.addr).await.map(|_| ()).expect_err("the second pod is refused");
    assert!(err.to_string().contains("reply code 2"), "expected SOCKS reply 2 (not allowed), got: {err}");
    assert_eq!(app.accepted(), 1, "only the first pod reached the app");
    assert_eq!(a.pool_stats().connections_opened, 2, "one tunnel per source pod");
    drop(held);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

/// A listener whose accept queue is full, so connection attempts to it hang (SYNs dropped).
fn blackhole(ip: IpAddr) -> (std::net::TcpListener, Vec<std::net::TcpStream>, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    socket.listen(0).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let fillers = (0..2).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok());
    (listener, fillers.collect(), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_header_floods_do_not_grow_memory_without_bound() {
    const CONNECTIONS: usize = 8;
    const STREAMS: usize = 1000;
    // Just under the 64 KiB header list limit: ~60 KiB decoded per request, 15 bytes on the wire.
    const PADS: usize = 15;
    let mut mesh = Mesh::new();
    let server = mesh.workload("web", "shop", "web", 20, "node-b", true);
    mesh.write_config();
    let node = spawn_ready_node(&mesh, "node-b", mesh.subnet.ip(250), &[]).await;
    let (_listener, _fillers, app) = blackhole(server);
    let before = rss_kib(node.pid());

    let intruder = Identity::new(TRUST_DOMAIN, "lab", "intruder");
    let web = Identity::new(TRUST_DOMAIN, "shop", "web");
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let tls = mesh_tls_connect(&mesh, &intruder, &web, SocketAddr::new(server, 15008), None).await.unwrap();
        let mut h2 = RawH2::handshake(tls).await.expect("http/2 handshake");
        for _ in 0..STREAMS {
            h2.connect_padded(&app.to_string(), PADS).await.expect("send HEADERS");
        }
        h2.flush().await.unwrap();
        conns.push(h2);
    }
    // Streams wait on dials that hang; watch memory (bounded) while they are held.
    let mut peak = rss_kib(node.pid());
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss_kib(node.pid()));
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", node.pid())).unwrap().count();
    let decoded_mib = CONNECTIONS * STREAMS * PADS * PAD_DECODED / (1024 * 1024);
    println!("rss before {before} KiB, peak {peak} KiB, {fds} descriptors; headers sent decode to {decoded_mib} MiB");
    // Each connection may hold 100 app dials; 8,000 hanging dials would be 8,000 sockets.
    assert!(fds < CONNECTIONS * 100 + 200, "{fds} descriptors open: app dials per connection are not bounded");
    assert!(
        peak < before + 150 * 1024,
        "rss grew from {before} KiB to {peak} KiB under {decoded_mib} MiB of decoded headers"
    );
    let (status, _) = http_get(SocketAddr::new(mesh.subnet.ip(250), 15021), "/healthz/ready").await.unwrap();
    assert_eq!(status, 200, "the node still answers readiness under the flood");
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_sends_the_http2_preface_is_dropped_and_does_not_delay_shutdown() {
    let mut mesh = Mesh::new();
    let server = mesh.workload("web", "shop", "web", 20, "node-b", true);
    mesh.write_config();
    let mut config = mesh.node_config("node-b");
    config.hbone_handshake_timeout = Duration::from_millis(500);
    config.drain_deadline = Duration::from_secs(20);
    let b = mesh.start_with(config).await;

    let intruder = Identity::new(TRUST_DOMAIN, "lab", "intruder");
    let web = Identity::new(TRUST_DOMAIN, "shop", "web");
    let gateway = SocketAddr::new(server, 15008);
    // mTLS completes; then silence.
    let mut silent = mesh_tls_connect(&mesh, &intruder, &web, gateway, None).await.expect("mTLS completes");
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // the server's SETTINGS
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a peer silent after mTLS must be dropped after the handshake timeout");

    // Another silent peer must not hold up a shutdown until the 20 s drain deadline.
    let _silent = mesh_tls_connect(&mesh, &intruder, &web, gateway, None).await.expect("mTLS completes");
    let started = Instant::now();
    b.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited {:?} for a silent peer", started.elapsed());
}
