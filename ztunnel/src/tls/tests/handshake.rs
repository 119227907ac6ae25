//! Full handshakes between the configs: accepted peers and every peer that must be refused.

use super::*;

#[tokio::test]
async fn mutual_tls_over_loopback_with_matching_identity() {
    let ca = TestCa::new();
    let server_cert = ca.workload(&spiffe("backend", "server"));
    let client_cert = ca.workload(&spiffe("frontend", "client"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (client_io, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (server_io, _) = accepted.expect("accept");

    let (server, client) = handshake(
        server_cert.server_config().expect("server config"),
        client_cert.client_config(&[id("other", "x"), id("backend", "server")]).expect("client config"),
        server_io,
        client_io.expect("connect"),
    )
    .await;
    let server = server.expect("server accepts a mesh client");
    let client = client.expect("client accepts the expected server");

    let (_, s) = server.get_ref();
    assert_eq!(s.server_name(), None, "ClientHello must carry no SNI");
    assert_eq!(s.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let suite = s.negotiated_cipher_suite().expect("suite").suite();
    assert!(
        [rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256].contains(&suite),
        "negotiated {suite:?}, expected one of the two AES-GCM suites"
    );
    let client_id = peer_identity(s).expect("server sees the client identity");
    assert_eq!(client_id, id("frontend", "client"));

    let (_, c) = client.get_ref();
    assert_eq!(c.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(peer_identity(c).expect("client sees the server"), id("backend", "server"));
}

#[tokio::test]
async fn client_refuses_unexpected_server_identity() {
    let ca = TestCa::new();
    let server_cert = ca.workload(&spiffe("backend", "impostor"));
    let client_cert = ca.workload(&spiffe("frontend", "client"));
    let (server, client) = duplex_handshake(
        server_cert.server_config().expect("server config"),
        client_cert.client_config(&[id("backend", "server")]).expect("client config"),
    )
    .await;
    let err = client.expect_err("client must refuse the wrong server identity").to_string();
    assert!(
        err.contains(&format!("expected {}, got {}", spiffe("backend", "server"), spiffe("backend", "impostor"))),
        "client error should name expected and actual identity, got {err:?}"
    );
    assert!(server.is_err(), "server must see the aborted handshake");
}

#[tokio::test]
async fn server_refuses_client_from_foreign_ca() {
    let ca = TestCa::new();
    let foreign = TestCa::named("someone-else");
    let server_cert = ca.workload(&spiffe("backend", "server"));
    let client_cert = foreign.workload(&spiffe("frontend", "client"));
    // The client trusts our CA, so only the server's check can fail.
    let client = raw_client(
        &ca.root,
        vec![id("backend", "server")],
        Some((client_cert.chain[0].clone(), client_cert.private_key().clone_key())),
        provider(),
    );
    let (server, client) = duplex_handshake(server_cert.server_config().expect("server config"), client).await;
    let err = server.expect_err("server must refuse a foreign client").to_string();
    assert!(err.contains("UnknownIssuer"), "expected an unknown-issuer error, got {err:?}");
    assert!(client.is_err(), "client must be told it was refused");
}

#[tokio::test]
async fn server_refuses_client_without_certificate() {
    let ca = TestCa::new();
    let server_cert = ca.workload(&spiffe("backend", "server"));
    let client = raw_client(&ca.root, vec![id("backend", "server")], None, provider());
    let (server, _) = duplex_handshake(server_cert.server_config().expect("server config"), client).await;
    let err = server.expect_err("server must require a client certificate").to_string();
    assert!(err.contains("peer sent no certificates"), "got {err:?}");
}

#[tokio::test]
async fn server_refuses_client_outside_its_trust_domain() {
    let ca = TestCa::new();
    let server_cert = ca.workload(&spiffe("backend", "server"));
    let client_cert = ca.workload("spiffe://other.domain/ns/frontend/sa/client");
    let (server, _) = duplex_handshake(
        server_cert.server_config().expect("server config"),
        client_cert.client_config(&[id("backend", "server")]).expect("client config"),
    )
    .await;
    let err = server.expect_err("server must refuse a foreign trust domain").to_string();
    assert!(
        err.contains(
            "client identity spiffe://other.domain/ns/frontend/sa/client is not in trust domain \"cluster.local\""
        ),
        "got {err:?}"
    );
}

#[tokio::test]
async fn server_refuses_client_with_two_uri_sans() {
    let ca = TestCa::new();
    let server_cert = ca.workload(&spiffe("backend", "server"));
    let both = [spiffe("frontend", "a"), spiffe("frontend", "b")];
    let client = raw_client(
        &ca.root,
        vec![id("backend", "server")],
        Some(ca.raw_leaf(&[both[0].as_str(), both[1].as_str()])),
        provider(),
    );
    let (server, _) = duplex_handshake(server_cert.server_config().expect("server config"), client).await;
    let err = server.expect_err("two identities are ambiguous").to_string();
    assert!(err.contains("client certificate: certificate has 2 URI SANs"), "got {err:?}");
}

#[tokio::test]
async fn server_refuses_client_offering_only_other_suites() {
    let ca = TestCa::new();
    let server_cert = ca.workload(&spiffe("backend", "server"));
    let client_cert = ca.workload(&spiffe("frontend", "client"));
    let chacha_only = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        ..rustls::crypto::ring::default_provider()
    });
    let client = raw_client(
        &ca.root,
        vec![id("backend", "server")],
        Some((client_cert.chain[0].clone(), client_cert.private_key().clone_key())),
        chacha_only,
    );
    let (server, _) = duplex_handshake(server_cert.server_config().expect("server config"), client).await;
    let err = server.expect_err("ChaCha20 is not an HBONE suite").to_string();
    assert!(err.contains("NoCipherSuitesInCommon"), "got {err:?}");
}

/// A minimal TLS 1.2 ClientHello (no supported_versions extension), as an old client sends.
fn tls12_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0x42; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-{ECDSA,RSA}-AES128-GCM-SHA256
    body.extend([0x01, 0x00]); // null compression
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // groups x25519, P-256
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // point formats
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04, // signature algorithms
    ];
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((body.len() as u16).to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn server_refuses_tls12_only_client_with_protocol_version_alert() {
    let ca = TestCa::new();
    let server = ca.workload(&spiffe("backend", "server")).server_config().expect("config");
    let (server_io, mut client_io) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(TlsAcceptor::from(server).accept(server_io));
    client_io.write_all(&tls12_client_hello()).await.expect("send hello");
    let mut reply = [0u8; 7];
    tokio::time::timeout(LIMIT, client_io.read_exact(&mut reply))
        .await
        .expect("server answers in time")
        .expect("read alert");
    // Alert record, fatal, protocol_version (70).
    assert_eq!(reply, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70], "reply {reply:02x?}");
    let result = accept.await.expect("accept task");
    assert!(result.is_err(), "handshake must fail");
}
