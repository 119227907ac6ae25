//! The test API server's TLS: a throwaway CA and a serving certificate for 127.0.0.1 and the
//! in-cluster DNS names, and the kubeconfig that points a client at the server with that CA
//! and a bearer token.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CLUSTER: &str = "ztunnel-test";

/// The CA's PEM (for clients) and the server's TLS configuration (HTTP/1.1 via ALPN).
pub(crate) fn generate() -> (String, Arc<ServerConfig>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "test kubernetes api ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.subject_alt_names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"]
        .into_iter()
        .map(|n| SanType::DnsName(n.try_into().expect("literal")))
        .chain([SanType::IpAddress("127.0.0.1".parse().expect("literal"))])
        .collect();
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), Arc::new(config))
}

/// A kubeconfig whose only context reaches `addr` over TLS verified by `ca_file`,
/// authenticating with `token`.
pub(crate) fn kubeconfig(addr: SocketAddr, ca_file: &Path, token: &str) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {
            "server": format!("https://{addr}"),
            "certificate-authority": ca_file.display().to_string(),
        }}],
        "users": [{"name": CLUSTER, "user": {"token": token}}],
        "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": CLUSTER}}],
        "current-context": CLUSTER,
    });
    serde_yaml::to_string(&config).expect("kubeconfig serializes")
}
