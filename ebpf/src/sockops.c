/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockops, attached once at the capture cgroup; acts only on sockets connect4/6 captured.
 *
 * One job: when a captured socket sends its SYN (BPF_SOCK_OPS_TCP_CONNECT_CB, always invoked,
 * no callback flags needed), its local address and port are known; copy its original
 * destination from orig_dst_by_cookie into orig_dst keyed by that address, which is what
 * ztunnel sees as the peer of the connection it accepts on 15001. The cookie entry stays:
 * getpeername needs it for the socket's lifetime. An IPv4-mapped local address (an AF_INET6
 * socket on an IPv4 connection) is keyed as the IPv4 address ztunnel sees.
 */
#include "common.h"

SEC("sockops")
int ztunnel_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;

	__u64 cookie = bpf_get_socket_cookie(skops);
	struct orig_dst *found = bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie);
	if (!found)
		return 1;
	struct orig_dst orig = *found;

	struct peer_key key = {};
	__u32 family = skops->family;
	if (family == ZT_AF_INET) {
		__u32 ip = skops->local_ip4;
		__builtin_memcpy(key.ip, &ip, sizeof(ip));
	} else if (family == ZT_AF_INET6) {
		__u32 ip[4] = {
			CTX_U32(skops->local_ip6[0]),
			CTX_U32(skops->local_ip6[1]),
			CTX_U32(skops->local_ip6[2]),
			CTX_U32(skops->local_ip6[3]),
		};
		if (is_v4_mapped6(ip)) {
			/* An IPv4 connection of an AF_INET6 socket: ztunnel accepts it on its IPv4
			 * listener and sees a plain IPv4 peer, so key it as IPv4. */
			family = ZT_AF_INET;
			__builtin_memcpy(key.ip, &ip[3], sizeof(ip[3]));
		} else {
			__builtin_memcpy(key.ip, ip, sizeof(ip));
		}
	} else {
		return 1;
	}
	key.port = (__u16)skops->local_port;
	key.family = (__u16)family;

	bpf_map_update_elem(&orig_dst, &key, &orig, BPF_ANY);
	return 1;
}

/*
 * host_sockops, attached to the cgroup of the node's kubelet (configurable; never to a pod's).
 *
 * One job: when a socket of the host network namespace (host_netns) sends a SYN, record the
 * connection's four-tuple in host_probes, so that if it is addressed to an enrolled pod, that
 * pod's sk_lookup lets it reach the application directly (kubelet probes under STRICT mTLS).
 * Once the handshake is done (BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, always invoked) the entry is
 * removed again: sk_lookup only ever sees a connection's SYN.
 * Sockets of other namespaces (pods that share the cgroup tree) and ztunnel's own marked
 * sockets are ignored. A dual-stack socket connecting to an IPv4-mapped address is recorded as
 * IPv4, which is how the pod sees its SYN.
 */
SEC("sockops")
int ztunnel_host_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	__u32 zero = 0;
	__u64 *host = bpf_map_lookup_elem(&host_netns, &zero);
	if (!host || *host == 0 || bpf_get_netns_cookie(skops) != *host)
		return 1;
	struct bpf_sock *sk = skops->sk;
	if (!sk || is_ztunnel_socket(sk->mark))
		return 1;

	struct conn_key key = {};
	__u32 family = skops->family;
	if (family == ZT_AF_INET) {
		__u32 src = skops->local_ip4;
		__u32 dst = skops->remote_ip4;
		__builtin_memcpy(key.src, &src, sizeof(src));
		__builtin_memcpy(key.dst, &dst, sizeof(dst));
	} else if (family == ZT_AF_INET6) {
		__u32 src[4] = {
			CTX_U32(skops->local_ip6[0]),
			CTX_U32(skops->local_ip6[1]),
			CTX_U32(skops->local_ip6[2]),
			CTX_U32(skops->local_ip6[3]),
		};
		__u32 dst[4] = {
			CTX_U32(skops->remote_ip6[0]),
			CTX_U32(skops->remote_ip6[1]),
			CTX_U32(skops->remote_ip6[2]),
			CTX_U32(skops->remote_ip6[3]),
		};
		if (is_v4_mapped6(dst)) {
			family = ZT_AF_INET;
			__builtin_memcpy(key.src, &src[3], sizeof(src[3]));
			__builtin_memcpy(key.dst, &dst[3], sizeof(dst[3]));
		} else {
			__builtin_memcpy(key.src, src, sizeof(src));
			__builtin_memcpy(key.dst, dst, sizeof(dst));
		}
	} else {
		return 1;
	}
	key.src_port = (__u16)skops->local_port;
	/* remote_port holds the network-order port in its upper 16 bits. */
	key.dst_port = (__u16)bpf_ntohl(skops->remote_port);
	key.family = family;

	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		bpf_map_delete_elem(&host_probes, &key);
		return 1;
	}
	__u8 present = 1;
	bpf_map_update_elem(&host_probes, &key, &present, BPF_ANY);
	return 1;
}
