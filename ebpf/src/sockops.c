/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sockops, attached to each enrolled pod's cgroup.
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
