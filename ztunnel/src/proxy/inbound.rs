//! Inbound HBONE: mTLS connections on a workload's port 15008, one `CONNECT` stream per
//! proxied TCP connection.
//!
//! The listener's local address names the destination workload, whose certificate is
//! presented; the client certificate must chain to the mesh roots and carry a SPIFFE id of our
//! trust domain (checked by the TLS layer). Each stream's `:authority` must be an address of
//! that workload (else 400). The client is the connection's peer, never what the request claims
//! ([`super::client_address`]); then the stream is authorized ([`super::authorize`]) and answered
//! 401 if policy denies it, without ever dialling the app; otherwise the app is dialled at that
//! address, from the client's address where the pod allows it, and the stream answered 200, or 503 when the app cannot be reached. Admitted
//! streams are closed early if a policy change denies them.
//!
//! A connection refused before any stream (a failed or timed-out TLS handshake, or plaintext
//! sent to 15008) is logged at `WARN` with the peer and the reason, rate-limited
//! ([`crate::hbone::refusals`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::OptionFuture;
use http::{HeaderMap, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::authorize::InboundFacts;
use super::client_address::{client_address, forwarded_param};
use super::connection::{ConnectionRecord, Opening, Peer};
use super::socket::Dialer;
use super::to_app::{InboundClient, Refused, deliver_to_app};
use super::{Error, ProxyInputs};
use crate::hbone::refusals::{Refusal, log_refusal};
use crate::hbone::{self, IncomingConnect, TunnelReader, TunnelWriter};
use crate::identity::Identity;
use crate::state::{ProxyState, Service, Workload};
use crate::telemetry::Direction;
use crate::tls::peer_identity;
use crate::types::{ClientAddr, OrigDst};

/// Bound on the TLS handshake of an inbound connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// App dials one HBONE connection may have in flight at once; further streams wait. A pooled
/// client carries at most 100 streams per connection, so honest traffic never waits here.
const MAX_APP_DIALS_PER_CONNECTION: usize = 100;

/// Serves inbound HBONE on `listener` until the drain starts; live connections get GOAWAY and
/// finish their streams.
/// `app_dialer` reaches the destination app (from inside its pod when traffic is captured).
pub(crate) async fn serve(listener: TcpListener, inputs: ProxyInputs, app_dialer: Dialer) {
    let drain = inputs.drain.clone();
    super::accept::accept_until_drained(listener, "inbound hbone", &drain, |stream, peer| {
        let inputs = inputs.clone();
        let app_dialer = app_dialer.clone();
        async move {
            if let Err(e) = serve_connection(stream, peer, inputs, app_dialer).await {
                debug!(%peer, error = %e, kind = e.kind().as_str(), "inbound hbone connection failed");
            }
        }
    })
    .await
}

pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    inputs: ProxyInputs,
    app_dialer: Dialer,
) -> Result<(), Error> {
    let local = stream.local_addr().map_err(|e| Error::Internal(format!("local address of inbound socket: {e}")))?;
    let _ = stream.set_nodelay(true);
    let workload = {
        let state = inputs.state.read();
        state.workload_by_ip(local.ip()).filter(|w| *w.node == *inputs.settings.node)
    }
    .ok_or(Error::UnknownDestination { authority: local })?;
    // Boxed so the handshake's state is freed once done instead of sizing the connection's task.
    let (tls, peer_id) = Box::pin(accept_tls(stream, peer, local, &inputs, &workload)).await?;
    let drain = inputs.drain.clone();
    let h2 = inputs.settings.h2.clone();
    let handler_inputs = inputs.clone();
    let dials = Arc::new(Semaphore::new(MAX_APP_DIALS_PER_CONNECTION));
    hbone::serve_connection(
        tls,
        peer,
        &h2,
        async move {
            drain.signaled().await;
        },
        move |incoming| {
            let inputs = handler_inputs.clone();
            let workload = workload.clone();
            let peer_id = peer_id.clone();
            let app_dialer = app_dialer.clone();
            let dials = dials.clone();
            async move {
                let _guard = inputs.drain.clone();
                handle_stream(incoming, peer, peer_id, workload, &inputs, &app_dialer, &dials).await;
            }
        },
    )
    .await
    .map_err(|source| Error::Hbone { gateway: local, source })
}

/// Completes mTLS as `workload`, returning the stream and the client's verified identity.
async fn accept_tls(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    inputs: &ProxyInputs,
    workload: &Workload,
) -> Result<(TlsStream<TcpStream>, Identity), Error> {
    let identity = workload.identity();
    let cert = inputs
        .certs
        .fetch(&identity)
        .await
        .map_err(|e| Error::Certificate { identity: identity.clone(), reason: e.to_string() })?;
    let config =
        cert.server_config().map_err(|e| Error::Certificate { identity: identity.clone(), reason: e.to_string() })?;
    let refused = |kind: Refusal, e: Error| {
        log_refusal(kind, peer, Some(local), &e);
        e
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let kind = if is_plaintext(&e) { Refusal::Plaintext } else { Refusal::TlsHandshake };
            return Err(refused(kind, super::outbound::tls_error(peer, e)));
        }
        Err(_) => {
            let e = Error::TlsIdentity { peer, reason: "handshake timed out".into() };
            return Err(refused(Refusal::TlsHandshake, e));
        }
    };
    let peer_id = peer_identity(tls.get_ref().1)
        .map_err(|e| refused(Refusal::TlsHandshake, Error::TlsIdentity { peer, reason: e.to_string() }))?;
    Ok((tls, peer_id))
}

/// Whether a failed handshake failed because the peer's first bytes are no TLS record at all.
fn is_plaintext(e: &std::io::Error) -> bool {
    use rustls::InvalidMessage::{InvalidContentType, UnknownProtocolVersion};
    matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(InvalidContentType | UnknownProtocolVersion))
    )
}

/// The service a connection to `workload` at `port` was addressed to: the one named by the
/// client's `forwarded: host=` if the workload serves it, else the only service of the
/// workload with target port `port` (as Istio's ztunnel guesses it).
fn inbound_service(state: &ProxyState, workload: &Workload, port: u16, host: Option<&str>) -> Option<Arc<Service>> {
    let mine = state.services_of(&workload.uid);
    if let Some(host) = host
        && let Some(s) = mine.clone().find(|s| &*s.hostname == host)
    {
        return Some(s.clone());
    }
    let targets_port = |s: &Service| {
        let endpoint_ports = s.endpoints.get(&workload.uid).is_some_and(|e| e.port.values().any(|t| *t == port));
        endpoint_ports || s.ports.values().any(|t| *t == port)
    };
    let mut by_port = mine.filter(|s| targets_port(s));
    match (by_port.next(), by_port.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

/// Handles one `CONNECT` stream. What needs no waiting (reading the request, opening the
/// record, checking the authority) is done at once, so the returned future holds only the
/// shared inbound tail and not also the request it was built from.
pub(super) fn handle_stream<'a>(
    mut incoming: IncomingConnect,
    peer: SocketAddr,
    peer_id: Identity,
    workload: Arc<Workload>,
    inputs: &'a ProxyInputs,
    app_dialer: &'a Dialer,
    dials: &'a Semaphore,
) -> OptionFuture<impl Future<Output = ()> + 'a> {
    let target = OrigDst(incoming.authority);
    // Everything needed from the request headers is read here and the headers are released at
    // once: nothing a peer sent stays held while the app is dialled.
    let headers = std::mem::take(&mut incoming.headers);
    let (client_addr, source_workload, service) = {
        let state = inputs.state.read();
        let host = forwarded_param(&headers, "host");
        let service = inbound_service(&state, &workload, target.port(), host);
        let client_addr = ClientAddr(client_address(&state, peer, &peer_id, &workload, service.as_deref(), &headers));
        // The source workload is named only when its address and verified identity agree.
        let source = state.workload_by_ip(client_addr.ip()).filter(|w| w.identity() == peer_id);
        (client_addr, source, service)
    };
    drop(headers);
    let record = ConnectionRecord::open(
        &inputs.connection_metrics,
        Opening {
            direction: Direction::Inbound,
            src_addr: client_addr,
            dst_addr: target,
            source: Peer { workload: source_workload, identity: Some(peer_id.clone()) },
            destination: Peer { identity: Some(workload.identity()), workload: Some(workload.clone()) },
            service: service.as_ref(),
            mtls: true,
        },
    );
    if !workload.workload_ips.contains(&target.ip()) {
        incoming.reject(StatusCode::BAD_REQUEST);
        record.close(&Err(Error::UnknownDestination { authority: target.addr() }));
        return None.into();
    }
    let facts =
        InboundFacts { source_identity: Some(peer_id), source_addr: client_addr, destination: target, workload };
    Some(deliver_to_app(inputs, StreamClient(incoming), facts, record, app_dialer, Some(dials))).into()
}

/// An HBONE stream's client: refused with 401 (policy) or 503 (app unreachable), answered 200.
struct StreamClient(IncomingConnect);

impl InboundClient for StreamClient {
    type Reader = TunnelReader;
    type Writer = TunnelWriter;

    fn refuse(self, why: Refused) {
        self.0.reject(match why {
            Refused::Denied => StatusCode::UNAUTHORIZED,
            Refused::AppUnreachable => StatusCode::SERVICE_UNAVAILABLE,
        });
    }

    fn accept(self) -> Result<(TunnelReader, TunnelWriter), Error> {
        let target = self.0.authority;
        match self.0.accept(HeaderMap::new()) {
            Ok(tunnel) => Ok(tunnel.split()),
            Err(e) => Err(Error::Internal(format!("answering CONNECT {target}: {e}"))),
        }
    }
}
