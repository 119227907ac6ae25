/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel_maps.h: the contract between the eBPF programs and ztunnel.
 *
 * Every map's name, type, key and value layout and the byte order of every field are defined
 * here and nowhere else. ztunnel mirrors the structs in `ztunnel/src/capture/maps.rs`
 * (#[repr(C)]); a unit test there compares the Rust sizes and field offsets with the BTF that
 * clang emits for these structs into the committed `ebpf/ztunnel.bpf.o`. Change a layout here,
 * rebuild with `cargo xtask ebpf`, and that test tells you what to change on the Rust side.
 *
 * Conventions:
 *  - "network order" = big endian, as on the wire and in `struct sockaddr_in`;
 *    "host order" = the CPU's order (little endian on x86_64 and arm64).
 *  - IP addresses are always 16 bytes (`ip[16]`); an IPv4 address occupies the first 4 bytes
 *    in network order and the other 12 bytes are zero. `family` says which it is.
 *  - Every struct is packed by construction (no implicit padding): hash keys are compared
 *    byte for byte, so a hole with garbage in it would make lookups miss.
 *
 * The structs are plain C and can be included by host code; the map definitions below are
 * only compiled for the BPF target.
 */
#ifndef ZTUNNEL_MAPS_H
#define ZTUNNEL_MAPS_H

#include <linux/types.h>

/* The default SO_MARK of ztunnel's sockets (`--socket-mark`). The programs do not use this
 * constant: they read the configured mark from the `ztunnel_config` map (ztunnel_mark() in
 * src/common.h), so the flag and the programs always agree. */
#define ZTUNNEL_MARK 0x539

/* The SO_MARK of ztunnel's transparent dials to a pod's application (from the client's own
 * address); the pod's reply routing sends answers to this mark back to ztunnel. Such sockets
 * are ztunnel's too: the programs leave them alone like those with the configured mark. */
#define ZTUNNEL_REPLY_MARK 0x111

/* ztunnel's ports inside every pod's network namespace (host order). */
#define ZTUNNEL_OUTBOUND_PORT 15001 /* captured outbound connections are redirected here */
#define ZTUNNEL_INBOUND_PORT 15006  /* captured inbound plaintext, via sk_lookup */
#define ZTUNNEL_HBONE_PORT 15008    /* inbound HBONE (mTLS + HTTP/2 CONNECT) */

/* ztunnel dials pod applications from this address (127.0.0.6); sk_lookup lets loopback
 * sources through, so these connections reach the application instead of port 15006. */
#define ZTUNNEL_INBOUND_SOURCE_V4 0x7f000006 /* host order */

/* Address families as stored in `family` fields (Linux values). */
#define ZT_AF_INET 2
#define ZT_AF_INET6 10

/* pod_config.flags */
#define POD_READY 1u  /* ztunnel's listeners for the pod exist; without it connects are refused */
#define POD_HAS_V4 2u /* pod_config.ip4 is valid */
#define POD_HAS_V6 4u /* pod_config.ip6 is valid */

/*
 * Map `pod_config`: BPF_MAP_TYPE_HASH, max 16384 entries.
 *   key:   __u64, the pod's network-namespace cookie (host order), as returned by
 *          getsockopt(SO_NETNS_COOKIE) on any socket in that netns and by
 *          bpf_get_netns_cookie() in the programs.
 *   value: struct pod_config.
 * Written by ztunnel on enroll/unenroll and when readiness changes; read by connect4/6.
 */
struct pod_config {
	__u32 ip4;     /* offset 0: the pod's IPv4 address, network order (valid with POD_HAS_V4) */
	__u8 ip6[16];  /* offset 4: the pod's IPv6 address, network order (valid with POD_HAS_V6) */
	__u32 flags;   /* offset 20: POD_* bits, host order */
};                     /* size 24, align 4 */

/*
 * An original destination, as the application asked for it.
 *   Value of `orig_dst_by_cookie` and of `orig_dst`.
 */
struct orig_dst {
	__u8 ip[16];   /* offset 0: destination address, network order (IPv4: first 4 bytes) */
	__u16 port;    /* offset 16: destination port, NETWORK order */
	__u16 family;  /* offset 18: ZT_AF_INET or ZT_AF_INET6, host order */
};                     /* size 20, align 2 */

/*
 * Map `orig_dst_by_cookie`: BPF_MAP_TYPE_LRU_HASH, max 65536 entries.
 *   key:   __u64, the client socket's cookie (host order; bpf_get_socket_cookie(),
 *          getsockopt(SO_COOKIE)).
 *   value: struct orig_dst.
 * Written by connect4/6 when they rewrite a connect(); read by sockops (copied to `orig_dst`)
 * and by getpeername4/6 for the life of the socket. LRU: entries of closed sockets age out.
 *
 * Map `orig_dst`: BPF_MAP_TYPE_LRU_HASH, max 65536 entries.
 *   key:   struct peer_key, the CLIENT socket's local address = what ztunnel sees as the peer
 *          address of the connection it accepted on port 15001.
 *   value: struct orig_dst.
 * Written by sockops before the SYN leaves; ztunnel reads it after accept() and deletes it.
 */
struct peer_key {
	__u8 ip[16];   /* offset 0: client address, network order (IPv4: first 4 bytes) */
	__u16 port;    /* offset 16: client port, HOST order (as bpf_sock_ops.local_port) */
	__u16 family;  /* offset 18: ZT_AF_INET or ZT_AF_INET6, host order */
};                     /* size 20, align 2 */

/*
 * Map `inbound_sockets`: BPF_MAP_TYPE_SOCKHASH, max 16384 entries.
 *   key:   struct ip_key, the pod's IP address.
 *   value: __u32 socket (userspace inserts a socket fd; lookups return the socket). aya needs
 *          4-byte values for SOCKMAP/SOCKHASH.
 * ztunnel inserts its listening socket on <pod IP>:15006 (one per address family); the kernel
 * removes the entry when that socket closes, so a missing listener fails closed (SK_DROP).
 */
struct ip_key {
	__u8 ip[16];   /* offset 0: address, network order (IPv4: first 4 bytes) */
	__u32 family;  /* offset 16: ZT_AF_INET or ZT_AF_INET6, host order */
};                     /* size 20, align 4 */

/*
 * Map `ztunnel_config`: BPF_MAP_TYPE_ARRAY, 1 entry.
 *   key:   __u32 0.
 *   value: struct ztunnel_config.
 * Written by ztunnel every time it loads the programs, before any pod is attached or
 * re-adopted. Because the map is pinned and shared, programs that stayed attached across a
 * restart (pinned links) read the new values too.
 */
struct ztunnel_config {
	__u32 socket_mark; /* offset 0: SO_MARK of ztunnel's sockets, host order; 0 = none */
};                         /* size 4, align 4 */

/*
 * Per-pod capture exclusions (Istio's `traffic.sidecar.istio.io/excludeOutboundPorts`,
 * `excludeOutboundIPRanges`, `excludeInboundPorts` and `ambient.istio.io/bypass-inbound-capture`).
 * Values are __u8, ignored (write 1).
 *
 * Map `pod_excluded_ports`: BPF_MAP_TYPE_HASH, max 65536 entries.
 *   key:   struct pod_port_key. Outbound connects of the pod in netns `netns` to `port` (any
 *          destination address) are not captured.
 */
struct pod_port_key {
	__u64 netns;   /* offset 0: the pod's netns cookie, host order */
	__u16 port;    /* offset 8: destination port, HOST order */
	__u16 pad[3];  /* offset 10: zero */
};                     /* size 16, align 8 */

/*
 * Map `pod_excluded_cidrs4`: BPF_MAP_TYPE_LPM_TRIE (BPF_F_NO_PREALLOC), max 65536 entries.
 *   key:   struct pod_cidr4_key; prefixlen = 64 + the network's prefix length, so the netns
 *          cookie always matches exactly. Look-ups use 96.
 * Outbound IPv4 connects of that pod to these networks are not captured (IPv4-mapped IPv6
 * destinations are looked up here too).
 */
struct pod_cidr4_key {
	__u32 prefixlen; /* offset 0: 64 + prefix bits, host order */
	__u8 netns[8];   /* offset 4: the pod's netns cookie, host byte order */
	__u8 addr[4];    /* offset 12: network address, network order */
};                       /* size 16, align 4 */

/*
 * Map `pod_excluded_cidrs6`: BPF_MAP_TYPE_LPM_TRIE (BPF_F_NO_PREALLOC), max 65536 entries.
 *   key:   struct pod_cidr6_key; prefixlen = 64 + prefix bits. Look-ups use 192.
 */
struct pod_cidr6_key {
	__u32 prefixlen; /* offset 0: 64 + prefix bits, host order */
	__u8 netns[8];   /* offset 4: the pod's netns cookie, host byte order */
	__u8 addr[16];   /* offset 12: network address, network order */
};                       /* size 28, align 4 */

/*
 * Map `pod_inbound_exclusions`: BPF_MAP_TYPE_HASH, max 65536 entries.
 *   key:   struct ip_port_key: a pod address and a local port (host order); port 0 means every
 *          port (bypass-inbound-capture). Inbound TCP to that address and port is not sent to
 *          15006 by sk_lookup: it reaches the application directly. Keyed by the pod's address
 *          because sk_lookup has no netns cookie helper.
 */
struct ip_port_key {
	__u8 ip[16];   /* offset 0: the pod's address, network order (IPv4: first 4 bytes) */
	__u16 port;    /* offset 16: local port, HOST order; 0 = every port */
	__u16 family;  /* offset 18: ZT_AF_INET or ZT_AF_INET6, host order */
};                     /* size 20, align 2 */

/*
 * Map `host_netns`: BPF_MAP_TYPE_ARRAY, 1 entry.
 *   key:   __u32, always 0.
 *   value: __u64, the cookie of the node's (host's) network namespace, host order; 0 = unset,
 *          and then host_sockops records nothing.
 * Written by ztunnel at start (the cookie of its own namespace; ztunnel runs on the host
 * network); read by host_sockops.
 *
 * Map `host_probes`: BPF_MAP_TYPE_LRU_HASH, max 16384 entries.
 *   key:   struct conn_key, one TCP connection as its SYN shows it.
 *   value: __u8, ignored (1).
 * Written by host_sockops when a socket of the host network namespace (in the cgroup it is
 * attached to: the kubelet's, see README) sends a SYN; read by sk_lookup, which lets exactly
 * that connection reach the pod's application without ztunnel. host_sockops removes the entry
 * when the handshake completes; entries of handshakes that failed age out (LRU).
 *
 * Map `inbound_dials`: BPF_MAP_TYPE_LRU_HASH, max 65536 entries.
 *   key:   struct conn_key, one of ztunnel's own connections to a pod's application, made
 *          from the client's address with a transparent socket.
 *   value: __u8, ignored (1).
 * Written by ztunnel after binding such a socket and before its connect(); removed by ztunnel
 * once the connect is done (so only the handshake of that one connection is let through; the
 * kernel sends ztunnel's SYN through the loopback device but reports the pod's interface as its
 * ingress, so sk_lookup cannot tell it apart otherwise). Read by sk_lookup.
 */
struct conn_key {
	__u8 src[16];    /* offset 0: source address (the connecting socket's), network order */
	__u8 dst[16];    /* offset 16: destination address (the pod's), network order */
	__u16 src_port;  /* offset 32: source port, HOST order */
	__u16 dst_port;  /* offset 34: destination port, HOST order */
	__u32 family;    /* offset 36: ZT_AF_INET or ZT_AF_INET6, host order */
};                       /* size 40, align 4 */

#if defined(__bpf__)
#include <bpf/bpf_helpers.h>

/*
 * The map definitions. Every map is pinned by name: aya pins it as <pin dir>/<map name>
 * (ztunnel uses /sys/fs/bpf/ztunnel/maps) and re-uses the pinned map when it loads the
 * object again, so capture state survives a ztunnel restart.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pod_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} orig_dst_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16384);
	__type(key, struct ip_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} inbound_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ztunnel_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ztunnel_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pod_port_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_excluded_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pod_cidr4_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_excluded_cidrs4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pod_cidr6_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_excluded_cidrs6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ip_port_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_inbound_exclusions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} host_probes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} inbound_dials SEC(".maps");

#endif /* __bpf__ */

#endif /* ZTUNNEL_MAPS_H */
