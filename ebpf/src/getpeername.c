/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup/getpeername4 and cgroup/getpeername6, attached once at the capture cgroup; they act
 * only on sockets connect4/6 captured.
 *
 * One job: a captured socket is really connected to ztunnel on <pod IP>:15001; getpeername()
 * reports the original destination instead, so the application sees the peer it asked for.
 * An AF_INET6 socket whose original destination is IPv4 (it dialled ::ffff:a.b.c.d, see
 * connect.c) gets the mapped form back, exactly what it dialled.
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
	if (!orig)
		return 1;

	__u32 ip[4];
	if (orig->family == ZT_AF_INET) {
		ip[0] = 0;
		ip[1] = 0;
		ip[2] = bpf_htonl(0xffff);
		__builtin_memcpy(&ip[3], orig->ip, sizeof(ip[3]));
	} else if (orig->family == ZT_AF_INET6) {
		__builtin_memcpy(ip, orig->ip, sizeof(ip));
	} else {
		return 1;
	}
	ctx->user_ip6[0] = ip[0];
	ctx->user_ip6[1] = ip[1];
	ctx->user_ip6[2] = ip[2];
	ctx->user_ip6[3] = ip[3];
	ctx->user_port = orig->port;
	return 1;
}
