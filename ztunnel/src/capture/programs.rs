//! The compiled eBPF object and the names in it: programs (the C function names), maps, and
//! where each program attaches. Names only; loading and attaching belong to the capture
//! loader, and the layouts of keys and values to [`super::maps`].
//!
//! The object is `ebpf/ztunnel.bpf.o`, committed and embedded here so that building ztunnel
//! needs no clang; `cargo xtask ebpf --check` fails when it is stale (see `ebpf/README.md`).

/// `ebpf/ztunnel.bpf.o`, 8-byte aligned as aya's ELF parser requires.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../../../ebpf/ztunnel.bpf.o");

/// `cgroup/connect4`: redirects a pod's outbound IPv4 TCP connects to `<pod IP>:15001`.
pub const CONNECT4: &str = "ztunnel_connect4";
/// `cgroup/connect6`: the same for IPv6.
pub const CONNECT6: &str = "ztunnel_connect6";
/// `sockops`: records the original destination by the client's address before the SYN.
pub const SOCKOPS: &str = "ztunnel_sockops";
/// `sockops` on the kubelet's cgroup: records the host's connections (probes) for `sk_lookup`.
pub const HOST_SOCKOPS: &str = "ztunnel_host_sockops";
/// `cgroup/getpeername4`: the application sees its original IPv4 peer.
pub const GETPEERNAME4: &str = "ztunnel_getpeername4";
/// `cgroup/getpeername6`: the same for IPv6.
pub const GETPEERNAME6: &str = "ztunnel_getpeername6";
/// `cgroup/bind4`: pod processes cannot bind 15001/15006/15008.
pub const BIND4: &str = "ztunnel_bind4";
/// `cgroup/bind6`: the same for IPv6.
pub const BIND6: &str = "ztunnel_bind6";
/// `sk_lookup`: inbound TCP goes to the pod's 15006 listener, dropped when it is missing.
pub const SK_LOOKUP: &str = "ztunnel_sk_lookup";

/// Programs attached to each enrolled pod's cgroup (v2), in attach order.
pub const CGROUP_PROGRAMS: [&str; 7] = [CONNECT4, CONNECT6, SOCKOPS, GETPEERNAME4, GETPEERNAME6, BIND4, BIND6];
/// Programs attached to each enrolled pod's network namespace.
pub const NETNS_PROGRAMS: [&str; 1] = [SK_LOOKUP];

/// Programs attached to the kubelet's cgroup on the host (see `--kubelet-cgroup`).
pub const HOST_PROGRAMS: [&str; 1] = [HOST_SOCKOPS];

/// `HASH` netns cookie -> [`super::maps::PodConfig`].
pub const MAP_POD_CONFIG: &str = "pod_config";
/// `LRU_HASH` socket cookie -> [`super::maps::OrigDst`].
pub const MAP_ORIG_DST_BY_COOKIE: &str = "orig_dst_by_cookie";
/// `LRU_HASH` [`super::maps::PeerKey`] -> [`super::maps::OrigDst`].
pub const MAP_ORIG_DST: &str = "orig_dst";
/// `SOCKHASH` [`super::maps::IpKey`] -> the pod's 15006 listening socket.
pub const MAP_INBOUND_SOCKETS: &str = "inbound_sockets";
/// `HASH` port (host order) -> [`super::maps::Present`].
pub const MAP_EXCLUDED_PORTS: &str = "excluded_ports";
/// `LPM_TRIE` [`super::maps::Cidr4Key`] -> [`super::maps::Present`].
pub const MAP_EXCLUDED_CIDRS4: &str = "excluded_cidrs4";
/// `LPM_TRIE` [`super::maps::Cidr6Key`] -> [`super::maps::Present`].
pub const MAP_EXCLUDED_CIDRS6: &str = "excluded_cidrs6";

/// `ARRAY` of one: the host network namespace's cookie (`u64`), read by `host_sockops`.
pub const MAP_HOST_NETNS: &str = "host_netns";
/// `LRU_HASH` of the host's connections (C `struct conn_key`) that bypass inbound capture.
pub const MAP_HOST_PROBES: &str = "host_probes";

/// `LRU_HASH` of ztunnel's own transparent dials to apps (C `struct conn_key`), during their
/// handshake only.
pub const MAP_INBOUND_DIALS: &str = "inbound_dials";

/// Every map in the object. All are pinned by name (`LIBBPF_PIN_BY_NAME`): aya pins each as
/// `<default_map_pin_directory>/<name>` and re-uses an existing pin on the next load.
pub const MAPS: [&str; 10] = [
    MAP_POD_CONFIG,
    MAP_ORIG_DST_BY_COOKIE,
    MAP_ORIG_DST,
    MAP_INBOUND_SOCKETS,
    MAP_EXCLUDED_PORTS,
    MAP_EXCLUDED_CIDRS4,
    MAP_EXCLUDED_CIDRS6,
    MAP_HOST_NETNS,
    MAP_HOST_PROBES,
    MAP_INBOUND_DIALS,
];

#[cfg(test)]
mod tests;
