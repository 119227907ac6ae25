//! Scenarios for dual-stack sockets, per-pod exclusions and the configured socket mark, run
//! on the same pod as the others in [`super`].

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;

use super::*;

/// Connects a fresh application socket to `dst` and asserts that the 15001 listener got it
/// with `dst` recorded as its original destination.
fn assert_captured(t: &mut Pod, socket: Socket, dst: SocketAddr, why: &str) {
    connect(&socket, dst).unwrap_or_else(|e| panic!("{why}: connect to {dst} failed: {e}"));
    let (_, seen_peer) = accept_within(&t.listen.outbound, WAIT)
        .unwrap_or_else(|| panic!("{why}: the connect to {dst} did not arrive on the 15001 listener"));
    let key = PeerKey::from(seen_peer);
    let orig = t.maps.orig_dst.get(&key, 0).unwrap_or_else(|e| panic!("{why}: no orig_dst for {seen_peer}: {e}"));
    assert_eq!(SocketAddr::try_from(orig), Ok(dst), "{why}: orig_dst");
    t.maps.orig_dst.remove(&key).unwrap();
}

/// An AF_INET6 socket dialling `::ffff:a.b.c.d` (Java's default) is an IPv4 connection: it is
/// captured to the pod's IPv4 15001 listener, ztunnel finds the IPv4 original destination under
/// the IPv4 peer address it sees, and the application's getpeername shows what it dialled.
pub(super) fn ipv4_mapped_destinations_are_captured_as_ipv4(t: &mut Pod) {
    let dst_v4 = SocketAddr::new(IpAddr::V4(PEER_V4), MAPPED_PORT);
    let dst = SocketAddr::new(IpAddr::V6(PEER_V4.to_ipv6_mapped()), MAPPED_PORT);
    let client = t.app_socket();
    connect(&client, dst).unwrap_or_else(|e| panic!("captured connect to {dst} failed: {e}"));
    let listener = t.listen.outbound_v4_for_mapped.as_ref().expect("the IPv6 run has an IPv4 15001 listener");
    let (mut accepted, seen_peer) = accept_within(listener, WAIT)
        .unwrap_or_else(|| panic!("the pod's connect to {dst} did not arrive on the IPv4 15001 listener"));
    assert_nothing_on(&t.listen.peer_v4_for_mapped, "a captured mapped connect must not reach the destination");
    assert!(seen_peer.is_ipv4(), "15001 sees an IPv4 peer, got {seen_peer}");
    assert!(same_endpoint(seen_peer, local_addr(&client)), "15001's peer {seen_peer} must be the client");
    assert_eq!(accepted.local_addr().unwrap(), SocketAddr::new(IpAddr::V4(POD_V4), OUTBOUND_PORT));
    assert_eq!(client.peer_addr().unwrap().as_socket(), Some(dst), "getpeername must show the mapped address dialled");

    let key = PeerKey::from(seen_peer);
    let orig = t.maps.orig_dst.get(&key, 0).unwrap_or_else(|e| panic!("no orig_dst entry for {seen_peer}: {e}"));
    assert_eq!(SocketAddr::try_from(orig), Ok(dst_v4), "the original destination is recorded as IPv4");
    let cookie = sys::socket_cookie(client.as_fd()).unwrap();
    assert_eq!(t.maps.by_cookie.get(&cookie, 0).ok(), Some(OrigDst::from(dst_v4)), "orig_dst_by_cookie");
    (&client).write_all(b"ping").unwrap();
    let mut got = [0; 4];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping", "bytes must flow on the redirected mapped connection");
    t.maps.orig_dst.remove(&key).unwrap();

    let loopback = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), LOOPBACK_PORT);
    t.assert_direct(loopback, |l| l.pod_loopback_v4.as_ref().unwrap(), "mapped loopback must not be captured");

    t.maps.exclude_host(t.cookie, IpAddr::V4(PEER_V4), true);
    t.assert_direct(dst, |l| &l.peer_v4_for_mapped, "a mapped destination in an excluded IPv4 CIDR goes direct");
    t.maps.exclude_host(t.cookie, IpAddr::V4(PEER_V4), false);
    let listener = t.listen.outbound_v4_for_mapped.as_ref().unwrap();
    assert_nothing_on(listener, "nothing else reached the IPv4 15001 listener");
}

/// Another pod's exclusions do not apply here: exclusions are per pod.
pub(super) fn exclusions_belong_to_their_pod(t: &mut Pod) {
    let other = t.cookie.wrapping_add(1);
    let port_key = PodPortKey::new(other, PEER_PORT);
    t.maps.excluded_ports.insert(port_key, 1, 0).unwrap();
    t.maps.exclude_host(other, t.family.peer, true);
    let dst = t.at(t.family.peer, PEER_PORT);
    let socket = t.app_socket();
    assert_captured(t, socket, dst, "another pod's excluded port and CIDR must not exempt this pod");
    t.maps.excluded_ports.remove(&port_key).unwrap();
    t.maps.exclude_host(other, t.family.peer, false);
}

/// An excluded inbound port, and every port with bypass-inbound-capture, reaches the
/// application without 15006; other ports of the pod stay captured.
pub(super) fn excluded_inbound_ports_reach_the_application(t: &mut Pod) {
    let dst = t.at(t.family.pod, APP_PORT);
    for (what, key) in [
        ("an excluded inbound port", IpPortKey::port(t.family.pod, APP_PORT)),
        ("bypass-inbound-capture", IpPortKey::every_port(t.family.pod)),
    ] {
        t.maps.inbound_exclusions.insert(key, 1, 0).unwrap();
        let from_peer = t.peer.socket(t.family.domain);
        connect(&from_peer, dst).unwrap_or_else(|e| panic!("{what}: inbound connect to {dst} failed: {e}"));
        let arrived = accept_within(&t.listen.app, WAIT);
        assert!(
            arrived.is_some_and(|(_, peer)| peer == local_addr(&from_peer)),
            "{what}: {dst} must reach the application directly"
        );
        assert_nothing_on(t.listen.inbound.as_ref().unwrap(), &format!("{what} must not go to 15006"));
        t.maps.inbound_exclusions.remove(&key).unwrap();
    }
    let other_port = IpPortKey::port(t.family.pod, APP_PORT + 1);
    t.maps.inbound_exclusions.insert(other_port, 1, 0).unwrap();
    let from_peer = t.peer.socket(t.family.domain);
    connect(&from_peer, dst).unwrap_or_else(|e| panic!("inbound connect to {dst} failed: {e}"));
    assert!(
        accept_within(t.listen.inbound.as_ref().unwrap(), WAIT).is_some(),
        "a port that is not excluded must still go to 15006"
    );
    assert_nothing_on(&t.listen.app, "a port that is not excluded must not reach the application directly");
    t.maps.inbound_exclusions.remove(&other_port).unwrap();
}

/// The programs exempt the mark ztunnel_config names, whatever it is: with another mark,
/// 0x539 is captured like any socket; with none (0), no mark exempts a socket.
pub(super) fn the_configured_mark_is_the_one_exempt(t: &mut Pod) {
    const OTHER_MARK: u32 = 0x77;
    let dst = t.at(t.family.peer, PEER_PORT);
    t.maps.set_mark(OTHER_MARK);
    let socket = t.app_socket();
    socket.set_mark(OTHER_MARK).unwrap();
    t.assert_direct_with(socket, dst, |l| &l.peer, "a socket with the configured mark must not be captured");
    let socket = t.app_socket();
    socket.set_mark(ZTUNNEL_MARK).unwrap();
    assert_captured(t, socket, dst, "0x539 is not special once another mark is configured");

    t.maps.set_mark(0);
    let socket = t.app_socket();
    socket.set_mark(ZTUNNEL_MARK).unwrap();
    assert_captured(t, socket, dst, "without a configured mark, marked sockets are captured");
    t.maps.set_mark(ZTUNNEL_MARK);
}
