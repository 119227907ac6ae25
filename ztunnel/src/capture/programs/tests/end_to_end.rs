//! The programs doing their jobs on a real "pod": a network namespace and a cgroup v2
//! directory, with a peer namespace at the other end of a veth pair (dual-stack:
//! 10.89.0.2 and fd89::2 for the pod, 10.89.0.1 and fd89::1 for the peer). The test plays
//! ztunnel by hand: listeners on the pod's 15001/15006/15008 made by this process (outside the
//! pod's cgroup, like ztunnel's), and map entries. Application sockets are made by a process
//! inside the pod's cgroup and netns. One run per address family; no traffic leaves the two
//! namespaces.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, SockHash};
use aya::programs::{CgroupAttachMode, Program};
use socket2::{Domain, Socket};

use super::fixture::{Bpffs, Cgroup, Netns, accept_within, running_as_root};
use super::{load, sys, take_map};
use crate::capture::maps::{
    IpKey, IpPortKey, NetnsCookie, OrigDst, PeerKey, PodCidr4Key, PodCidr6Key, PodConfig, PodPortKey, Present,
    SocketCookie, ZTUNNEL_MARK, ZtunnelConfig,
};
use crate::in_pod::{HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};

mod dual_stack_and_config;
use crate::capture::programs::*;

const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd89, 0, 0, 0, 0, 0, 0, 2);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd89, 0, 0, 0, 0, 0, 0, 1);
/// Plain servers: at the peer; at the peer on an excluded port; at the peer's IPv4 address
/// for IPv4-mapped connects; in the pod on every address (the application); on the pod's
/// loopback.
const PEER_PORT: u16 = 8080;
const EXCLUDED_PORT: u16 = 9443;
const MAPPED_PORT: u16 = 8083;
const APP_PORT: u16 = 8082;
const LOOPBACK_PORT: u16 = 9091;
/// Bound on every connect and accept.
const WAIT: Duration = Duration::from_secs(1);

/// The addresses one run uses.
#[derive(Clone, Copy)]
struct Family {
    domain: Domain,
    pod: IpAddr,
    peer: IpAddr,
    any: IpAddr,
    loopback: IpAddr,
    /// Where ztunnel dials the pod's applications from.
    ztunnel_source: IpAddr,
}

const V4: Family = Family {
    domain: Domain::IPV4,
    pod: IpAddr::V4(POD_V4),
    peer: IpAddr::V4(PEER_V4),
    any: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    loopback: IpAddr::V4(Ipv4Addr::LOCALHOST),
    ztunnel_source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)),
};

const V6: Family = Family {
    domain: Domain::IPV6,
    pod: IpAddr::V6(POD_V6),
    peer: IpAddr::V6(PEER_V6),
    any: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    loopback: IpAddr::V6(Ipv6Addr::LOCALHOST),
    ztunnel_source: IpAddr::V6(Ipv6Addr::LOCALHOST),
};

#[test]
fn programs_capture_an_ipv4_pod_end_to_end() {
    if running_as_root("programs_capture_an_ipv4_pod_end_to_end") {
        run_scenarios(V4);
    }
}

#[test]
fn programs_capture_an_ipv6_pod_end_to_end() {
    if running_as_root("programs_capture_an_ipv6_pod_end_to_end") {
        run_scenarios(V6);
    }
}

fn run_scenarios(family: Family) {
    let mut env = Env::enroll(family);
    let t = &mut env.pod;
    outbound_connect_is_redirected_and_remembered(t);
    marked_sockets_are_not_captured(t);
    loopback_is_not_captured(t);
    excluded_ports_and_cidrs_are_not_captured(t);
    dual_stack_and_config::exclusions_belong_to_their_pod(t);
    dual_stack_and_config::excluded_inbound_ports_reach_the_application(t);
    dual_stack_and_config::the_configured_mark_is_the_one_exempt(t);
    if family.domain == Domain::IPV6 {
        dual_stack_and_config::ipv4_mapped_destinations_are_captured_as_ipv4(t);
    }
    apps_cannot_bind_ztunnel_ports(t);
    inbound_goes_to_15006_except_ztunnel_ports_and_loopback(t);
    not_ready_pod_cannot_connect_out(t);
    unenrolled_pod_is_not_captured(t);
    inbound_is_refused_without_the_15006_listener(t);
}

/// Everything one run creates. Fields drop in declaration order: sockets and namespaces,
/// then the cgroup, then programs and maps (links detach), then the bpffs.
struct Env {
    pod: Pod,
    _cgroup: Cgroup,
    _ebpf: Ebpf,
    _bpffs: Bpffs,
}

/// The maps the test plays ztunnel with.
struct Maps {
    pods: HashMap<MapData, NetnsCookie, PodConfig>,
    by_cookie: HashMap<MapData, SocketCookie, OrigDst>,
    orig_dst: HashMap<MapData, PeerKey, OrigDst>,
    inbound_sockets: SockHash<MapData, IpKey>,
    config: Array<MapData, ZtunnelConfig>,
    excluded_ports: HashMap<MapData, PodPortKey, Present>,
    excluded_cidrs4: LpmTrie<MapData, [u8; 12], Present>,
    excluded_cidrs6: LpmTrie<MapData, [u8; 24], Present>,
    inbound_exclusions: HashMap<MapData, IpPortKey, Present>,
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Self {
        Self {
            pods: HashMap::try_from(take_map(ebpf, MAP_POD_CONFIG)).unwrap(),
            by_cookie: HashMap::try_from(take_map(ebpf, MAP_ORIG_DST_BY_COOKIE)).unwrap(),
            orig_dst: HashMap::try_from(take_map(ebpf, MAP_ORIG_DST)).unwrap(),
            inbound_sockets: SockHash::try_from(take_map(ebpf, MAP_INBOUND_SOCKETS)).unwrap(),
            config: Array::try_from(take_map(ebpf, MAP_ZTUNNEL_CONFIG)).unwrap(),
            excluded_ports: HashMap::try_from(take_map(ebpf, MAP_POD_EXCLUDED_PORTS)).unwrap(),
            excluded_cidrs4: LpmTrie::try_from(take_map(ebpf, MAP_POD_EXCLUDED_CIDRS4)).unwrap(),
            excluded_cidrs6: LpmTrie::try_from(take_map(ebpf, MAP_POD_EXCLUDED_CIDRS6)).unwrap(),
            inbound_exclusions: HashMap::try_from(take_map(ebpf, MAP_POD_INBOUND_EXCLUSIONS)).unwrap(),
        }
    }

    fn has_inbound_socket(&self, key: IpKey) -> bool {
        // A userspace lookup in a SOCKHASH with 4-byte values fails with ENOSPC even when the
        // key exists (the kernel can only return 8-byte socket cookies), so scan the keys.
        self.inbound_sockets.keys().any(|k| k.ok() == Some(key))
    }

    /// What the programs take as ztunnel's socket mark.
    fn set_mark(&mut self, mark: u32) {
        self.config.set(0, ZtunnelConfig { socket_mark: mark }, 0).expect("cannot write ztunnel_config");
    }

    /// Adds (`true`) or removes `ip/32` or `ip/128` in the pod `netns`'s excluded CIDRs.
    fn exclude_host(&mut self, netns: NetnsCookie, ip: IpAddr, excluded: bool) {
        let result = match ip {
            IpAddr::V4(v4) => {
                let key = PodCidr4Key::new(netns, v4, 32).unwrap().to_lpm();
                if excluded { self.excluded_cidrs4.insert(&key, 1, 0) } else { self.excluded_cidrs4.remove(&key) }
            }
            IpAddr::V6(v6) => {
                let key = PodCidr6Key::new(netns, v6, 128).unwrap().to_lpm();
                if excluded { self.excluded_cidrs6.insert(&key, 1, 0) } else { self.excluded_cidrs6.remove(&key) }
            }
        };
        result.unwrap_or_else(|e| panic!("cannot update the excluded CIDRs for {ip}: {e}"));
    }
}

/// Listeners in the pod netns (made by this process, as ztunnel's are) and at the peer.
struct Listeners {
    outbound: TcpListener,
    inbound: Option<TcpListener>,
    hbone: TcpListener,
    app: TcpListener,
    pod_loopback: TcpListener,
    peer: TcpListener,
    peer_excluded: TcpListener,
    peer_v4_for_mapped: TcpListener,
    /// The pod's IPv4 15001 listener in the IPv6 run, for IPv4-mapped connects.
    outbound_v4_for_mapped: Option<TcpListener>,
    /// The pod's IPv4 loopback in the IPv6 run, for IPv4-mapped loopback connects.
    pod_loopback_v4: Option<TcpListener>,
}

/// What the scenarios share.
struct Pod {
    family: Family,
    pod: Netns,
    peer: Netns,
    cookie: NetnsCookie,
    config: PodConfig,
    /// Unconnected sockets made by a process in the pod's cgroup and netns.
    app: Vec<Socket>,
    maps: Maps,
    listen: Listeners,
}

impl Env {
    /// Builds the pod and its peer, attaches every program, and enrolls the pod by hand.
    fn enroll(family: Family) -> Self {
        let bpffs = Bpffs::mount().expect("cannot mount a test bpffs");
        let mut ebpf = load(&bpffs);
        let cgroup = Cgroup::create().expect("cannot create a test cgroup");
        let pod = Netns::new().expect("cannot create the pod netns");
        let peer = Netns::new().expect("cannot create the peer netns");
        wire(&pod, &peer).expect("cannot wire the pod to its peer");
        wait_until_reachable(&pod, &peer, family);

        let cgroup_dir = cgroup.open().expect("cannot open the test cgroup");
        for name in CGROUP_PROGRAMS {
            let attached = match ebpf.program_mut(name).unwrap() {
                Program::CgroupSockAddr(p) => p.attach(&cgroup_dir, CgroupAttachMode::Single).map(drop),
                Program::SockOps(p) => p.attach(&cgroup_dir, CgroupAttachMode::Single).map(drop),
                other => panic!("{name} has unexpected type {:?}", other.prog_type()),
            };
            attached.unwrap_or_else(|e| panic!("cannot attach {name} to the test cgroup: {e}"));
        }
        let Program::SkLookup(sk_lookup) = ebpf.program_mut(SK_LOOKUP).unwrap() else {
            panic!("{SK_LOOKUP} is not an sk_lookup program");
        };
        sk_lookup.attach(pod.as_fd()).unwrap_or_else(|e| panic!("cannot attach {SK_LOOKUP} to the pod netns: {e}"));

        let cookie = crate::capture::sys::netns_cookie(pod.socket(Domain::IPV4).as_fd()).expect("SO_NETNS_COOKIE");
        let config = PodConfig::new(Some(POD_V4), Some(POD_V6)).with_ready(true);
        let mut maps = Maps::take(&mut ebpf);
        maps.pods.insert(cookie, config, 0).unwrap();
        let at = SocketAddr::new;
        let listen = Listeners {
            outbound: pod.listen(at(family.pod, OUTBOUND_PORT)),
            inbound: Some(pod.listen(at(family.pod, INBOUND_PLAINTEXT_PORT))),
            hbone: pod.listen(at(family.pod, HBONE_PORT)),
            app: pod.listen(at(family.any, APP_PORT)),
            pod_loopback: pod.listen(at(family.loopback, LOOPBACK_PORT)),
            peer: peer.listen(at(family.peer, PEER_PORT)),
            peer_excluded: peer.listen(at(family.peer, EXCLUDED_PORT)),
            peer_v4_for_mapped: peer.listen(at(IpAddr::V4(PEER_V4), MAPPED_PORT)),
            outbound_v4_for_mapped: (family.domain == Domain::IPV6)
                .then(|| pod.listen(at(IpAddr::V4(POD_V4), OUTBOUND_PORT))),
            pod_loopback_v4: (family.domain == Domain::IPV6)
                .then(|| pod.listen(at(IpAddr::V4(Ipv4Addr::LOCALHOST), LOOPBACK_PORT))),
        };
        // What ztunnel does at every load.
        maps.set_mark(ZTUNNEL_MARK);
        let inbound_fd = listen.inbound.as_ref().unwrap().as_raw_fd();
        maps.inbound_sockets.insert(IpKey::from(family.pod), inbound_fd, 0).expect("cannot insert the 15006 socket");
        let app = pod.app_sockets(&cgroup, family.domain, 24).expect("cannot make sockets inside the pod's cgroup");

        let pod = Pod { family, pod, peer, cookie, config, app, maps, listen };
        Self { pod, _cgroup: cgroup, _ebpf: ebpf, _bpffs: bpffs }
    }
}

/// A veth pair between the namespaces, both families; no duplicate address detection so the
/// IPv6 addresses are usable at once.
fn wire(pod: &Netns, peer: &Netns) -> io::Result<()> {
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.path()])?;
    for (ns, v4, v6) in [(pod, "10.89.0.2/24", "fd89::2/64"), (peer, "10.89.0.1/24", "fd89::1/64")] {
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["addr", "add", v4, "dev", "eth0"])?;
        ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
    }
    Ok(())
}

/// Right after a veth pair comes up, IPv6 loses the first SYN for about a second (even with
/// duplicate address detection off); probe with sockets outside the cgroup until a connect
/// gets through, so the scenarios' one-second bounds measure the programs, not the link.
fn wait_until_reachable(pod: &Netns, peer: &Netns, family: Family) {
    let probe = peer.listen(SocketAddr::new(family.peer, 0));
    let target = probe.local_addr().unwrap();
    for _ in 0..50 {
        let socket = pod.socket(family.domain);
        if socket.connect_timeout(&target.into(), Duration::from_millis(100)).is_ok() {
            return;
        }
    }
    panic!("the peer at {target} is unreachable from the pod netns after 5 s");
}

impl Pod {
    fn app_socket(&mut self) -> Socket {
        self.app.pop().expect("the test needs more application sockets")
    }

    fn at(&self, ip: IpAddr, port: u16) -> SocketAddr {
        SocketAddr::new(ip, port)
    }

    /// Connects a fresh application socket to `dst` and asserts it reached `listener`
    /// directly: not captured, no original destination recorded, getpeername untouched.
    fn assert_direct(&mut self, dst: SocketAddr, listener: fn(&Listeners) -> &TcpListener, why: &str) {
        let socket = self.app_socket();
        self.assert_direct_with(socket, dst, listener, why);
    }

    fn assert_direct_with(
        &mut self,
        socket: Socket,
        dst: SocketAddr,
        listener: fn(&Listeners) -> &TcpListener,
        why: &str,
    ) {
        connect(&socket, dst).unwrap_or_else(|e| panic!("{why}: connect to {dst} failed: {e}"));
        let arrived = accept_within(listener(&self.listen), WAIT);
        let me = local_addr(&socket);
        assert!(arrived.is_some_and(|(_, peer)| same_endpoint(peer, me)), "{why}: {dst} did not get the connection");
        assert_nothing_on(&self.listen.outbound, why);
        assert_eq!(socket.peer_addr().unwrap().as_socket(), Some(dst), "{why}: getpeername");
        let key = PeerKey::from(me);
        assert!(matches!(self.maps.orig_dst.get(&key, 0), Err(MapError::KeyNotFound)), "{why}: orig_dst written");
    }
}

/// Equal after folding IPv4-mapped IPv6 addresses.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    PeerKey::from(a) == PeerKey::from(b)
}

fn connect(socket: &Socket, to: SocketAddr) -> io::Result<()> {
    socket.connect_timeout(&to.into(), WAIT)
}

fn local_addr(socket: &Socket) -> SocketAddr {
    socket.local_addr().unwrap().as_socket().unwrap()
}

fn assert_nothing_on(listener: &TcpListener, why: &str) {
    if let Some((_, peer)) = accept_within(listener, Duration::ZERO) {
        panic!("{why}, but {:?} accepted a connection from {peer}", listener.local_addr().unwrap());
    }
}

fn assert_eperm(result: io::Result<()>, what: &str) {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        other => panic!("{what}: expected EPERM, got {other:?}"),
    }
}

fn outbound_connect_is_redirected_and_remembered(t: &mut Pod) {
    let dst = t.at(t.family.peer, PEER_PORT);
    let client = t.app_socket();
    connect(&client, dst).unwrap_or_else(|e| panic!("captured connect to {dst} failed: {e}"));
    let (mut accepted, seen_peer) = accept_within(&t.listen.outbound, WAIT)
        .unwrap_or_else(|| panic!("the pod's connect to {dst} did not arrive on the 15001 listener"));
    assert_nothing_on(&t.listen.peer, "a captured connect must not reach the real destination");
    assert_eq!(seen_peer, local_addr(&client), "15001 must see the client's own address as its peer");
    assert_eq!(accepted.local_addr().unwrap(), t.at(t.family.pod, OUTBOUND_PORT));
    assert_eq!(client.peer_addr().unwrap().as_socket(), Some(dst), "getpeername must show the original destination");

    let key = PeerKey::from(seen_peer);
    let orig = t.maps.orig_dst.get(&key, 0).unwrap_or_else(|e| panic!("no orig_dst entry for {seen_peer}: {e}"));
    assert_eq!(SocketAddr::try_from(orig), Ok(dst), "orig_dst[{seen_peer}]");
    let socket_cookie = sys::socket_cookie(client.as_fd()).unwrap();
    assert_eq!(t.maps.by_cookie.get(&socket_cookie, 0).ok(), Some(OrigDst::from(dst)), "orig_dst_by_cookie");

    (&client).write_all(b"ping").unwrap();
    let mut got = [0; 4];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping", "bytes must flow on the redirected connection");
    // ztunnel deletes the entry once it has read it.
    t.maps.orig_dst.remove(&key).unwrap();
}

fn marked_sockets_are_not_captured(t: &mut Pod) {
    let socket = t.app_socket();
    socket.set_mark(ZTUNNEL_MARK).unwrap();
    let dst = t.at(t.family.peer, PEER_PORT);
    t.assert_direct_with(socket, dst, |l| &l.peer, "a socket marked 0x539 must not be captured");
}

fn loopback_is_not_captured(t: &mut Pod) {
    let dst = t.at(t.family.loopback, LOOPBACK_PORT);
    t.assert_direct(dst, |l| &l.pod_loopback, "a loopback destination must not be captured");
}

fn excluded_ports_and_cidrs_are_not_captured(t: &mut Pod) {
    let port_key = PodPortKey::new(t.cookie, EXCLUDED_PORT);
    t.maps.excluded_ports.insert(port_key, 1, 0).unwrap();
    let dst = t.at(t.family.peer, EXCLUDED_PORT);
    t.assert_direct(dst, |l| &l.peer_excluded, "an excluded port must not be captured");
    t.maps.excluded_ports.remove(&port_key).unwrap();

    t.maps.exclude_host(t.cookie, t.family.peer, true);
    let dst = t.at(t.family.peer, PEER_PORT);
    t.assert_direct(dst, |l| &l.peer, "an excluded CIDR must not be captured");
    t.maps.exclude_host(t.cookie, t.family.peer, false);
}

fn apps_cannot_bind_ztunnel_ports(t: &mut Pod) {
    let socket = t.app_socket();
    for port in [OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT] {
        for ip in [t.family.pod, t.family.any] {
            let addr = t.at(ip, port);
            assert_eperm(socket.bind(&addr.into()), &format!("an application binding {addr}"));
        }
    }
    socket.bind(&t.at(t.family.pod, 8081).into()).expect("an application must still bind other ports");
}

fn inbound_goes_to_15006_except_ztunnel_ports_and_loopback(t: &mut Pod) {
    let dst = t.at(t.family.pod, APP_PORT);
    let from_peer = t.peer.socket(t.family.domain);
    connect(&from_peer, dst).unwrap_or_else(|e| panic!("inbound connect to {dst} failed: {e}"));
    let inbound = t.listen.inbound.as_ref().unwrap();
    let (accepted, seen_peer) = accept_within(inbound, WAIT)
        .unwrap_or_else(|| panic!("the inbound connection to {dst} did not land on the 15006 listener"));
    assert_eq!(accepted.local_addr().unwrap(), dst, "getsockname on the 15006 side must be the original destination");
    assert_eq!(seen_peer, local_addr(&from_peer));
    assert_nothing_on(&t.listen.app, "captured inbound traffic must not reach the application directly");

    let to_hbone = t.peer.socket(t.family.domain);
    connect(&to_hbone, t.at(t.family.pod, HBONE_PORT)).expect("inbound connect to 15008");
    assert!(accept_within(&t.listen.hbone, WAIT).is_some(), "15008 must get connections to 15008");
    assert_nothing_on(inbound, "connections to ztunnel's own ports are not redirected");

    // ztunnel reaches the application from loopback (its sockets are outside the cgroup).
    let delivering = t.pod.socket(t.family.domain);
    delivering.bind(&t.at(t.family.ztunnel_source, 0).into()).unwrap();
    connect(&delivering, dst).expect("connect from ztunnel's source address to the application");
    assert!(accept_within(&t.listen.app, WAIT).is_some(), "a loopback source must reach the application");
    assert_nothing_on(inbound, "connections from loopback sources are not redirected");
}

fn not_ready_pod_cannot_connect_out(t: &mut Pod) {
    t.maps.pods.insert(t.cookie, t.config.with_ready(false), 0).unwrap();
    let socket = t.app_socket();
    let dst = t.at(t.family.peer, PEER_PORT);
    assert_eperm(connect(&socket, dst), "a connect from a pod whose proxy is not ready");
    assert_nothing_on(&t.listen.peer, "a refused connect must not leave the pod");
    let dst = t.at(t.family.loopback, LOOPBACK_PORT);
    t.assert_direct(dst, |l| &l.pod_loopback, "loopback must work while the pod is not ready");
    t.maps.pods.insert(t.cookie, t.config, 0).unwrap();
}

fn unenrolled_pod_is_not_captured(t: &mut Pod) {
    t.maps.pods.remove(&t.cookie).unwrap();
    let dst = t.at(t.family.peer, PEER_PORT);
    t.assert_direct(dst, |l| &l.peer, "a netns without pod_config must not be captured");
    t.maps.pods.insert(t.cookie, t.config, 0).unwrap();
}

fn inbound_is_refused_without_the_15006_listener(t: &mut Pod) {
    let key = IpKey::from(t.family.pod);
    assert!(t.maps.has_inbound_socket(key), "inbound_sockets must hold the 15006 listener");
    drop(t.listen.inbound.take());
    // The kernel unlinks a closed socket from the map when it is destroyed, which can lag the
    // close under load: wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while t.maps.has_inbound_socket(key) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!t.maps.has_inbound_socket(key), "closing the 15006 listener must remove it from inbound_sockets");

    // sk_lookup's SK_DROP makes the kernel's listener lookup fail, and TCP answers a SYN that
    // has no listener with a reset: the client is refused at once instead of timing out, and
    // the application, although it listens on the port, gets nothing.
    let dst = t.at(t.family.pod, APP_PORT);
    let late = t.peer.socket(t.family.domain);
    match connect(&late, dst) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("without a 15006 listener an inbound connect to {dst} must be refused; got {other:?}"),
    }
    assert_nothing_on(&t.listen.app, "fail closed: the application must not get uncaptured inbound traffic");
}
