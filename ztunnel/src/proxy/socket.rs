//! Sockets ztunnel opens: TCP dials with `SO_MARK` (so eBPF capture skips ztunnel's own
//! traffic), `TCP_NODELAY` and a dial timeout, and listeners.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::warn;

use super::Error;

/// Dials `addr` with the configured mark and timeout.
pub async fn connect(addr: SocketAddr, mark: Option<u32>, timeout: Duration) -> Result<TcpStream, Error> {
    let connect_err = |source| Error::Connect { addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(connect_err)?;
    if let Some(mark) = mark {
        apply_mark(&socket, mark);
    }
    socket.set_nodelay(true).map_err(connect_err)?;
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| Error::ConnectTimeout { addr, timeout })?
        .map_err(connect_err)?;
    Ok(stream)
}

/// Sets `SO_MARK`; needs CAP_NET_ADMIN. Without it ztunnel still works where nothing is
/// captured (host mode), so the failure is reported once rather than failing every dial.
fn apply_mark(socket: &TcpSocket, mark: u32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = socket2::SockRef::from(socket).set_mark(mark)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        warn!(mark, error = %e, "cannot mark ztunnel sockets (needs CAP_NET_ADMIN); captured pods would loop");
    }
}

/// Binds a listener with `SO_REUSEADDR` (fast restarts) and a deep accept backlog.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
