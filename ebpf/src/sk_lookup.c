/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sk_lookup, attached to each enrolled pod's network namespace.
 *
 * One job: hand every new inbound TCP connection to ztunnel's 15006 listener for the address
 * it was sent to (inbound_sockets); getsockname() on the accepted socket still returns the
 * original destination. Passed to the normal lookup: non-TCP, connections to ztunnel's own
 * ports (15001, 15006, 15008), connections from loopback sources (the pod talking to itself,
 * and ztunnel delivering to the application from 127.0.0.6 where it cannot use the client's
 * address), ztunnel's own deliveries from the client's address (inbound_dials, one entry per
 * handshake in progress), and connections the host's kubelet opened (host_probes, recorded by
 * host_sockops). Dropped when there is no 15006 listener for the address: capture fails closed.
 */
#include "common.h"

SEC("sk_lookup")
int ztunnel_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != ZT_IPPROTO_TCP)
		return SK_PASS;
	if (is_ztunnel_port((__u16)ctx->local_port))
		return SK_PASS;

	struct ip_key key = {};
	struct conn_key conn = {};
	__u32 family = ctx->family;
	if (family == ZT_AF_INET) {
		if (is_loopback4(ctx->remote_ip4))
			return SK_PASS;
		__u32 ip = ctx->local_ip4;
		__u32 remote = ctx->remote_ip4;
		__builtin_memcpy(key.ip, &ip, sizeof(ip));
		__builtin_memcpy(conn.dst, &ip, sizeof(ip));
		__builtin_memcpy(conn.src, &remote, sizeof(remote));
	} else if (family == ZT_AF_INET6) {
		__u32 remote[4] = {
			CTX_U32(ctx->remote_ip6[0]),
			CTX_U32(ctx->remote_ip6[1]),
			CTX_U32(ctx->remote_ip6[2]),
			CTX_U32(ctx->remote_ip6[3]),
		};
		if (is_loopback6(remote))
			return SK_PASS;
		__u32 ip[4] = {
			CTX_U32(ctx->local_ip6[0]),
			CTX_U32(ctx->local_ip6[1]),
			CTX_U32(ctx->local_ip6[2]),
			CTX_U32(ctx->local_ip6[3]),
		};
		__builtin_memcpy(key.ip, ip, sizeof(ip));
		__builtin_memcpy(conn.dst, ip, sizeof(ip));
		__builtin_memcpy(conn.src, remote, sizeof(remote));
	} else {
		return SK_PASS;
	}
	key.family = family;

	conn.src_port = bpf_ntohs(ctx->remote_port);
	conn.dst_port = (__u16)ctx->local_port;
	conn.family = family;
	if (bpf_map_lookup_elem(&inbound_dials, &conn) || bpf_map_lookup_elem(&host_probes, &conn))
		return SK_PASS;

	struct bpf_sock *sk = bpf_map_lookup_elem(&inbound_sockets, &key);
	if (!sk)
		return SK_DROP;
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err ? SK_DROP : SK_PASS;
}
