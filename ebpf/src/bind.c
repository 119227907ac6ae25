/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup/bind4 and cgroup/bind6, attached to each enrolled pod's cgroup.
 *
 * One job: the pod's processes cannot bind ztunnel's ports (15001, 15006, 15008) in their
 * network namespace, so an application can neither take over nor shadow ztunnel's listeners.
 * ztunnel's own sockets live in ztunnel's cgroup and are not affected.
 */
#include "common.h"

SEC("cgroup/bind4")
int ztunnel_bind4(struct bpf_sock_addr *ctx)
{
	return is_ztunnel_port(sock_addr_port(ctx)) ? ZT_REFUSE : ZT_ALLOW;
}

SEC("cgroup/bind6")
int ztunnel_bind6(struct bpf_sock_addr *ctx)
{
	return is_ztunnel_port(sock_addr_port(ctx)) ? ZT_REFUSE : ZT_ALLOW;
}
