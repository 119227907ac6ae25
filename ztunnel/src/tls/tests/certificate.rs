//! WorkloadCertificate construction, config restrictions and caching, peer identity lookup.

use super::*;

#[test]
fn configs_are_restricted_and_cached() {
    let ca = TestCa::new();
    let cert = ca.workload(&spiffe("ns1", "sa1"));
    let suites: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
    assert_eq!(suites, [rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256]);
    let server = cert.server_config().expect("server config");
    assert_eq!(server.alpn_protocols, vec![ALPN_H2.to_vec()]);
    assert!(Arc::ptr_eq(&server, &cert.server_config().expect("again")));

    let (a, b) = (id("x", "a"), id("x", "b"));
    let client = cert.client_config(&[a.clone(), b.clone()]).expect("client config");
    assert!(!client.enable_sni, "SNI must be off");
    assert_eq!(client.alpn_protocols, vec![ALPN_H2.to_vec()]);
    let same = cert.client_config(&[b.clone(), a.clone(), b]).expect("permuted");
    assert!(Arc::ptr_eq(&client, &same), "same identity set must reuse the config");
    let other = cert.client_config(&[a]).expect("subset");
    assert!(!Arc::ptr_eq(&client, &other));
    let err = cert.client_config(&[]).expect_err("no expected identity");
    assert!(err.to_string().contains("no expected server identities"), "got {err}");
}

#[test]
fn workload_certificate_reads_identity_and_rejects_bad_input() {
    let ca = TestCa::new();
    let cert = ca.workload(&spiffe("ns1", "sa1"));
    assert_eq!(cert.identity, id("ns1", "sa1"));
    assert!(cert.not_after > cert.not_before);
    assert!(!cert.serial().is_empty() && cert.serial().chars().all(|c| c.is_ascii_digit()));
    assert!(cert.chain_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cert.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));

    let (leaf, key) = ca.raw_leaf(&[&spiffe("ns1", "sa1")]);
    let (_, other_key) = ca.raw_leaf(&[&spiffe("ns1", "sa1")]);
    let root = vec![ca.root.clone()];
    let cases: Vec<(Result<WorkloadCertificate, TlsError>, &str)> = vec![
        (WorkloadCertificate::new(vec![], key.clone_key(), root.clone()), "chain is empty"),
        (WorkloadCertificate::new(vec![leaf.clone()], key.clone_key(), vec![]), "has no trust roots"),
        (WorkloadCertificate::new(vec![leaf.clone()], other_key, root.clone()), "private key does not fit"),
        (WorkloadCertificate::new(vec![ca.raw_leaf(&[]).0], key.clone_key(), root.clone()), "has no URI SAN"),
        (
            WorkloadCertificate::new(vec![ca.raw_leaf(&["spiffe://td/ns/a"]).0], key.clone_key(), root.clone()),
            "missing \"sa\"",
        ),
        (WorkloadCertificate::new(vec![CertificateDer::from(vec![1, 2, 3])], key, root), "not a valid X.509"),
    ];
    for (result, want) in cases {
        let err = result.expect_err(want).to_string();
        assert!(err.contains(want), "expected error containing {want:?}, got {err:?}");
    }
}

#[test]
fn peer_identity_requires_a_peer_certificate() {
    let ca = TestCa::new();
    let config = ca.workload(&spiffe("ns1", "sa1")).client_config(&[id("a", "b")]).expect("cfg");
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("x").expect("name")).expect("connection");
    let err = peer_identity(&conn).expect_err("no handshake yet");
    assert!(matches!(err, TlsError::NoPeerCertificate), "got {err:?}");
}
