//! Sockets of a captured pod, as plain sockets: its listeners (bound inside the pod's
//! namespace by the netns worker) and the sockets its dials use. Every one carries a mark
//! ([`crate::in_pod`]), so the capture programs leave it alone. Enrollment wraps them into the
//! proxy's types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use super::loader::Loaded;
use super::maps::ConnKey;
use super::netns::NetnsWorker;
use super::sys;
use crate::in_pod::{HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT, REPLY_MARK};

/// The three listeners of a pod, as std sockets (made in the pod's namespace).
pub(crate) struct PodListenerSet {
    pub(crate) outbound: std::net::TcpListener,
    pub(crate) inbound_plain: std::net::TcpListener,
    pub(crate) inbound_hbone: std::net::TcpListener,
}

fn listener(ip: IpAddr, port: u16, mark: Option<u32>) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(SocketAddr::new(ip, port)), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if ip.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.set_nonblocking(true)?;
    let addr = SocketAddr::new(ip, port);
    // Name the port: "address in use" alone does not say which listener could not start.
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("binding {addr}: {e}"));
    socket.bind(&addr.into()).map_err(named)?;
    socket.listen(1024).map_err(named)?;
    Ok(socket.into())
}

/// The cookie of the network namespace the calling thread is in (the key of `pod_config`);
/// run it on the pod's netns worker.
pub(crate) fn current_netns_cookie() -> std::io::Result<u64> {
    let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sys::netns_cookie(probe.as_fd())
}

impl PodListenerSet {
    /// Binds the listeners of one family (`ipv6`); must run on a thread inside the pod's
    /// namespace. IPv6 listeners are v6-only, so IPv4 peers never appear as mapped addresses.
    /// `mark` is ztunnel's socket mark: without it the capture programs refuse the binds.
    pub(crate) fn bind(ipv6: bool, mark: Option<u32>) -> std::io::Result<PodListenerSet> {
        let any = if ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        let outbound = listener(any, OUTBOUND_PORT, mark)?;
        let inbound_plain = listener(any, INBOUND_PLAINTEXT_PORT, mark)?;
        let inbound_hbone = listener(any, HBONE_PORT, mark)?;
        Ok(PodListenerSet { outbound, inbound_plain, inbound_hbone })
    }
}

/// Sockets made per trip to the pod's namespace worker: one is used at once, the rest wait in
/// the reserve, so only one dial in this many pays the hop to the worker thread and back.
const SOCKETS_PER_TRIP: usize = 8;

/// Creates dialling sockets inside a pod's namespace, with `IP_BIND_ADDRESS_NO_PORT` set (see
/// [`sys::set_bind_address_no_port`]).
///
/// A socket belongs to the namespace of the thread that creates it, so sockets are made by the
/// pod's [`NetnsWorker`]; to keep that thread hop off most connections they are made in
/// batches and kept in a small reserve per address family (unconnected sockets: one file
/// descriptor each, at most `SOCKETS_PER_TRIP - 1` per family and pod).
pub(crate) struct PodSockets {
    worker: Arc<NetnsWorker>,
    /// Spare sockets, IPv4 at index 0 and IPv6 at index 1.
    reserve: std::sync::Mutex<[Vec<Socket>; 2]>,
    /// Set when the pod's namespace routes answers to [`REPLY_MARK`] back to ztunnel, so dials
    /// to its application may come from the client's address (see [`super::reply_routing`]);
    /// each such dial is registered in `inbound_dials` while it connects.
    transparent_dials: Option<Arc<Loaded>>,
}

impl PodSockets {
    pub(crate) fn new(worker: Arc<NetnsWorker>, transparent_dials: Option<Arc<Loaded>>) -> PodSockets {
        PodSockets { worker, reserve: Default::default(), transparent_dials }
    }

    fn spare(&self, ipv6: bool) -> Option<Socket> {
        self.reserve.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[usize::from(ipv6)].pop()
    }

    /// An unconnected TCP socket inside the pod's namespace.
    pub(crate) async fn tcp_socket(&self, ipv6: bool) -> std::io::Result<Socket> {
        if let Some(socket) = self.spare(ipv6) {
            return Ok(socket);
        }
        let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
        let mut batch = self
            .worker
            .run(move || {
                (0..SOCKETS_PER_TRIP)
                    .map(|_| {
                        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
                        // Dials to apps bind 127.0.0.6 (or ::1) with port 0.
                        sys::set_bind_address_no_port(socket.as_fd(), true)?;
                        Ok(socket)
                    })
                    .collect::<std::io::Result<Vec<Socket>>>()
            })
            .await
            .map_err(std::io::Error::other)??;
        let socket = batch.pop().ok_or_else(|| std::io::Error::other("no socket made"))?;
        self.reserve.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[usize::from(ipv6)].extend(batch);
        Ok(socket)
    }

    /// A socket bound to the client's address `source`, marked [`REPLY_MARK`] and registered
    /// in `inbound_dials` for connecting to `target` (the pod's application) until the
    /// returned registration drops. `None` when the pod has no reply routing.
    pub(crate) async fn transparent_socket(
        &self,
        source: IpAddr,
        target: SocketAddr,
    ) -> std::io::Result<Option<(Socket, DialRegistration)>> {
        let Some(loaded) = self.transparent_dials.clone() else { return Ok(None) };
        let socket = self.tcp_socket(source.is_ipv6()).await?;
        // Needs CAP_NET_ADMIN (or CAP_NET_RAW) in the pod namespace's owner.
        if source.is_ipv6() {
            socket.set_ip_transparent_v6(true)?;
        } else {
            socket.set_ip_transparent_v4(true)?;
        }
        // Not ztunnel's usual mark: the pod's reply rule matches this one only.
        socket.set_mark(REPLY_MARK)?;
        // The port is fixed by bind, so the connection's four-tuple is known before its SYN.
        sys::set_bind_address_no_port(socket.as_fd(), false)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        let local =
            socket.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("bound to a non-IP address"))?;
        let key = ConnKey::new(local, target)
            .ok_or_else(|| std::io::Error::other(format!("{local} and {target} are of different families")))?;
        loaded
            .inbound_dials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, 1, 0)
            .map_err(|e| std::io::Error::other(format!("registering the dial {local} -> {target}: {e}")))?;
        Ok(Some((socket, DialRegistration { loaded, key })))
    }
}

/// Removes a transparent dial from `inbound_dials` when dropped (its handshake is over), so
/// no later connection with the same addresses and ports is let past ztunnel.
pub(crate) struct DialRegistration {
    loaded: Arc<Loaded>,
    key: ConnKey,
}

impl Drop for DialRegistration {
    fn drop(&mut self) {
        let _ = self.loaded.inbound_dials.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.key);
    }
}
