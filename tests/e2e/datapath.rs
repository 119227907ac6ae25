//! What the data path tells the two ends of a connection, and what it tells operators:
//! a reset on one side reaches the other side as a reset (through HBONE and through plaintext
//! passthrough, and when the drain deadline cuts a connection) while a complete transfer ends
//! with a clean end of stream; connections refused on 15008 are logged, rate-limited.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use ztunnel::identity::Identity;
use ztunnel_tests::mesh::{MeshNode, TRUST_DOMAIN};
use ztunnel_tests::policies::mesh_tls_connect;
use ztunnel_tests::process::spawn_ready_node_logged;
use ztunnel_tests::wait::until_ok;
use ztunnel_tests::{Mesh, echo_server, socks5_connect};

/// Bytes the resetting app sends before its reset.
const BEFORE_RESET: usize = 64 * 1024;

/// An app at `addr`: it reads a 5-byte greeting, then either resets at once (after sending
/// [`BEFORE_RESET`] bytes) when the greeting is `reset`, or otherwise reads until the client's
/// end and reports how that end looked (`Ok` for a clean end of stream).
async fn app(addr: SocketAddr) -> mpsc::UnboundedReceiver<std::io::Result<()>> {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("app cannot bind {addr}: {e}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut greeting = [0u8; 5];
                if s.read_exact(&mut greeting).await.is_err() {
                    return;
                }
                if &greeting == b"reset" {
                    let _ = s.write_all(&vec![7u8; BEFORE_RESET]).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    reset(s);
                    return;
                }
                let _ = s.write_all(b"ready").await;
                let mut sink = vec![0u8; 16 * 1024];
                let end = loop {
                    match s.read(&mut sink).await {
                        Ok(0) => break Ok(()),
                        Ok(_) => continue,
                        Err(e) => break Err(e),
                    }
                };
                let _ = tx.send(end);
            });
        }
    });
    rx
}

/// Closes `s` with an RST (`SO_LINGER` 0).
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Reads until end of stream or error (bounded, 10 s).
async fn read_to_end(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the connection neither ended nor failed within 10 s")
}

/// A client on node-a (in the mesh), a server on node-b: HBONE or, with `hbone` false, a
/// plaintext (TCP) workload reached by passthrough.
async fn mesh_with_app(hbone: bool) -> (Mesh, MeshNode, MeshNode, IpAddr, SocketAddr) {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "app", 20, "node-b", hbone);
    mesh.write_config();
    let a = mesh.start_node("node-a").await;
    let b = mesh.start_node("node-b").await;
    (mesh, a, b, client, SocketAddr::new(server, 8080))
}

/// The three outcomes through one path: app reset -> client reset, client reset -> app reset,
/// complete transfer -> clean ends; and the resets counted on node-a by reason.
async fn resets_propagate(hbone: bool) {
    let path = if hbone { "hbone" } else { "passthrough" };
    let (_mesh, a, _b, client, server) = mesh_with_app(hbone).await;
    let mut ends = app(server).await;

    // The app resets mid-transfer: the client must see a reset, not a clean end.
    let mut s = socks5_connect(a.socks5(), client, server).await.expect("socks5 connect");
    s.write_all(b"reset").await.unwrap();
    let end = read_to_end(&mut s).await;
    let err = end.expect_err(&format!("{path}: the client saw a clean end of stream after the app reset"));
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{path}: client read error: {err}");

    // The client resets: the app must see a reset.
    let mut s = socks5_connect(a.socks5(), client, server).await.expect("socks5 connect");
    s.write_all(b"hello").await.unwrap();
    let mut ready = [0u8; 5];
    s.read_exact(&mut ready).await.expect("the app answers");
    reset(s);
    let end = tokio::time::timeout(Duration::from_secs(10), ends.recv()).await.expect("app saw an end").unwrap();
    let err = end.expect_err(&format!("{path}: the app saw a clean end of stream after the client reset"));
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{path}: app read error: {err}");

    // A complete transfer ends cleanly on both sides.
    let mut s = socks5_connect(a.socks5(), client, server).await.expect("socks5 connect");
    s.write_all(b"hello").await.unwrap();
    s.read_exact(&mut ready).await.expect("the app answers");
    s.shutdown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), ends.recv()).await.expect("app saw an end").unwrap();
    end.unwrap_or_else(|e| panic!("{path}: the app saw {e} instead of the client's clean end"));

    for reason in ["upstream_reset", "client_reset"] {
        let labels = [("reporter", "source"), ("reason", reason)];
        let got = a.wait_metric("istio_tcp_connection_failures_total", &labels, 1).await;
        assert_eq!(got, 1, "{path}: node-a failures with reason {reason}:\n{}", a.metrics().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_propagate_through_hbone_both_ways_and_complete_transfers_end_cleanly() {
    resets_propagate(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_propagate_through_plaintext_passthrough_both_ways() {
    resets_propagate(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_by_the_drain_deadline_is_reset() {
    let (mesh, client, server) = Mesh::client_and_server();
    let server = echo_server(server).await;
    let _b = mesh.start_node("node-b").await;
    let mut config = mesh.node_config("node-a");
    config.drain_deadline = Duration::from_millis(500);
    let a = mesh.start_with(config).await;
    let mut live = socks5_connect(a.socks5(), client, server).await.unwrap();
    live.write_all(b"x").await.unwrap();
    let mut echoed = [0u8; 1];
    live.read_exact(&mut echoed).await.unwrap();
    let started = std::time::Instant::now();
    a.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown must stop at the deadline, took {:?}",
        started.elapsed()
    );
    let end = read_to_end(&mut live).await;
    let err = end.expect_err("a connection cut by the drain deadline ended like a complete one");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "client read error: {err}");
}

/// Lines of `log` that report a refusal of `kind`.
fn refusal_lines<'a>(log: &'a str, kind: &str) -> Vec<&'a str> {
    let field = format!("refusal=\"{kind}\"");
    log.lines().filter(|l| l.contains("WARN") && l.contains(&field)).collect()
}

/// Waits (bounded, 5 s) until `log_path` holds at least `want` refusal lines of `kind`.
async fn wait_refusals(log_path: &std::path::Path, kind: &str, want: usize) -> String {
    let what = format!("{want} refusal lines of kind {kind}");
    until_ok(&what, Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        if refusal_lines(&log, kind).len() >= want { Ok(log) } else { Err(log) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_15008_are_logged_with_peer_and_reason_and_rate_limited() {
    const FLOOD: usize = 1000;
    let mut mesh = Mesh::new();
    let server = mesh.workload("web", "shop", "web", 20, "node-b", true);
    mesh.write_config();
    let log_path = mesh.dir.path().join("node-b.log");
    let _node = spawn_ready_node_logged(&mesh, "node-b", mesh.subnet.ip(250), &[], &log_path).await;
    let gateway = SocketAddr::new(server, 15008);

    // Plaintext to 15008.
    let mut plain = TcpStream::connect(gateway).await.unwrap();
    let plain_peer = plain.local_addr().unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await.unwrap();
    let _ = read_to_end(&mut plain).await;

    // A TLS handshake that fails: the client trusts another mesh's CA, so it aborts.
    let other = Mesh::new();
    let intruder = Identity::new(TRUST_DOMAIN, "lab", "intruder");
    let web = Identity::new(TRUST_DOMAIN, "shop", "web");
    let tls_peer_ip = mesh.subnet.ip(30);
    let failed = mesh_tls_connect(&other, &intruder, &web, gateway, Some(tls_peer_ip)).await;
    let rejected = failed.as_ref().is_err_and(|e| format!("{e:#}").contains("invalid peer certificate"));
    assert!(rejected, "a handshake against another CA must fail on the certificate: {:?}", failed.map(|_| ()));

    // A well-formed mTLS connection whose request is not a CONNECT.
    let bad_request_ip = mesh.subnet.ip(31);
    let tls = mesh_tls_connect(&mesh, &intruder, &web, gateway, Some(bad_request_ip)).await.expect("mTLS completes");
    let (send, conn) = h2::client::handshake(tls).await.expect("http/2 handshake");
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::builder().method(http::Method::GET).uri("http://web/").body(()).unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.unwrap().unwrap();
    assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);

    // One warn line per kind, naming the peer and the reason.
    let expectations = [
        ("plaintext", plain_peer.to_string(), "corrupt message"),
        ("tls_handshake", format!("src.addr={tls_peer_ip}:"), "tls handshake"),
        ("bad_request", format!("src.addr={bad_request_ip}:"), "not CONNECT"),
    ];
    for (kind, peer, reason) in &expectations {
        let log = wait_refusals(&log_path, kind, 1).await;
        let lines = refusal_lines(&log, kind);
        assert_eq!(lines.len(), 1, "one {kind} refusal line expected:\n{log}");
        assert!(lines[0].contains(peer.as_str()), "the {kind} line names the peer {peer}: {}", lines[0]);
        assert!(lines[0].contains(reason), "the {kind} line gives the reason ({reason}): {}", lines[0]);
    }

    // A flood of bad handshakes (a TLS record that is no ClientHello) is logged a bounded
    // number of times.
    let bogus_record = [0x16u8, 0x03, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef];
    for _ in 0..FLOOD / 50 {
        let batch = (0..50).map(|_| async move {
            let Ok(mut s) = TcpStream::connect(gateway).await else { return };
            let _ = s.write_all(&bogus_record).await;
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        });
        futures_util::future::join_all(batch).await;
    }
    let log = wait_refusals(&log_path, "tls_handshake", 2).await;
    let lines = refusal_lines(&log, "tls_handshake").len();
    println!("{lines} tls_handshake refusal lines for {} failed handshakes", FLOOD + 1);
    // At most 10 lines per 10 s window; the flood may straddle two windows.
    assert!((2..=20).contains(&lines), "{lines} lines logged for a flood of {FLOOD} bad handshakes:\n{log}");
}

/// Local ports of the established TCP connections in `pod` whose `side` (`sport` or `dport`) is
/// 15008, as `ss` lists them: `(local port, peer port)`.
fn hbone_flows(pod: &ztunnel_tests::netns::Pod, side: &str) -> Vec<(u16, u16)> {
    let filter = format!("( {side} = :15008 )");
    let out = pod.run(&["ss", "-Htn", "state", "established", &filter]);
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((port(cols.get(2)?)?, port(cols.get(3)?)?))
        })
        .collect()
}

#[test]
fn a_new_connection_leaves_a_frozen_pooled_tunnel_for_a_fresh_one_well_before_the_connect_timeout() {
    use ztunnel_tests::capture_mesh::{CaptureMesh, Membership, connect_from, serve_in};
    if !ztunnel_tests::netns::require_root("a_new_connection_leaves_a_frozen_pooled_tunnel") {
        return;
    }
    let mut mesh = CaptureMesh::new("frozen-tunnel", &["node-a", "node-b"]);
    let client = mesh.pod("node-a", "client", "sleep", Membership::Captured);
    let far = mesh.pod("node-b", "far", "far", Membership::Captured);
    mesh.write_config();
    let _server = serve_in(&far, SocketAddr::from(([0, 0, 0, 0], 8080)));
    let za = mesh.start_ztunnel("node-a");
    let _zb = mesh.start_ztunnel("node-b");
    let dst = SocketAddr::new(IpAddr::V4(far.ip()), 8080);
    let first = connect_from(&client, dst, 1024, 10);
    assert!(first.echoed_intact, "first connection through the mesh:\n{}", first.raw);

    // Freeze the pooled tunnel: the far pod's replies on it are blackholed (a policy route for
    // that one flow), as from a peer that vanished without closing anything; new connections
    // are untouched. Table 200: table 100 holds the pod's reply routing (ztunnel's own).
    let pooled = hbone_flows(&far, "sport");
    assert_eq!(pooled.len(), 1, "one pooled tunnel into the far pod: {pooled:?}");
    let tunnel_port = pooled[0].1.to_string();
    for cmd in [
        &["ip", "route", "add", "blackhole", "default", "table", "200"][..],
        &[
            "ip",
            "rule",
            "add",
            "ipproto",
            "tcp",
            "sport",
            "15008",
            "dport",
            &tunnel_port,
            "table",
            "200",
            "pref",
            "100",
        ],
    ] {
        let out = far.run(cmd);
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let started = std::time::Instant::now();
    let second = connect_from(&client, dst, 64 * 1024, 15);
    let elapsed = started.elapsed();
    println!("second connection done after {elapsed:?} with the pooled tunnel frozen");
    assert!(second.echoed_intact, "a new connection must get through on a fresh tunnel:\n{}", second.raw);
    // The connect timeout is 10 s; the frozen tunnel is found dead in about 4 s.
    assert!(elapsed < Duration::from_secs(8), "the new connection took {elapsed:?}");
    let tunnels = hbone_flows(&client, "dport");
    assert_eq!(tunnels.len(), 1, "only the fresh tunnel is established from the client pod: {tunnels:?}");
    assert_ne!(tunnels[0].0.to_string(), tunnel_port, "the frozen tunnel was dropped");
    assert!(za.stdout().contains("did not answer a ping"), "node-a logs the dead tunnel:\n{}", za.stdout());
}
