/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup/bind4 and cgroup/bind6, attached once at the capture cgroup (a parent of every pod's).
 *
 * One job: in an enrolled pod's network namespace (one with a pod_config entry), the pod's
 * processes cannot bind ztunnel's ports (15001, 15006, 15008), so an application can neither
 * take over nor shadow ztunnel's listeners. Left alone: every other namespace (the host, pods
 * that are not enrolled) and ztunnel's own sockets, which carry its mark (ztunnel_config).
 */
#include "common.h"

static __always_inline int bind_verdict(struct bpf_sock_addr *ctx)
{
	if (!is_ztunnel_port(sock_addr_port(ctx)))
		return ZT_ALLOW;
	if (is_ztunnel_socket(ctx->sk->mark))
		return ZT_ALLOW;
	__u64 netns = bpf_get_netns_cookie(ctx);
	if (!bpf_map_lookup_elem(&pod_config, &netns))
		return ZT_ALLOW;
	return ZT_REFUSE;
}

SEC("cgroup/bind4")
int ztunnel_bind4(struct bpf_sock_addr *ctx)
{
	return bind_verdict(ctx);
}

SEC("cgroup/bind6")
int ztunnel_bind6(struct bpf_sock_addr *ctx)
{
	return bind_verdict(ctx);
}
