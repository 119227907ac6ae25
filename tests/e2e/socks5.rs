//! The SOCKS5 entry held to what it is for: local workloads reaching the mesh. Each test plays
//! a local process abusing it: clients that never finish the handshake, clients that are no
//! workload of the node, and clients asking for the node's own ports.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use ztunnel_tests::{Mesh, echo_server, http_get, socks5_connect};

/// A TCP connection to `socks` from `source` that has sent nothing.
async fn connect_from(source: IpAddr, socks: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("client socket");
    socket.bind(SocketAddr::new(source, 0)).unwrap_or_else(|e| panic!("binding {source}: {e}"));
    socket.connect(socks).await.unwrap_or_else(|e| panic!("connecting to socks5 at {socks}: {e}"))
}

/// Waits (bounded) until the server closes `stream`; returns the bytes it sent before that,
/// or `None` if it was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_the_handshake_timeout() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", false);
    mesh.write_config();
    let server = echo_server(SocketAddr::new(server, 8080)).await;
    let a = mesh.start_node("node-a").await;

    // The attack: many local connections that never say a word.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(connect_from(client, a.socks5()).await);
    }
    let waits = silent.iter_mut().map(|s| closed_within(s, Duration::from_secs(30)));
    let outcomes = futures_util::future::join_all(waits).await;
    let still_open = outcomes.iter().filter(|o| o.is_none()).count();
    assert_eq!(still_open, 0, "{still_open} of 200 silent clients were still held open after 30 s");
    assert!(outcomes.iter().all(|o| o.as_deref() == Some(&[][..])), "silent clients get no bytes: {outcomes:?}");

    // Clients that do speak are still served.
    let mut s = socks5_connect(a.socks5(), client, server).await.expect("a real client is served");
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back)).await.expect("echo within 10 s").unwrap();
    assert_eq!(&back, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_is_no_workload_of_this_node_is_closed_before_the_handshake() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let elsewhere = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let a = mesh.start_node("node-a").await;

    for source in [mesh.subnet.ip(99), elsewhere] {
        let mut s = connect_from(source, a.socks5()).await;
        // A greeting offering "no authentication", as any SOCKS5 client sends first.
        let _ = s.write_all(&[5, 1, 0]).await;
        let answer = closed_within(&mut s, Duration::from_secs(10)).await;
        assert_eq!(
            answer.as_deref(),
            Some(&[][..]),
            "a client at {source} (not a workload of node-a) must be closed without any answer"
        );
    }
    // The node's own workload still gets its greeting answered.
    let mut s = connect_from(client, a.socks5()).await;
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut greet = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut greet)).await.expect("greeting answered").unwrap();
    assert_eq!(greet, [5, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_the_nodes_own_ports_is_refused_while_workloads_are_reached() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let server = echo_server(SocketAddr::new(server, 8080)).await;
    // Something else listening on this host at an address that is no workload's.
    let host_service = echo_server(SocketAddr::new(mesh.subnet.ip(200), 9000)).await;
    let _b = mesh.start_node("node-b").await;
    // Node A's admin server on a workload's own address: reachable from the host, but never
    // through SOCKS5, even though the address belongs to a mesh workload.
    let mut config = mesh.node_config("node-a");
    config.admin_addr = SocketAddr::new(client, 0);
    let a = mesh.start_with(config).await;
    let addrs = a.addrs();
    let (status, _) = http_get(addrs.admin, "/config_dump").await.expect("admin answers directly");
    assert_eq!(status, 200);

    for (what, dst) in [
        ("the admin port on a workload's address", addrs.admin),
        ("the metrics port", addrs.metrics),
        ("the readiness port", addrs.readiness),
        ("the socks5 port", addrs.socks5.expect("socks5 on")),
        ("a host service on loopback", host_service),
    ] {
        let refused = socks5_connect(a.socks5(), client, dst).await.map(|_| ());
        let err = refused.expect_err(&format!("CONNECT to {what} ({dst}) must be refused"));
        assert!(err.to_string().contains("reply code 2"), "{what} ({dst}): expected reply 2 (not allowed): {err:#}");
    }

    let mut s = socks5_connect(a.socks5(), client, server).await.expect("a workload is reached through socks5");
    s.write_all(b"still works").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await.expect("echo ends").unwrap();
    assert_eq!(back, b"still works");
}
