//! Authorization helpers for tests: policy builders in the shape of Istio's L4
//! AuthorizationPolicy conversion, and a raw HBONE client that reports the status a
//! destination ztunnel answers a `CONNECT` with.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{HeaderMap, Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use ztunnel::hbone::{self, H2Settings, client::ClientConnection};
use ztunnel::identity::{Identity, LocalCa};
use ztunnel::policy::{Action, Authorization, Clause, Match, Rule, Scope, StringMatch};

use crate::mesh::{Mesh, TRUST_DOMAIN};

/// A namespace-scoped policy with one rule of one clause holding `m`.
pub fn namespace_policy(namespace: &str, name: &str, action: Action, m: Match) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope: Scope::Namespace,
        action,
        rules: vec![Rule { clauses: vec![Clause { matches: vec![m] }] }],
        dry_run: false,
        unevaluated: Vec::new(),
    }
}

pub fn exact(value: &str) -> StringMatch {
    StringMatch::Exact(value.into())
}

/// `cluster.local/ns/NS/sa/SA`: a principal as policies write it (no `spiffe://`).
pub fn principal(namespace: &str, service_account: &str) -> StringMatch {
    exact(&format!("{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"))
}

/// Sends one HBONE `CONNECT` for `target` to the ztunnel serving `target`'s workload on
/// 15008, as `client` (a certificate from the mesh CA), expecting the server to be
/// `server`. Returns the response status (200 when the tunnel opened).
pub async fn hbone_connect_status(
    mesh: &Mesh,
    client: &Identity,
    server: &Identity,
    target: SocketAddr,
) -> anyhow::Result<StatusCode> {
    hbone_connect_with(mesh, client, server, target, None, HeaderMap::new()).await
}

/// Like [`hbone_connect_status`], from local address `from` (any port) when given, with
/// `headers` on the request: what any peer holding a mesh certificate can send.
pub async fn hbone_connect_with(
    mesh: &Mesh,
    client: &Identity,
    server: &Identity,
    target: SocketAddr,
    from: Option<IpAddr>,
    headers: HeaderMap,
) -> anyhow::Result<StatusCode> {
    let tls = mesh_tls_connect(mesh, client, server, SocketAddr::new(target.ip(), 15008), from).await?;
    let conn = ClientConnection::handshake(tls, "test-client", &H2Settings::default()).await?;
    let mut request = Request::builder().method(Method::CONNECT).uri(target.to_string()).body(())?;
    *request.headers_mut() = headers;
    match tokio::time::timeout(Duration::from_secs(10), conn.connect(request, None)).await? {
        Ok(_) => Ok(StatusCode::OK),
        Err(hbone::Error::Status { status, .. }) => Ok(status),
        Err(e) => Err(e.into()),
    }
}

/// Completes mTLS with the ztunnel at `gateway` (its 15008) as `client`, requiring `server`,
/// from local address `from` when given.
pub async fn mesh_tls_connect(
    mesh: &Mesh,
    client: &Identity,
    server: &Identity,
    gateway: SocketAddr,
    from: Option<IpAddr>,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let ca = LocalCa::load_or_generate(&mesh.ca_dir(), TRUST_DOMAIN)?;
    let cert = ca.issue(client, Duration::from_secs(3600))?;
    let config = cert.client_config(std::slice::from_ref(server))?;
    let socket = if gateway.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(from) = from {
        socket.bind(SocketAddr::new(from, 0))?;
    }
    let tcp = socket.connect(gateway).await?;
    let ip: IpAddr = gateway.ip();
    Ok(TlsConnector::from(config).connect(ServerName::IpAddress(ip.into()), tcp).await?)
}
