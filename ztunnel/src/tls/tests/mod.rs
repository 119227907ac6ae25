//! Tests for the TLS configs: a throwaway CA and a handshake harness shared by the
//! handshake tests (real TLS over in-memory pipes and loopback TCP) and the certificate and
//! config unit tests.

mod certificate;
mod handshake;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::verifier::ServerIdentityVerifier;
use super::*;

const TD: &str = "cluster.local";
const LIMIT: Duration = Duration::from_secs(10);

/// A throwaway root that signs leaves with arbitrary SANs.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        TestCa::named("tls-tests")
    }

    fn named(organization: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate root key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, organization);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).expect("self-sign root").der().clone();
        TestCa { issuer: Issuer::new(params, key), root }
    }

    fn raw_leaf(&self, sans: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            sans.iter().map(|s| SanType::URI(s.to_string().try_into().expect("ia5 SAN"))).collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    fn workload(&self, id: &str) -> WorkloadCertificate {
        let (leaf, key) = self.raw_leaf(&[id]);
        WorkloadCertificate::new(vec![leaf], key, vec![self.root.clone()]).expect("workload certificate")
    }
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa)
}

fn spiffe(ns: &str, sa: &str) -> String {
    id(ns, sa).to_string()
}

/// A client config like ours but with an arbitrary (or no) client certificate and suites.
fn raw_client(
    root: &CertificateDer<'static>,
    expected: Vec<Identity>,
    client_cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    store.add(root.clone()).expect("add root");
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS_VERSIONS)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerIdentityVerifier::new(Arc::new(store), expected)));
    let mut config = match client_cert {
        Some((leaf, key)) => builder.with_client_auth_cert(vec![leaf], key).expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    Arc::new(config)
}

type Outcome<T> = Result<T, std::io::Error>;

/// Runs both sides of a handshake; the client names a DNS host so SNI would be sent if enabled.
/// After the handshake the client writes and the server echoes, so a server-side rejection of
/// the client certificate surfaces on the client too.
async fn handshake<IO>(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_io: IO,
    client_io: IO,
) -> (Outcome<server::TlsStream<IO>>, Outcome<client::TlsStream<IO>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let name = ServerName::try_from("example.com").expect("server name");
    let accept = async {
        let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.flush().await?;
        Ok(tls)
    };
    let connect = async {
        let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping", "echo through the tunnel");
        Ok(tls)
    };
    tokio::time::timeout(LIMIT, async { tokio::join!(accept, connect) })
        .await
        .expect("handshake must finish within the time limit")
}

async fn duplex_handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Outcome<server::TlsStream<tokio::io::DuplexStream>>, Outcome<client::TlsStream<tokio::io::DuplexStream>>) {
    let (s, c) = tokio::io::duplex(64 * 1024);
    handshake(server, client, s, c).await
}
