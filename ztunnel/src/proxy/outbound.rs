//! Outbound: a local workload's connection to an original destination.
//!
//! [`Outbound::establish`] plans the route, counts the connection as opened, and dials:
//! plain TCP for unmeshed destinations, or an HBONE stream over a pooled mTLS connection
//! (presenting the source workload's certificate and requiring the destination's identity).
//! [`proxy_to`] then copies bytes until both directions end. Both entry points, a captured
//! pod's 15001 listener ([`super::pod`]) and SOCKS5 ([`super::socks5`]), call these two in turn.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::connect_request::{TraceIds, connect_request};
use super::connection::{ConnectionRecord, Opening, Peer};
use super::copy::{Transferred, copy_bidirectional, tcp_halves};
use super::route::{Route, Transport, plan_outbound};
use super::socket::Dialer;
use super::{Error, PoolKey, ProxyInputs};
use crate::hbone::{self, Tunnel, pool::PoolError};
use crate::identity::Identity;
use crate::state::{Service, Workload};
use crate::telemetry::Direction;
use crate::types::{ClientAddr, OrigDst};

/// A dialled upstream, ready for bytes.
pub(crate) enum Upstream {
    Tcp(TcpStream),
    Hbone(Tunnel),
}

/// Outbound connection handling for one ztunnel.
#[derive(Clone)]
pub(crate) struct Outbound {
    inputs: ProxyInputs,
}

impl Outbound {
    pub(crate) fn new(inputs: ProxyInputs) -> Outbound {
        Outbound { inputs }
    }

    /// Plans and dials the upstream for a connection from `source` (at `client`) to `dst`.
    /// The record is returned even on failure so the caller closes it with the outcome.
    pub(crate) async fn establish(
        &self,
        client: ClientAddr,
        source: Arc<Workload>,
        dst: OrigDst,
        dialer: &Dialer,
    ) -> (ConnectionRecord, Result<Upstream, Error>) {
        let planned = {
            let state = self.inputs.state.read();
            plan_outbound(&state, dst, &mut rand::rng())
        };
        let source_peer = Peer { identity: Some(source.identity()), workload: Some(source.clone()) };
        let route = match planned {
            Ok(route) => route,
            Err(e) => {
                let record = self.open(client, dst, source_peer, Peer::default(), None, false);
                return (record, Err(e.into()));
            }
        };
        let destination = Peer {
            identity: match &route.transport {
                Transport::Hbone { identity, .. } => Some(identity.clone()),
                Transport::Direct => None,
            },
            workload: route.workload.clone(),
        };
        let mtls = matches!(route.transport, Transport::Hbone { .. });
        let record = self.open(client, dst, source_peer, destination, route.service.as_ref(), mtls);
        let timeout = self.inputs.settings.connect_timeout;
        // Boxed: the dial (pool, TLS handshake) is several KiB of future state that the
        // connection's task would otherwise keep for its whole life.
        let dial = Box::pin(self.dial(&route, &source, client, dialer));
        let dialled = match tokio::time::timeout(timeout, dial).await {
            Ok(result) => result,
            Err(_) => Err(Error::ConnectTimeout { addr: route.target, timeout }),
        };
        (record, dialled)
    }

    fn open(
        &self,
        client: ClientAddr,
        dst: OrigDst,
        source: Peer,
        destination: Peer,
        service: Option<&Arc<Service>>,
        mtls: bool,
    ) -> ConnectionRecord {
        ConnectionRecord::open(
            &self.inputs.connection_metrics,
            Opening {
                direction: Direction::Outbound,
                src_addr: client,
                dst_addr: dst,
                source,
                destination,
                service,
                mtls,
            },
        )
    }

    async fn dial(
        &self,
        route: &Route,
        source: &Workload,
        client: ClientAddr,
        dialer: &Dialer,
    ) -> Result<Upstream, Error> {
        let settings = &self.inputs.settings;
        let (gateway, identity) = match &route.transport {
            Transport::Direct => return dialer.connect(route.target).await.map(Upstream::Tcp),
            Transport::Hbone { gateway, identity } => (*gateway, identity.clone()),
        };
        let key = PoolKey {
            source_workload: source.uid.clone(),
            source: source.identity(),
            destination: identity.clone(),
            gateway,
        };
        let mut prepared = Some(connect_request(route, source, client, &settings.cluster_id, TraceIds::random())?);
        let request = || match prepared.take() {
            Some(request) => Ok(request),
            // Only a stream refused by a draining connection is retried: build it again.
            None => connect_request(route, source, client, &settings.cluster_id, TraceIds::random())
                .map_err(|e| hbone::Error::BadRequest { authority: route.target.to_string(), reason: e.to_string() }),
        };
        let inputs = &self.inputs;
        let dial = || dial_tls(inputs, dialer, key.source.clone(), identity.clone(), gateway);
        match inputs.pool.connect(&key, dial, request).await {
            Ok((tunnel, _response_headers)) => Ok(Upstream::Hbone(tunnel)),
            Err(PoolError::Dial(e)) => Err(e),
            Err(PoolError::Hbone(source)) => Err(Error::Hbone { gateway, source }),
        }
    }
}

/// Dials the destination's HBONE port and completes mTLS as `source`, requiring `destination`.
async fn dial_tls(
    inputs: &ProxyInputs,
    dialer: &Dialer,
    source: Identity,
    destination: Identity,
    gateway: SocketAddr,
) -> Result<TlsStream<TcpStream>, Error> {
    let cert = inputs
        .certs
        .fetch(&source)
        .await
        .map_err(|e| Error::Certificate { identity: source.clone(), reason: e.to_string() })?;
    let config = cert
        .client_config(std::slice::from_ref(&destination))
        .map_err(|e| Error::Certificate { identity: source.clone(), reason: e.to_string() })?;
    let tcp = dialer.connect(gateway).await?;
    // No SNI is sent (the client config disables it); the name only satisfies the API.
    let name = ServerName::IpAddress(gateway.ip().into());
    TlsConnector::from(config).connect(name, tcp).await.map_err(|e| tls_error(gateway, e))
}

/// TLS failures caused by certificates or identities are `Identity`; transport ones `Upstream`.
pub(crate) fn tls_error(peer: SocketAddr, e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        Error::TlsIdentity { peer, reason: e.to_string() }
    } else {
        Error::Connect { addr: peer, source: e }
    }
}

/// Copies between the client and the dialled upstream until both directions end.
pub(crate) async fn proxy_to(
    client: TcpStream,
    upstream: Upstream,
    transferred: Arc<Transferred>,
) -> Result<(), Error> {
    let client = tcp_halves(client);
    match upstream {
        Upstream::Tcp(tcp) => {
            copy_bidirectional(client, tcp_halves(tcp), transferred).await?;
        }
        Upstream::Hbone(tunnel) => {
            copy_bidirectional(client, tunnel.split(), transferred).await?;
        }
    }
    Ok(())
}
