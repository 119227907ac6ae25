//! Names and addresses of one topology's objects: the topology id (which encodes the owning
//! process so the sweeper can tell live owners from dead ones), namespace and interface names,
//! and the address plan. Pure functions only; nothing here touches the system.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Prefix of every network namespace a topology creates: `zt<id>-...`.
pub const NETNS_PREFIX: &str = "zt";

/// Directory under the cgroup2 mount and under bpffs that holds one subdirectory per topology.
pub const TEST_DIR: &str = "ztunnel-test";

/// Linux limit for interface names (IFNAMSIZ - 1).
pub(crate) const IFNAME_MAX: usize = 15;

/// Longest node or pod name accepted (namespace names get long, interface names are cut).
const NAME_MAX: usize = 24;

/// Identifies one topology: `<pid>t<seq>`, the owning process and a per-process counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TopologyId {
    pid: u32,
    seq: u32,
}

impl TopologyId {
    pub fn new(pid: u32, seq: u32) -> TopologyId {
        TopologyId { pid, seq }
    }

    /// The process that owns (created) the topology.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Parses `<pid>t<seq>`.
    pub fn parse(s: &str) -> Option<TopologyId> {
        let (pid, seq) = s.split_once('t')?;
        if pid.is_empty() || seq.is_empty() || !pid.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(TopologyId { pid: pid.parse().ok()?, seq: seq.parse().ok()? })
    }

    /// The id a namespace name `zt<id>-<rest>` belongs to.
    pub fn from_netns_name(name: &str) -> Option<TopologyId> {
        let (id, rest) = name.strip_prefix(NETNS_PREFIX)?.split_once('-')?;
        if rest.is_empty() {
            return None;
        }
        TopologyId::parse(id)
    }

    /// `zt<id>-`: every namespace of this topology starts with it.
    pub fn netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{self}-")
    }

    /// The shared fabric namespace that links the nodes.
    pub fn fabric_netns(&self) -> String {
        format!("{}fabric", self.netns_prefix())
    }

    pub fn node_netns(&self, node: &str) -> String {
        format!("{}{node}", self.netns_prefix())
    }

    pub fn pod_netns(&self, node: &str, pod: &str) -> String {
        format!("{}{node}-{pod}", self.netns_prefix())
    }
}

impl fmt::Display for TopologyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}t{}", self.pid, self.seq)
    }
}

/// Checks a node or pod name: 1 to 24 of `[a-z0-9-]`, not starting or ending with `-`.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > NAME_MAX || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "{kind} name {name:?} must be 1 to {NAME_MAX} of [a-z0-9-], not starting or ending with '-'"
        ));
    }
    if kind == "node" && name == "fabric" {
        return Err("node name \"fabric\" is reserved for the namespace that links the nodes".into());
    }
    Ok(())
}

/// An interface name `<tag><index>-<name>` cut to 15 characters; the index keeps it unique
/// within its namespace however the name is cut.
pub(crate) fn ifname(tag: char, index: u8, name: &str) -> String {
    let mut s = format!("{tag}{index}-{name}");
    s.truncate(IFNAME_MAX);
    s.trim_end_matches('-').to_string()
}

/// The address plan of one topology. `x` picks the pod range 10.x.0.0/16 and fd00:x::/32, `y`
/// the fabric range 172.y.0.0/24. Node `n` (1-based) owns 10.x.n.0/24 (bridge at .1) and
/// fd00:x:n::/64; its pod `k` (2-based) gets 10.x.n.k and fd00:x:n::k. On the fabric, node `n`
/// is 172.y.0.n and fd00:x:fab::n. IPv6 groups are the decimal numbers written as hex digits
/// (node 12 is `fd00:x:12::`), so v4 and v6 addresses read alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPlan {
    x: u8,
    y: u8,
}

impl AddressPlan {
    /// Distinct for up to 240 topologies of one process; topologies of different processes may
    /// share a plan, which is harmless because every node and pod is its own namespace.
    pub fn for_id(id: TopologyId) -> AddressPlan {
        let x = 10 + ((u64::from(id.pid) + u64::from(id.seq)) % 240) as u8;
        AddressPlan { x, y: 16 + x % 16 }
    }

    /// The second octet of the pod range.
    pub fn x(&self) -> u8 {
        self.x
    }

    pub fn pod_subnet_v4(&self, node: u8) -> String {
        format!("10.{}.{node}.0/24", self.x)
    }

    pub fn pod_subnet_v6(&self, node: u8) -> String {
        format!("fd00:{}:{node}::/64", self.x)
    }

    /// The node's bridge address, which is its pods' default gateway.
    pub fn gateway_v4(&self, node: u8) -> Ipv4Addr {
        self.pod_v4(node, 1)
    }

    pub fn gateway_v6(&self, node: u8) -> Ipv6Addr {
        self.pod_v6(node, 1)
    }

    pub fn pod_v4(&self, node: u8, pod: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.x, node, pod)
    }

    pub fn pod_v6(&self, node: u8, pod: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, decimal_as_hex(self.x), decimal_as_hex(node), 0, 0, 0, 0, decimal_as_hex(pod))
    }

    pub fn fabric_v4(&self, node: u8) -> Ipv4Addr {
        Ipv4Addr::new(172, self.y, 0, node)
    }

    pub fn fabric_v6(&self, node: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, decimal_as_hex(self.x), 0xfab, 0, 0, 0, 0, decimal_as_hex(node))
    }
}

/// 23 -> 0x23: the group reads as the decimal number.
fn decimal_as_hex(v: u8) -> u16 {
    (u16::from(v / 100) << 8) | (u16::from(v / 10 % 10) << 4) | u16::from(v % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_names() {
        let id = TopologyId::new(4242, 7);
        assert_eq!(id.to_string(), "4242t7");
        assert_eq!(TopologyId::parse("4242t7"), Some(id));
        assert_eq!(TopologyId::from_netns_name("zt4242t7-node-a-web"), Some(id));
        assert_eq!(TopologyId::from_netns_name(&id.fabric_netns()), Some(id));
        for bad in ["", "t", "12t", "t3", "12x3", "1t2t3", "-1t2", "99999999999t0"] {
            assert_eq!(TopologyId::parse(bad), None, "{bad:?} should not parse");
        }
        for bad in ["zt12t3", "zt12t3-", "xx12t3-node", "ztabc-node", "cni-1234"] {
            assert_eq!(TopologyId::from_netns_name(bad), None, "{bad:?} should not parse");
        }
    }

    #[test]
    fn names_are_checked_and_interfaces_fit() {
        assert!(check_name("node", "node-a").is_ok());
        for bad in ["", "Node", "a_b", "-a", "a-", "a b", "abcdefghijklmnopqrstuvwxy"] {
            assert!(check_name("pod", bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(check_name("node", "fabric").is_err());
        assert!(check_name("pod", "fabric").is_ok());
        assert_eq!(ifname('p', 2, "web"), "p2-web");
        assert_eq!(ifname('p', 200, "a-very-long-pod-name"), "p200-a-very-lon");
        assert_eq!(ifname('n', 1, "abcdefghijkl-xyz"), "n1-abcdefghijkl");
        assert!(ifname('n', 12, "abcdefghijk-xyz").len() <= IFNAME_MAX);
        assert!(!ifname('n', 12, "abcdefghijk-xyz").ends_with('-'));
    }

    #[test]
    fn address_plan_reads_alike_in_v4_and_v6() {
        let plan = AddressPlan { x: 23, y: 23 };
        assert_eq!(plan.pod_v4(1, 2).to_string(), "10.23.1.2");
        assert_eq!(plan.pod_v6(1, 2).to_string(), "fd00:23:1::2");
        assert_eq!(plan.pod_v6(12, 254).to_string(), "fd00:23:12::254");
        assert_eq!(plan.gateway_v4(2).to_string(), "10.23.2.1");
        assert_eq!(plan.gateway_v6(2).to_string(), "fd00:23:2::1");
        assert_eq!(plan.fabric_v4(2).to_string(), "172.23.0.2");
        assert_eq!(plan.fabric_v6(2).to_string(), "fd00:23:fab::2");
        assert_eq!(plan.pod_subnet_v4(3), "10.23.3.0/24");
        assert_eq!(plan.pod_subnet_v6(3), "fd00:23:3::/64");
    }

    #[test]
    fn plans_differ_within_a_process_and_stay_in_range() {
        let plans: Vec<_> = (0..240).map(|seq| AddressPlan::for_id(TopologyId::new(31337, seq))).collect();
        for (i, p) in plans.iter().enumerate() {
            assert!((10..250).contains(&p.x) && (16..32).contains(&p.y), "plan {p:?} out of range");
            assert!(plans[i + 1..].iter().all(|q| q.x != p.x), "plan {p:?} repeats");
        }
    }
}
