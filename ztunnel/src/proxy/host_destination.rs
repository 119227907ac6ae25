//! Which SOCKS5 destinations would lead into this host itself instead of into the mesh or out
//! of the node: ztunnel's own listeners (admin, metrics, readiness, SOCKS5), and any address of
//! the host that is no workload's and no service's. SOCKS5 refuses both, so a local client
//! cannot use ztunnel as a hop to the node's own ports.
//!
//! The decision ([`check`]) is pure over what the caller knows. Whether an address is the
//! host's own is asked of the kernel ([`host_owns`]): an address this process can bind a socket
//! to without `IP_FREEBIND` is local (loopback, the unspecified address, every address on the
//! host's interfaces, local routes). That follows the host's addresses as they change without
//! a list to keep in step. A mesh workload's address or a service VIP is let through even when
//! it is local (a host-network pod shares the node's address; tests run workloads on 127.x
//! aliases), but never on a port where one of ztunnel's own listeners would answer.

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// A destination SOCKS5 will not connect to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostDestinationError {
    #[error("destination {dst} is ztunnel's own listener {listener}")]
    OwnListener { dst: SocketAddr, listener: SocketAddr },
    #[error("destination {dst} is an address of this host and no workload's or service's")]
    HostAddress { dst: SocketAddr },
}

/// Decides whether `dst` may be dialled for a SOCKS5 client. `own` are ztunnel's listeners,
/// `in_mesh` says whether `dst`'s address is a workload's or a service VIP, and `is_local`
/// whether an address belongs to this host (asked at most once).
pub(crate) fn check(
    dst: SocketAddr,
    own: &[SocketAddr],
    in_mesh: bool,
    is_local: impl FnOnce(IpAddr) -> bool,
) -> Result<(), HostDestinationError> {
    let ip = dst.ip().to_canonical();
    let dst = SocketAddr::new(ip, dst.port());
    let mut is_local = Some(is_local);
    let mut local = None;
    let mut local_once = || *local.get_or_insert_with(|| is_local.take().is_some_and(|f| f(ip)));
    for listener in own.iter().filter(|l| l.port() == dst.port()) {
        let listener_ip = listener.ip().to_canonical();
        // A wildcard listener answers on every local address, of either family (fail closed).
        if listener_ip == ip || (listener_ip.is_unspecified() && local_once()) {
            return Err(HostDestinationError::OwnListener { dst, listener: *listener });
        }
    }
    if in_mesh || !local_once() {
        return Ok(());
    }
    Err(HostDestinationError::HostAddress { dst })
}

/// Whether `ip` is an address of this host: loopback and unspecified addresses are; any other
/// is if a socket can be bound to it. When the kernel cannot tell (no descriptor for the
/// probe, an address that needs a scope), the answer is yes, so the destination is refused.
pub(crate) fn host_owns(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let Ok(probe) = Socket::new(Domain::for_address(SocketAddr::new(ip, 0)), Type::STREAM, None) else {
        return true;
    };
    match probe.bind(&SocketAddr::new(ip, 0).into()) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_listeners_are_refused_on_every_address_they_answer() {
        let own = [addr("127.0.0.1:15000"), addr("0.0.0.0:15020"), addr("[::]:15021")];
        let local = |_| true;
        let remote = |_| false;
        let refused = |dst: &str, listener: &str| {
            Err(HostDestinationError::OwnListener { dst: addr(dst), listener: addr(listener) })
        };
        let cases = [
            ("127.0.0.1:15000", true, refused("127.0.0.1:15000", "127.0.0.1:15000")),
            ("[::ffff:127.0.0.1]:15000", true, refused("127.0.0.1:15000", "127.0.0.1:15000")),
            ("10.0.0.5:15020", true, refused("10.0.0.5:15020", "0.0.0.0:15020")),
            ("10.0.0.5:15021", true, refused("10.0.0.5:15021", "[::]:15021")),
            // Same port on another address: a workload's own server, not ztunnel's.
            ("127.0.9.9:15000", true, Ok(())),
        ];
        for (dst, in_mesh, want) in cases {
            assert_eq!(check(addr(dst), &own, in_mesh, local), want, "{dst}");
        }
        // A wildcard listener does not make another host's port ours.
        assert_eq!(check(addr("10.9.9.9:15020"), &own, false, remote), Ok(()));
    }

    #[test]
    fn host_addresses_are_refused_unless_they_are_in_the_mesh() {
        let own = [addr("127.0.0.1:15000")];
        let cases = [
            // (destination, is a workload or VIP, is local, allowed)
            ("127.0.0.1:22", false, true, false),
            ("192.168.1.4:10250", false, true, false),
            ("127.1.2.3:8080", true, true, true),
            ("10.244.1.7:8080", false, false, true),
            ("10.244.1.8:8080", true, false, true),
        ];
        for (dst, in_mesh, local, allowed) in cases {
            let got = check(addr(dst), &own, in_mesh, |_| local);
            assert_eq!(got.is_ok(), allowed, "{dst} (in mesh {in_mesh}, local {local}): {got:?}");
            if !allowed {
                assert_eq!(got, Err(HostDestinationError::HostAddress { dst: addr(dst) }));
            }
        }
    }

    #[test]
    fn the_kernel_says_which_addresses_are_ours() {
        for ip in ["127.0.0.1", "127.45.6.7", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"] {
            assert!(host_owns(ip.parse().unwrap()), "{ip} is this host's");
        }
        // TEST-NET-3 (RFC 5737) and the IPv6 documentation prefix are never assigned.
        for ip in ["203.0.113.77", "2001:db8::77"] {
            assert!(!host_owns(ip.parse().unwrap()), "{ip} is not this host's");
        }
    }
}
