//! The compiled eBPF object and the names in it: programs (the C function names), maps, and
//! where each program attaches. Names only; loading and attaching belong to the capture
//! loader, and the layouts of keys and values to [`super::maps`].
//!
//! The object is `ebpf/ztunnel.bpf.o`, committed and embedded here so that building ztunnel
//! needs no clang; `cargo xtask ebpf --check` fails when it is stale (see `ebpf/README.md`).

/// `ebpf/ztunnel.bpf.o`, 8-byte aligned as aya's ELF parser requires.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/ztunnel.bpf.o");

/// `cgroup/connect4`: redirects a pod's outbound IPv4 TCP connects to `<pod IP>:15001`.
pub(crate) const CONNECT4: &str = "ztunnel_connect4";
/// `cgroup/connect6`: the same for IPv6.
pub(crate) const CONNECT6: &str = "ztunnel_connect6";
/// `sockops`: records the original destination by the client's address before the SYN.
pub(crate) const SOCKOPS: &str = "ztunnel_sockops";
/// `sockops` on the kubelet's cgroup: records the host's connections (probes) for `sk_lookup`.
pub(crate) const HOST_SOCKOPS: &str = "ztunnel_host_sockops";
/// `cgroup/getpeername4`: the application sees its original IPv4 peer.
pub(crate) const GETPEERNAME4: &str = "ztunnel_getpeername4";
/// `cgroup/getpeername6`: the same for IPv6.
pub(crate) const GETPEERNAME6: &str = "ztunnel_getpeername6";
/// `cgroup/bind4`: in an enrolled namespace, unmarked sockets cannot bind 15001/15006/15008.
pub(crate) const BIND4: &str = "ztunnel_bind4";
/// `cgroup/bind6`: the same for IPv6.
pub(crate) const BIND6: &str = "ztunnel_bind6";
/// `sk_lookup`: inbound TCP goes to the pod's 15006 listener, dropped when it is missing.
pub(crate) const SK_LOOKUP: &str = "ztunnel_sk_lookup";

#[cfg(test)]
/// Programs attached once at the capture cgroup (v2), a parent of every pod's.
pub(crate) const CGROUP_PROGRAMS: [&str; 7] = [CONNECT4, CONNECT6, SOCKOPS, GETPEERNAME4, GETPEERNAME6, BIND4, BIND6];
#[cfg(test)]
/// Programs attached to each enrolled pod's network namespace.
pub(crate) const NETNS_PROGRAMS: [&str; 1] = [SK_LOOKUP];

#[cfg(test)]
/// Programs attached to the kubelet's cgroup on the host (see `--kubelet-cgroup`).
pub(crate) const HOST_PROGRAMS: [&str; 1] = [HOST_SOCKOPS];

/// `HASH` netns cookie -> [`super::maps::PodConfig`].
pub(crate) const MAP_POD_CONFIG: &str = "pod_config";
#[cfg(test)]
/// `LRU_HASH` socket cookie -> [`super::maps::OrigDst`].
pub(crate) const MAP_ORIG_DST_BY_COOKIE: &str = "orig_dst_by_cookie";
/// `LRU_HASH` [`super::maps::PeerKey`] -> [`super::maps::OrigDst`].
pub(crate) const MAP_ORIG_DST: &str = "orig_dst";
/// `SOCKHASH` [`super::maps::IpKey`] -> the pod's 15006 listening socket.
pub(crate) const MAP_INBOUND_SOCKETS: &str = "inbound_sockets";
/// `ARRAY` of one [`super::maps::ZtunnelConfig`]: the socket mark, written at every load.
pub(crate) const MAP_ZTUNNEL_CONFIG: &str = "ztunnel_config";
/// `HASH` [`super::maps::PodPortKey`] -> [`super::maps::Present`]: a pod's excluded outbound ports.
pub(crate) const MAP_POD_EXCLUDED_PORTS: &str = "pod_excluded_ports";
/// `LPM_TRIE` [`super::maps::PodCidr4Key`] -> [`super::maps::Present`].
pub(crate) const MAP_POD_EXCLUDED_CIDRS4: &str = "pod_excluded_cidrs4";
/// `LPM_TRIE` [`super::maps::PodCidr6Key`] -> [`super::maps::Present`].
pub(crate) const MAP_POD_EXCLUDED_CIDRS6: &str = "pod_excluded_cidrs6";
/// `HASH` [`super::maps::IpPortKey`] -> [`super::maps::Present`]: inbound that bypasses 15006.
pub(crate) const MAP_POD_INBOUND_EXCLUSIONS: &str = "pod_inbound_exclusions";

/// `ARRAY` of one: the host network namespace's cookie (`u64`), read by `host_sockops`.
pub(crate) const MAP_HOST_NETNS: &str = "host_netns";
#[cfg(test)]
/// `LRU_HASH` of the host's connections (C `struct conn_key`) that bypass inbound capture.
pub(crate) const MAP_HOST_PROBES: &str = "host_probes";

/// `LRU_HASH` of ztunnel's own transparent dials to apps (C `struct conn_key`), during their
/// handshake only.
pub(crate) const MAP_INBOUND_DIALS: &str = "inbound_dials";

#[cfg(test)]
/// Every map in the object. All are pinned by name (`LIBBPF_PIN_BY_NAME`): aya pins each as
/// `<default_map_pin_directory>/<name>` and re-uses an existing pin on the next load.
pub(crate) const MAPS: [&str; 12] = [
    MAP_POD_CONFIG,
    MAP_ORIG_DST_BY_COOKIE,
    MAP_ORIG_DST,
    MAP_INBOUND_SOCKETS,
    MAP_ZTUNNEL_CONFIG,
    MAP_POD_EXCLUDED_PORTS,
    MAP_POD_EXCLUDED_CIDRS4,
    MAP_POD_EXCLUDED_CIDRS6,
    MAP_POD_INBOUND_EXCLUSIONS,
    MAP_HOST_NETNS,
    MAP_HOST_PROBES,
    MAP_INBOUND_DIALS,
];

#[cfg(test)]
mod tests;
