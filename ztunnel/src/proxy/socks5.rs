//! SOCKS5 entry point (RFC 1928), a development entry that is off unless configured: a local
//! client asks for `CONNECT ip:port`; the source workload is the one on this node whose
//! address the client connects from. The reply is sent only after the upstream is dialled, so
//! clients see refusals as SOCKS errors.
//! Only "no authentication" and IPv4/IPv6 destinations are supported (no DNS names).
//!
//! What it trusts is the client's source address alone, so it guards against local abuse:
//! a client whose address is no workload of this node is closed before a byte is read; a
//! client that has not finished the handshake within [`HANDSHAKE_TIMEOUT`] is closed; and a
//! destination on this host itself (ztunnel's own listeners, or a host address that is no
//! workload's or service's, see [`super::host_destination`]) is refused with "connection not
//! allowed by ruleset".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::host_destination::{self, HostDestinationError};
use super::outbound::{Outbound, proxy_to};
use super::socket::Dialer;
use super::{Error, FailureSource, ProxyInputs};
use crate::state::Workload;
use crate::types::{ClientAddr, OrigDst};

/// A client that has not sent its greeting and request by then is closed.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// SOCKS5 reply codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    NotAllowed = 2,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// Accepts SOCKS5 clients until the drain starts. `own_listeners` are the addresses of
/// ztunnel's servers (admin, metrics, readiness, this one), never dialled for a client.
pub(crate) async fn serve(listener: TcpListener, inputs: ProxyInputs, own_listeners: Vec<SocketAddr>) {
    let outbound = Outbound::new(inputs.clone());
    let drain = inputs.drain.clone();
    let own: Arc<[SocketAddr]> = own_listeners.into();
    super::accept::accept_until_drained(listener, "socks5", &drain, |stream, peer| {
        let outbound = outbound.clone();
        let inputs = inputs.clone();
        let own = own.clone();
        async move { handle(stream, peer, &inputs, &outbound, &own).await }
    })
    .await
}

pub(super) async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    inputs: &ProxyInputs,
    outbound: &Outbound,
    own_listeners: &[SocketAddr],
) {
    // The source address is the client's identity: a stranger is closed before it is read.
    let Some(source) = local_workload(inputs, peer.ip()) else {
        let e = Error::UnknownSource { ip: peer.ip(), node: inputs.settings.node.clone() };
        debug!(%peer, error = %e, "socks5 client closed");
        return;
    };
    let _ = stream.set_nodelay(true);
    let dst = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream)).await {
        Ok(Ok(dst)) => dst,
        Ok(Err((reply, e))) => {
            debug!(%peer, error = %e, "socks5 handshake failed");
            if let Some(reply) = reply {
                let _ = send_reply(&mut stream, reply).await;
            }
            return;
        }
        Err(_) => {
            debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "socks5 client closed: no complete request in time");
            return;
        }
    };
    if let Err(e) = check_destination(inputs, own_listeners, dst) {
        warn!(%peer, dst = %dst, error = %e, "socks5 connection refused");
        let _ = send_reply(&mut stream, Reply::NotAllowed).await;
        return;
    }
    // Dial from the client's own address (a local address: the client connected from it), as
    // a captured pod's tunnels leave from the pod's address: the destination attributes and
    // authorizes by the tunnel's peer address.
    let (v4, v6) = if peer.is_ipv4() { (Some(peer.ip()), None) } else { (None, Some(peer.ip())) };
    let host = Dialer::host(inputs.settings.socket_mark, inputs.settings.connect_timeout);
    let dialer = Dialer { source: v4, source6: v6, ..host };
    let (record, upstream) = outbound.establish(ClientAddr(peer), source, OrigDst(dst), &dialer).await;
    let result = match upstream {
        Ok(upstream) => match send_reply(&mut stream, Reply::Succeeded).await {
            Ok(()) => inputs.force_close.or_close(proxy_to(stream, upstream, record.transferred.clone())).await,
            Err(e) => Err(Error::Socks5(format!("sending reply: {e}"))),
        },
        Err(e) => {
            // Record first, so the failure is in metrics by the time the client hears of it.
            let reply = reply_for(&e);
            record.close(&Err(e));
            let _ = send_reply(&mut stream, reply).await;
            return;
        }
    };
    record.close(&result);
}

/// The workload on this node at `ip`, if any.
fn local_workload(inputs: &ProxyInputs, ip: IpAddr) -> Option<Arc<Workload>> {
    let state = inputs.state.read();
    state.workload_by_ip(ip).filter(|w| *w.node == *inputs.settings.node)
}

/// Refuses destinations on this host itself; mesh workloads and service VIPs pass.
fn check_destination(inputs: &ProxyInputs, own: &[SocketAddr], dst: SocketAddr) -> Result<(), HostDestinationError> {
    let ip = dst.ip().to_canonical();
    let in_mesh = {
        let state = inputs.state.read();
        state.workload_by_ip(ip).is_some() || state.service_by_vip(ip).is_some()
    };
    host_destination::check(dst, own, in_mesh, host_destination::host_owns)
}

fn reply_for(e: &Error) -> Reply {
    match (e, e.kind()) {
        (_, FailureSource::Policy) => Reply::NotAllowed,
        (Error::Connect { .. }, _) => Reply::ConnectionRefused,
        (Error::Hbone { .. }, FailureSource::Upstream) => Reply::ConnectionRefused,
        (_, FailureSource::Upstream) => Reply::HostUnreachable,
        _ => Reply::GeneralFailure,
    }
}

pub(crate) type HandshakeError = (Option<Reply>, Error);

fn bad(reply: Option<Reply>, msg: impl Into<String>) -> HandshakeError {
    (reply, Error::Socks5(msg.into()))
}

/// Reads the greeting and the request; returns the requested destination.
pub(crate) async fn handshake<S>(stream: &mut S) -> Result<SocketAddr, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| bad(None, format!("reading request: {e}"));
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.map_err(io)?;
    if head[0] != VERSION {
        return Err(bad(None, format!("version {} is not 5", head[0])));
    }
    let mut methods = vec![0u8; head[1] as usize];
    stream.read_exact(&mut methods).await.map_err(io)?;
    if !methods.contains(&NO_AUTH) {
        let _ = stream.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await;
        return Err(bad(None, "client offers no \"no authentication\" method"));
    }
    stream.write_all(&[VERSION, NO_AUTH]).await.map_err(io)?;
    let mut request = [0u8; 4];
    stream.read_exact(&mut request).await.map_err(io)?;
    if request[0] != VERSION {
        return Err(bad(Some(Reply::GeneralFailure), format!("request version {} is not 5", request[0])));
    }
    if request[1] != CMD_CONNECT {
        return Err(bad(Some(Reply::CommandNotSupported), format!("command {} is not CONNECT", request[1])));
    }
    let ip = match request[3] {
        ATYP_V4 => {
            let mut b = [0u8; 4];
            stream.read_exact(&mut b).await.map_err(io)?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        ATYP_V6 => {
            let mut b = [0u8; 16];
            stream.read_exact(&mut b).await.map_err(io)?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        ATYP_DOMAIN => {
            return Err(bad(Some(Reply::AddressTypeNotSupported), "domain names are not supported; connect by IP"));
        }
        other => return Err(bad(Some(Reply::AddressTypeNotSupported), format!("address type {other} is unknown"))),
    };
    let mut port = [0u8; 2];
    stream.read_exact(&mut port).await.map_err(io)?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

async fn send_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    // Bound address is not meaningful through the mesh; report 0.0.0.0:0.
    stream.write_all(&[VERSION, reply as u8, 0, ATYP_V4, 0, 0, 0, 0, 0, 0]).await
}
