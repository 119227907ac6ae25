//! In-pod routing that lets ztunnel reach a pod's application from the client's own address.
//!
//! ztunnel dials the application with a transparent socket bound to the client's address and
//! marked [`REPLY_MARK`], so the application sees who called it (as in Istio's in-pod mode).
//! Its answers are addressed to that client, which is not in the pod, so without help they
//! would leave through `eth0`. Inside each enrolled pod's network namespace this module sets:
//! - `net.ipv4.tcp_fwmark_accept = 1`: a socket the application accepts takes the mark of the
//!   SYN that opened it (ztunnel's mark; connections from anywhere else carry no mark);
//! - `net.ipv4.fwmark_reflect` and `net.ipv6.fwmark_reflect = 1`: resets and ICMP errors the
//!   kernel sends in answer to a marked packet carry its mark too;
//! - for IPv4 and IPv6, a rule `fwmark REPLY_MARK/0xfff lookup REPLY_TABLE` and, in that table,
//!   `local default dev lo`: marked packets are delivered locally, to ztunnel's socket.
//!
//! `sk_lookup` lets ztunnel's own SYN reach the application because each such dial is listed
//! in the `inbound_dials` map while it connects (see `PodSockets`).
//!
//! Istio reaches the same end with iptables (CONNMARK restores the mark on the replies); here
//! no iptables and no conntrack are involved. Rules and routes are made over rtnetlink by the
//! pod's namespace worker and removed at unenroll; the sysctls stay (harmless without the
//! rule). Must run on a thread inside the pod's network namespace; does nothing else.

use std::io;

use socket2::{Domain, Protocol, Socket, Type};

pub(crate) use crate::in_pod::{REPLY_MARK, REPLY_MASK};
/// Routing table holding `local default dev lo` (Istio's in-pod table).
const REPLY_TABLE: u8 = 100;
/// Priority of the rule; before the `main` table's rule (32766).
const RULE_PRIORITY: u32 = 32764;
const LOOPBACK_IFINDEX: u32 = 1;

const SYSCTLS: [(&str, &str); 3] = [
    ("/proc/sys/net/ipv4/tcp_fwmark_accept", "1"),
    ("/proc/sys/net/ipv4/fwmark_reflect", "1"),
    ("/proc/sys/net/ipv6/fwmark_reflect", "1"),
];

/// Failures installing or removing the routing; each names the step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyRoutingError {
    #[error("setting {path}: {source}")]
    Sysctl {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{step} (rtnetlink): {source}")]
    Netlink {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Installs the sysctls, rules and routes in the calling thread's network namespace. Already
/// present rules and routes are fine (a restarted ztunnel re-adopting its pods).
pub(crate) fn install() -> Result<(), ReplyRoutingError> {
    for (path, value) in SYSCTLS {
        match std::fs::write(path, value) {
            Ok(()) => {}
            // A namespace without IPv6 has no net.ipv6 tree; its IPv4 half still works.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.contains("ipv6") => {}
            Err(source) => return Err(ReplyRoutingError::Sysctl { path, source }),
        }
    }
    let netlink = Netlink::open()?;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let v6 = family == libc::AF_INET6 as u8;
        let rule = netlink.request(libc::RTM_NEWRULE, CREATE, &rule_message(family));
        tolerate(rule, &[libc::EEXIST], v6)
            .map_err(|source| ReplyRoutingError::Netlink { step: "adding the reply rule", source })?;
        let route = netlink.request(libc::RTM_NEWROUTE, CREATE, &route_message(family));
        tolerate(route, &[libc::EEXIST], v6)
            .map_err(|source| ReplyRoutingError::Netlink { step: "adding the reply route", source })?;
    }
    Ok(())
}

/// Removes the rules and routes [`install`] made; missing ones are fine.
pub(crate) fn remove() -> Result<(), ReplyRoutingError> {
    let netlink = Netlink::open()?;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let v6 = family == libc::AF_INET6 as u8;
        let gone = [libc::ENOENT, libc::ESRCH];
        tolerate(netlink.request(libc::RTM_DELRULE, 0, &rule_message(family)), &gone, v6)
            .map_err(|source| ReplyRoutingError::Netlink { step: "removing the reply rule", source })?;
        tolerate(netlink.request(libc::RTM_DELROUTE, 0, &route_message(family)), &gone, v6)
            .map_err(|source| ReplyRoutingError::Netlink { step: "removing the reply route", source })?;
    }
    Ok(())
}

/// Treats the listed errors as success, and for IPv6 also "address family not supported" (a
/// kernel or namespace without IPv6).
fn tolerate(result: io::Result<()>, ok: &[i32], v6: bool) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error().is_some_and(|c| ok.contains(&c)) => Ok(()),
        Err(e) if v6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Ok(()),
        other => other,
    }
}

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const CREATE: u16 = 0x400 | 0x200; // NLM_F_CREATE | NLM_F_EXCL
const NLMSG_ERROR: u16 = 2;
const FR_ACT_TO_TBL: u8 = 1;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;

/// Appends one netlink attribute (length, type, value, padding to 4 bytes).
fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// `struct fib_rule_hdr` + attributes: `fwmark REPLY_MARK/REPLY_MASK lookup REPLY_TABLE`.
fn rule_message(family: u8) -> Vec<u8> {
    // family, dst_len, src_len, tos, table, res1, res2, action, flags (u32)
    let mut m = vec![family, 0, 0, 0, REPLY_TABLE, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0];
    push_attr(&mut m, FRA_PRIORITY, &RULE_PRIORITY.to_ne_bytes());
    push_attr(&mut m, FRA_FWMARK, &REPLY_MARK.to_ne_bytes());
    push_attr(&mut m, FRA_FWMASK, &REPLY_MASK.to_ne_bytes());
    push_attr(&mut m, FRA_TABLE, &u32::from(REPLY_TABLE).to_ne_bytes());
    m
}

/// `struct rtmsg` + attributes: `local default dev lo table REPLY_TABLE`.
fn route_message(family: u8) -> Vec<u8> {
    // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    let mut m =
        vec![family, 0, 0, 0, REPLY_TABLE, libc::RTPROT_STATIC, libc::RT_SCOPE_HOST, libc::RTN_LOCAL, 0, 0, 0, 0];
    push_attr(&mut m, RTA_TABLE, &u32::from(REPLY_TABLE).to_ne_bytes());
    push_attr(&mut m, RTA_OIF, &LOOPBACK_IFINDEX.to_ne_bytes());
    m
}

/// An rtnetlink socket of the calling thread's network namespace.
struct Netlink(Socket);

impl Netlink {
    fn open() -> Result<Netlink, ReplyRoutingError> {
        let socket = Socket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(libc::NETLINK_ROUTE)))
            .map_err(|source| ReplyRoutingError::Netlink { step: "opening a socket", source })?;
        // A kernel that never answers must not hang the namespace worker.
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .map_err(|source| ReplyRoutingError::Netlink { step: "opening a socket", source })?;
        Ok(Netlink(socket))
    }

    /// Sends one request (to the kernel: an unconnected netlink socket's default peer) and
    /// waits for its acknowledgement.
    fn request(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        const SEQ: u32 = 1;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        msg.extend_from_slice(&SEQ.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        self.0.send(&msg)?;
        let mut buf = [0u8; 4096];
        let n = io::Read::read(&mut &self.0, &mut buf)?;
        parse_ack(&buf[..n])
    }
}

/// The outcome in an `NLMSG_ERROR` reply: error 0 is the acknowledgement.
fn parse_ack(reply: &[u8]) -> io::Result<()> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink reply");
    let kind = u16::from_ne_bytes(reply.get(4..6).ok_or_else(short)?.try_into().map_err(|_| short())?);
    if kind != NLMSG_ERROR {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected rtnetlink reply type {kind}")));
    }
    let code = i32::from_ne_bytes(reply.get(16..20).ok_or_else(short)?.try_into().map_err(|_| short())?);
    if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_mark_table_and_loopback() {
        let rule = rule_message(libc::AF_INET6 as u8);
        assert_eq!(&rule[..8], &[10, 0, 0, 0, 100, 0, 0, 1]);
        assert_eq!(rule.len(), 12 + 4 * 8, "four u32 attributes of 8 bytes each");
        let first_attr = (u16::from_ne_bytes([rule[12], rule[13]]), u16::from_ne_bytes([rule[14], rule[15]]));
        assert_eq!(first_attr, (8, FRA_PRIORITY));
        assert_eq!(u32::from_ne_bytes(rule[16..20].try_into().unwrap()), RULE_PRIORITY);
        let route = route_message(libc::AF_INET as u8);
        assert_eq!(&route[..8], &[2, 0, 0, 0, 100, libc::RTPROT_STATIC, libc::RT_SCOPE_HOST, libc::RTN_LOCAL]);
        assert_eq!(u32::from_ne_bytes(route[route.len() - 4..].try_into().unwrap()), LOOPBACK_IFINDEX);
    }

    #[test]
    fn acks_and_errors_are_told_apart() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(parse_ack(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(parse_ack(&ack).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(parse_ack(&ack[..10]).is_err());
    }
}
