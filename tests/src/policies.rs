//! Authorization helpers for tests: policy builders in the shape of Istio's L4
//! AuthorizationPolicy conversion, and a raw HBONE client that reports the status a
//! destination ztunnel answers a `CONNECT` with.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
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
    let ca = LocalCa::load_or_generate(&mesh.ca_dir(), TRUST_DOMAIN)?;
    let cert = ca.issue(client, Duration::from_secs(3600))?;
    let config = cert.client_config(std::slice::from_ref(server))?;
    let gateway = SocketAddr::new(target.ip(), 15008);
    let tcp = tokio::net::TcpStream::connect(gateway).await?;
    let ip: IpAddr = gateway.ip();
    let tls = TlsConnector::from(config).connect(ServerName::IpAddress(ip.into()), tcp).await?;
    let conn = ClientConnection::handshake(tls, "test-client", &H2Settings::default()).await?;
    let request = Request::builder().method(Method::CONNECT).uri(target.to_string()).body(())?;
    match tokio::time::timeout(Duration::from_secs(10), conn.connect(request, None)).await? {
        Ok(_) => Ok(StatusCode::OK),
        Err(hbone::Error::Status { status, .. }) => Ok(status),
        Err(e) => Err(e.into()),
    }
}
