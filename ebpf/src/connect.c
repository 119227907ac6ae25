/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup/connect4 and cgroup/connect6, attached once at the capture cgroup (a parent of every
 * pod's); a pod is selected by its network-namespace cookie (pod_config), whatever its cgroup.
 *
 * One job: send the pod's outbound TCP connect() to ztunnel's listener on <pod IP>:15001 and
 * remember, by socket cookie, where the application wanted to go (orig_dst_by_cookie).
 *
 * An AF_INET6 socket connecting to an IPv4-mapped address (::ffff:a.b.c.d, what dual-stack
 * runtimes such as Java do for IPv4 peers) is an IPv4 connection: it is captured like one
 * (IPv4 exclusions, original destination recorded as IPv4) and redirected to the pod's IPv4
 * 15001 listener in mapped form (::ffff:<pod IPv4>).
 *
 * Left alone (the connect proceeds unchanged): non-TCP sockets, sockets carrying ztunnel's
 * mark (ztunnel_config) or the reply mark, loopback destinations (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104), the
 * pod's excluded ports and CIDRs, sockets whose network namespace has no pod_config (not
 * enrolled) or whose pod lacks an address of the connection's family, and connects to the
 * pod's own IP at ztunnel's ports.
 * Refused (connect fails with EPERM): everything else while the pod is not POD_READY, and a
 * connect whose original destination cannot be recorded. Capture fails closed.
 */
#include "common.h"
#include "exclusions.h"

/*
 * The IPv4 decision shared by connect4 and connect6 with a mapped destination. Returns the
 * pod's IPv4 address (network order) to redirect to, or 0 with *verdict set when the connect
 * is left alone (ZT_ALLOW) or refused (ZT_REFUSE).
 */
static __always_inline __u32 capture_ip4(void *ctx, __u32 dst_ip, __u16 dst_port, int *verdict)
{
	*verdict = ZT_ALLOW;
	if (is_loopback4(dst_ip))
		return 0;
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct pod_config *pod = bpf_map_lookup_elem(&pod_config, &netns);
	if (!pod || !(pod->flags & POD_HAS_V4))
		return 0;
	__u32 pod_ip = pod->ip4;
	if (dst_ip == pod_ip && is_ztunnel_port(dst_port))
		return 0;
	if (outbound_port_excluded(netns, dst_port) || outbound_ip4_excluded(netns, dst_ip))
		return 0;
	if (!(pod->flags & POD_READY)) {
		*verdict = ZT_REFUSE;
		return 0;
	}

	struct orig_dst orig = {
		.port = bpf_htons(dst_port),
		.family = ZT_AF_INET,
	};
	__builtin_memcpy(orig.ip, &dst_ip, sizeof(dst_ip));
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_dst_by_cookie, &cookie, &orig, BPF_ANY)) {
		*verdict = ZT_REFUSE;
		return 0;
	}
	return pod_ip;
}

SEC("cgroup/connect4")
int ztunnel_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != ZT_SOCK_STREAM || ctx->protocol != ZT_IPPROTO_TCP)
		return ZT_ALLOW;
	if (is_ztunnel_socket(ctx->sk->mark))
		return ZT_ALLOW;

	int verdict;
	__u32 pod_ip = capture_ip4(ctx, ctx->user_ip4, sock_addr_port(ctx), &verdict);
	if (!pod_ip)
		return verdict;
	ctx->user_ip4 = pod_ip;
	ctx->user_port = bpf_htons(ZTUNNEL_OUTBOUND_PORT);
	return ZT_ALLOW;
}

/* An IPv4 connection made through an AF_INET6 socket (::ffff:a.b.c.d). */
static __always_inline int connect6_mapped(struct bpf_sock_addr *ctx, __u32 dst_ip, __u16 dst_port)
{
	int verdict;
	__u32 pod_ip = capture_ip4(ctx, dst_ip, dst_port, &verdict);
	if (!pod_ip)
		return verdict;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = bpf_htonl(0xffff);
	ctx->user_ip6[3] = pod_ip;
	ctx->user_port = bpf_htons(ZTUNNEL_OUTBOUND_PORT);
	return ZT_ALLOW;
}

SEC("cgroup/connect6")
int ztunnel_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != ZT_SOCK_STREAM || ctx->protocol != ZT_IPPROTO_TCP)
		return ZT_ALLOW;
	if (is_ztunnel_socket(ctx->sk->mark))
		return ZT_ALLOW;

	__u32 dst_ip[4] = {
		CTX_U32(ctx->user_ip6[0]),
		CTX_U32(ctx->user_ip6[1]),
		CTX_U32(ctx->user_ip6[2]),
		CTX_U32(ctx->user_ip6[3]),
	};
	__u16 dst_port = sock_addr_port(ctx);
	if (is_v4_mapped6(dst_ip))
		return connect6_mapped(ctx, dst_ip[3], dst_port);
	if (is_loopback6(dst_ip))
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
	if (outbound_port_excluded(netns, dst_port) || outbound_ip6_excluded(netns, dst_ip))
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
