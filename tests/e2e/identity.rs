//! Identity is enforced on both ends of a tunnel: wrong server identity, plaintext on 15008 and
//! client certificates from a foreign CA are all refused before any byte reaches the app.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use ztunnel::hbone::{H2Settings, client::ClientConnection};
use ztunnel::identity::{Identity, LocalCa};
use ztunnel_tests::counting::CountingServer;
use ztunnel_tests::mesh::{TRUST_DOMAIN, metric_sum, write_atomically};
use ztunnel_tests::{Mesh, socks5_connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_the_wrong_identity_is_refused() {
    let mut mesh = Mesh::new();
    let client = mesh.workload("client", "default", "sleep", 10, "node-a", true);
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    // Node A believes the server runs as `sa/billing`; node B (the real server) presents `sa/echo`.
    let a_view = mesh.dir.path().join("node-a.yaml");
    write_atomically(&a_view, &mesh.render().replace("serviceAccount: echo", "serviceAccount: billing"));
    let mut a_config = mesh.node_config("node-a");
    a_config.config_file = Some(a_view);
    let a = mesh.start_with(a_config).await;
    let _b = mesh.start_node("node-b").await;

    let err =
        socks5_connect(a.socks5(), client, app.addr).await.expect_err("a server with another identity must be refused");
    assert!(err.to_string().contains("reply code"), "expected a SOCKS refusal, got: {err}");
    assert_eq!(app.accepted(), 0, "the app must never see the connection");
    let metrics = a.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "istio_tcp_connections_closed_total",
            &[("response_flags", "CONNECT"), ("destination_principal", "spiffe://cluster.local/ns/default/sa/billing")]
        ),
        1,
        "the refused connection is counted with response_flags=CONNECT:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_the_hbone_port_is_refused() {
    let mut mesh = Mesh::new();
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let _b = mesh.start_node("node-b").await;

    let mut s = tokio::net::TcpStream::connect(SocketAddr::new(server, 15008)).await.expect("15008 listens");
    let request = format!("CONNECT {}:8080 HTTP/1.1\r\nHost: {}:8080\r\n\r\n", server, server);
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/"), "plaintext must get no HTTP answer: {answer:?}");
    assert!(answer.is_empty() || answer[0] == 0x15, "only a TLS alert (or nothing) may come back: {answer:?}");
    assert_eq!(app.accepted(), 0, "the app must never see the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_a_foreign_ca_is_refused() {
    let mut mesh = Mesh::new();
    let server = mesh.workload("server", "default", "echo", 20, "node-b", true);
    mesh.write_config();
    let app = CountingServer::start(SocketAddr::new(server, 8080)).await;
    let _b = mesh.start_node("node-b").await;
    let server_id = Identity::new(TRUST_DOMAIN, "default", "echo");

    // Same trust domain and a plausible identity, but signed by another root.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = LocalCa::load_or_generate(foreign_dir.path(), TRUST_DOMAIN).unwrap();
    let cert = foreign.issue(&Identity::new(TRUST_DOMAIN, "default", "sleep"), Duration::from_secs(3600)).unwrap();
    // Trust the mesh root for the server's certificate so only the client side can fail.
    let mesh_ca = LocalCa::load_or_generate(&mesh.ca_dir(), TRUST_DOMAIN).unwrap();
    let cert =
        ztunnel::tls::WorkloadCertificate::new(cert.chain.clone(), cert.private_key().clone_key(), mesh_ca.roots())
            .unwrap();
    let config = cert.client_config(std::slice::from_ref(&server_id)).unwrap();

    let tcp = tokio::net::TcpStream::connect(SocketAddr::new(server, 15008)).await.unwrap();
    let name = ServerName::IpAddress(server.into());
    // TLS 1.3 clients finish before the server checks their certificate, so the refusal shows
    // up on first use of the connection at the latest.
    let refused = match TlsConnector::from(config).connect(name, tcp).await {
        Err(_) => true,
        Ok(tls) => match ClientConnection::handshake(tls, "server", &H2Settings::default()).await {
            Err(_) => true,
            Ok(conn) => {
                let req = Request::builder().method(Method::CONNECT).uri(format!("{}:8080", server)).body(()).unwrap();
                tokio::time::timeout(Duration::from_secs(5), conn.connect(req, None))
                    .await
                    .expect("answer or failure")
                    .is_err()
            }
        },
    };
    assert!(refused, "a client certificate from a foreign CA must be refused");
    assert_eq!(app.accepted(), 0, "the app must never see the connection");
}
