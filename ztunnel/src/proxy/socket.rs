//! Sockets ztunnel opens: TCP dials with `SO_MARK` (so eBPF capture skips ztunnel's own
//! traffic), `TCP_NODELAY` and a dial timeout, never in the descriptors reserved for health
//! and control (see [`crate::descriptors`]), and listeners (the IPv6 wildcard dual-stack).
//! Dials to a pod's application may come from the client's own address
//! ([`Dialer::connect_as`]) when the pod's socket factory can make transparent sockets;
//! otherwise, and when the kernel refuses, from the fixed source.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::warn;

use super::Error;
use crate::descriptors;

/// Creates TCP sockets in the network namespace they must live in (a pod's, for capture).
pub(crate) trait SocketFactory: Send + Sync {
    /// A new, unconnected TCP socket of the address family of `ipv6`.
    fn tcp_socket(&self, ipv6: bool) -> Pin<Box<dyn Future<Output = std::io::Result<Socket>> + Send + '_>>;

    /// A new TCP socket bound to `source`, an address that need not be local (a transparent
    /// socket, marked so that the answers come back to it), for connecting to `target`; with it
    /// a guard to hold until the connect is done. `None` when this factory makes no such sockets.
    fn transparent_socket(&self, _source: IpAddr, _target: SocketAddr) -> TransparentSocketFuture<'_> {
        Box::pin(async { Ok(None) })
    }
}

/// A bound transparent socket and a guard that keeps its handshake allowed until dropped.
pub(crate) type TransparentSocket = (Socket, Box<dyn Send>);
/// What [`SocketFactory::transparent_socket`] returns.
pub(crate) type TransparentSocketFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Option<TransparentSocket>>> + Send + 'a>>;

/// How ztunnel dials: in which network namespace, from which source address, with which mark.
#[derive(Clone)]
pub(crate) struct Dialer {
    /// Where sockets are created; `None` is ztunnel's own namespace.
    pub factory: Option<Arc<dyn SocketFactory>>,
    /// Local address to bind before connecting to an IPv4 destination.
    pub source: Option<IpAddr>,
    /// Local address to bind before connecting to an IPv6 destination.
    pub source6: Option<IpAddr>,
    pub mark: Option<u32>,
    pub timeout: Duration,
}

impl Dialer {
    /// Dials from ztunnel's own namespace.
    pub(crate) fn host(mark: Option<u32>, timeout: Duration) -> Dialer {
        Dialer { factory: None, source: None, source6: None, mark, timeout }
    }

    /// Dials `addr` from the address `client` when the factory can (the application then sees
    /// its real client), else like [`Dialer::connect`]. Loopback clients and clients of the
    /// other address family are dialled from the fixed source. A kernel that refuses the
    /// transparent socket is reported once and the fixed source is used.
    pub(crate) async fn connect_as(&self, addr: SocketAddr, client: IpAddr) -> Result<TcpStream, Error> {
        let usable = client.is_ipv4() == addr.is_ipv4() && !client.is_loopback() && !client.is_unspecified();
        if let Some(factory) = self.factory.as_ref().filter(|_| usable) {
            match factory.transparent_socket(client, addr).await {
                Ok(Some((socket, handshake_guard))) => {
                    let connect_err = |source| Error::Connect { addr, source };
                    socket.set_nonblocking(true).map_err(connect_err)?;
                    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
                    let connected = self.finish(socket, addr).await;
                    drop(handshake_guard);
                    return connected;
                }
                Ok(None) => {}
                Err(e) => {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        warn!(%client, error = %e, "cannot dial apps from the client's address (transparent socket refused); they see ztunnel's address instead");
                    }
                }
            }
        }
        self.connect(addr).await
    }

    /// Dials `addr` (with `TCP_NODELAY`), failing after the timeout.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, Error> {
        let connect_err = |source| Error::Connect { addr, source };
        let socket = match &self.factory {
            Some(factory) => {
                let socket = factory.tcp_socket(addr.is_ipv6()).await.map_err(connect_err)?;
                socket.set_nonblocking(true).map_err(connect_err)?;
                TcpSocket::from_std_stream(std::net::TcpStream::from(socket))
            }
            None => if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(connect_err)?,
        };
        if let Some(mark) = self.mark {
            apply_mark(&socket, mark);
        }
        let source = if addr.is_ipv4() { self.source } else { self.source6 };
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).map_err(connect_err)?;
        }
        self.finish(socket, addr).await
    }

    /// Connects a prepared socket with `TCP_NODELAY`, failing after the timeout.
    async fn finish(&self, socket: TcpSocket, addr: SocketAddr) -> Result<TcpStream, Error> {
        let connect_err = |source| Error::Connect { addr, source };
        // Dials for proxy traffic leave the descriptors reserved for health and control alone.
        descriptors::check_reserve(&socket).map_err(|e| connect_err(std::io::Error::other(e)))?;
        socket.set_nodelay(true).map_err(connect_err)?;
        let stream = tokio::time::timeout(self.timeout, socket.connect(addr))
            .await
            .map_err(|_| Error::ConnectTimeout { addr, timeout: self.timeout })?
            .map_err(connect_err)?;
        Ok(stream)
    }
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
///
/// The IPv6 wildcard `[::]` listens dual-stack: it accepts IPv4 connections too (as IPv4-mapped
/// addresses), whatever `net.ipv6.bindv6only` says, so probes and scrapes reach the readiness
/// and metrics ports over either family, as with Istio's ztunnel. Where the kernel has no IPv6
/// at all it falls back to the IPv4 wildcard. Any other address listens on that address only.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match bind_listener(addr) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            warn!(%addr, fallback = %v4, error = %e, "IPv6 is not available; listening on IPv4 only");
            bind_listener(v4)
        }
        bound => bound,
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Errors that mean this host cannot use IPv6 sockets (booted with `ipv6.disable=1`, or
/// built without IPv6).
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes plain sockets in this namespace; its transparent sockets fail as a kernel
    /// without the needed capability would refuse them (or are not made at all).
    struct RefusingFactory {
        refuse: bool,
    }

    impl SocketFactory for RefusingFactory {
        fn tcp_socket(&self, ipv6: bool) -> Pin<Box<dyn Future<Output = std::io::Result<Socket>> + Send + '_>> {
            let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
            Box::pin(async move { Socket::new(domain, Type::STREAM, Some(Protocol::TCP)) })
        }

        fn transparent_socket(&self, _source: IpAddr, _target: SocketAddr) -> TransparentSocketFuture<'_> {
            let refuse = self.refuse;
            Box::pin(async move { if refuse { Err(std::io::Error::from_raw_os_error(libc::EPERM)) } else { Ok(None) } })
        }
    }

    #[tokio::test]
    async fn a_refused_transparent_dial_falls_back_to_the_fixed_source() {
        let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = app.local_addr().unwrap();
        for refuse in [true, false] {
            let dialer = Dialer {
                factory: Some(Arc::new(RefusingFactory { refuse })),
                source: Some(IpAddr::from([127, 0, 0, 6])),
                source6: None,
                mark: None,
                timeout: Duration::from_secs(5),
            };
            let client = IpAddr::from([10, 1, 2, 3]);
            let dialled = dialer.connect_as(target, client).await;
            assert!(dialled.is_ok(), "refuse={refuse}: the dial must fall back, got {:?}", dialled.err());
            let (_, peer) = app.accept().await.unwrap();
            assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 6]), "refuse={refuse}: the app sees the fixed source");
        }
    }

    /// Connects to `addr` and reads what the accepted side writes.
    async fn round_trip(listener: &TcpListener, addr: SocketAddr) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let connect = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr));
        let mut client = connect.await.map_err(|_| std::io::Error::other("connect timed out"))??;
        let (mut server, _) = listener.accept().await?;
        server.write_all(b"ok").await?;
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ok");
        Ok(())
    }

    #[tokio::test]
    async fn the_ipv6_wildcard_accepts_both_families() {
        let listener = listen("[::]:0".parse().unwrap()).expect("listen on [::]:0");
        let port = listener.local_addr().unwrap().port();
        for client in ["127.0.0.1", "::1"] {
            let addr = SocketAddr::new(client.parse().unwrap(), port);
            round_trip(&listener, addr).await.unwrap_or_else(|e| panic!("[::]:{port} refused {addr}: {e}"));
        }
    }

    #[tokio::test]
    async fn a_specific_address_listens_on_that_address_only() {
        let listener = listen("[::1]:0".parse().unwrap()).expect("listen on [::1]:0");
        let port = listener.local_addr().unwrap().port();
        round_trip(&listener, SocketAddr::new("::1".parse().unwrap(), port)).await.unwrap();
        let v4 = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
        let refused = TcpStream::connect(v4).await;
        assert_eq!(
            refused.as_ref().err().map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused),
            "[::1]:{port} must not accept {v4}: {refused:?}"
        );
    }

    #[test]
    fn missing_ipv6_support_is_recognised() {
        for errno in [libc::EAFNOSUPPORT, libc::EPROTONOSUPPORT, libc::EADDRNOTAVAIL] {
            assert!(ipv6_unavailable(&std::io::Error::from_raw_os_error(errno)), "errno {errno}");
        }
        assert!(!ipv6_unavailable(&std::io::Error::from_raw_os_error(libc::EADDRINUSE)));
    }
}
