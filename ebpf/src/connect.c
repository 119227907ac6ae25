/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup/connect4 and cgroup/connect6, attached to each enrolled pod's cgroup.
 *
 * One job: send the pod's outbound TCP connect() to ztunnel's listener on <pod IP>:15001 and
 * remember, by socket cookie, where the application wanted to go (orig_dst_by_cookie).
 *
 * Left alone (the connect proceeds unchanged): non-TCP sockets, sockets marked ZTUNNEL_MARK,
 * loopback destinations (and IPv4-mapped IPv6 ones), excluded ports and CIDRs, sockets whose
 * network namespace has no pod_config (not enrolled) or whose pod lacks an address of that
 * family, and connects to the pod's own IP at ztunnel's ports.
 * Refused (connect fails with EPERM): everything else while the pod is not POD_READY, and a
 * connect whose original destination cannot be recorded. Capture fails closed.
 */
#include "common.h"

SEC("cgroup/connect4")
int ztunnel_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != ZT_SOCK_STREAM || ctx->protocol != ZT_IPPROTO_TCP)
		return ZT_ALLOW;
	if (ctx->sk->mark == ZTUNNEL_MARK)
		return ZT_ALLOW;

	__u32 dst_ip = ctx->user_ip4;
	__u16 dst_port = sock_addr_port(ctx);
	if (is_loopback4(dst_ip))
		return ZT_ALLOW;
	if (bpf_map_lookup_elem(&excluded_ports, &dst_port))
		return ZT_ALLOW;
	struct cidr4_key cidr = { .prefixlen = 32, .addr = dst_ip };
	if (bpf_map_lookup_elem(&excluded_cidrs4, &cidr))
		return ZT_ALLOW;

	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_config *pod = bpf_map_lookup_elem(&pod_config, &netns);
	if (!pod || !(pod->flags & POD_HAS_V4))
		return ZT_ALLOW;
	__u32 pod_ip = pod->ip4;
	if (dst_ip == pod_ip && is_ztunnel_port(dst_port))
		return ZT_ALLOW;
	if (!(pod->flags & POD_READY))
		return ZT_REFUSE;

	struct orig_dst orig = {
		.port = bpf_htons(dst_port),
		.family = ZT_AF_INET,
	};
	__builtin_memcpy(orig.ip, &dst_ip, sizeof(dst_ip));
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_dst_by_cookie, &cookie, &orig, BPF_ANY))
		return ZT_REFUSE;

	ctx->user_ip4 = pod_ip;
	ctx->user_port = bpf_htons(ZTUNNEL_OUTBOUND_PORT);
	return ZT_ALLOW;
}

SEC("cgroup/connect6")
int ztunnel_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != ZT_SOCK_STREAM || ctx->protocol != ZT_IPPROTO_TCP)
		return ZT_ALLOW;
	if (ctx->sk->mark == ZTUNNEL_MARK)
		return ZT_ALLOW;

	__u32 dst_ip[4] = {
		CTX_U32(ctx->user_ip6[0]),
		CTX_U32(ctx->user_ip6[1]),
		CTX_U32(ctx->user_ip6[2]),
		CTX_U32(ctx->user_ip6[3]),
	};
	__u16 dst_port = sock_addr_port(ctx);
	if (is_loopback6(dst_ip) || is_v4_mapped6(dst_ip))
		return ZT_ALLOW;
	if (bpf_map_lookup_elem(&excluded_ports, &dst_port))
		return ZT_ALLOW;
	struct cidr6_key cidr = { .prefixlen = 128 };
	__builtin_memcpy(cidr.addr, dst_ip, sizeof(dst_ip));
	if (bpf_map_lookup_elem(&excluded_cidrs6, &cidr))
		return ZT_ALLOW;

	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_config *pod = bpf_map_lookup_elem(&pod_config, &netns);
	if (!pod || !(pod->flags & POD_HAS_V6))
		return ZT_ALLOW;
	__u32 pod_ip[4];
	__builtin_memcpy(pod_ip, pod->ip6, sizeof(pod_ip));
	if (dst_ip[0] == pod_ip[0] && dst_ip[1] == pod_ip[1] && dst_ip[2] == pod_ip[2] &&
	    dst_ip[3] == pod_ip[3] && is_ztunnel_port(dst_port))
		return ZT_ALLOW;
	if (!(pod->flags & POD_READY))
		return ZT_REFUSE;

	struct orig_dst orig = {
		.port = bpf_htons(dst_port),
		.family = ZT_AF_INET6,
	};
	__builtin_memcpy(orig.ip, dst_ip, sizeof(dst_ip));
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_dst_by_cookie, &cookie, &orig, BPF_ANY))
		return ZT_REFUSE;

	ctx->user_ip6[0] = pod_ip[0];
	ctx->user_ip6[1] = pod_ip[1];
	ctx->user_ip6[2] = pod_ip[2];
	ctx->user_ip6[3] = pod_ip[3];
	ctx->user_port = bpf_htons(ZTUNNEL_OUTBOUND_PORT);
	return ZT_ALLOW;
}
