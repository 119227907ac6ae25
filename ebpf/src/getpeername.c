/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup/getpeername4 and cgroup/getpeername6, attached to each enrolled pod's cgroup.
 *
 * One job: a captured socket is really connected to ztunnel on <pod IP>:15001; getpeername()
 * reports the original destination instead, so the application sees the peer it asked for.
 */
#include "common.h"

SEC("cgroup/getpeername4")
int ztunnel_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst *orig = bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie);
	if (!orig || orig->family != ZT_AF_INET)
		return 1;

	__u32 ip;
	__builtin_memcpy(&ip, orig->ip, sizeof(ip));
	ctx->user_ip4 = ip;
	ctx->user_port = orig->port;
	return 1;
}

SEC("cgroup/getpeername6")
int ztunnel_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig_dst *orig = bpf_map_lookup_elem(&orig_dst_by_cookie, &cookie);
	if (!orig || orig->family != ZT_AF_INET6)
		return 1;

	__u32 ip[4];
	__builtin_memcpy(ip, orig->ip, sizeof(ip));
	ctx->user_ip6[0] = ip[0];
	ctx->user_ip6[1] = ip[1];
	ctx->user_ip6[2] = ip[2];
	ctx->user_ip6[3] = ip[3];
	ctx->user_port = orig->port;
	return 1;
}
