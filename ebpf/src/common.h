/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.h: small pure helpers shared by the programs. No maps, no programs.
 */
#ifndef ZTUNNEL_COMMON_H
#define ZTUNNEL_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ztunnel_maps.h"

/* Linux UAPI values; spelled out so that no libc or arch header is needed. */
#define ZT_SOCK_STREAM 1
#define ZT_IPPROTO_TCP 6

/* cgroup/sock_addr programs: 1 lets the syscall proceed, 0 fails it with EPERM. */
#define ZT_ALLOW 1
#define ZT_REFUSE 0

static __always_inline int is_ztunnel_port(__u16 port)
{
	return port == ZTUNNEL_OUTBOUND_PORT || port == ZTUNNEL_INBOUND_PORT ||
	       port == ZTUNNEL_HBONE_PORT;
}

/* 127.0.0.0/8; ip is in network order. */
static __always_inline int is_loopback4(__u32 ip)
{
	return (bpf_ntohl(ip) >> 24) == 127;
}

/* ::1; words in network order. */
static __always_inline int is_loopback6(const __u32 ip[4])
{
	return ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == bpf_htonl(1);
}

/* ::ffff:0:0/96 (IPv4-mapped); words in network order. */
static __always_inline int is_v4_mapped6(const __u32 ip[4])
{
	return ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
}

/* The SO_MARK of ztunnel's sockets as configured at load (`ztunnel_config`); 0 = none. */
static __always_inline __u32 ztunnel_mark(void)
{
	__u32 zero = 0;
	struct ztunnel_config *config = bpf_map_lookup_elem(&ztunnel_config, &zero);
	return config ? config->socket_mark : 0;
}

/*
 * True for a socket ztunnel opened: it carries the configured mark, or the reply mark of a
 * transparent dial to a pod's application. The programs sit at a parent cgroup of every pod,
 * so ztunnel's own sockets inside a pod's network namespace meet them too; the mark is what
 * tells them apart from the pod's.
 */
static __always_inline int is_ztunnel_socket(__u32 mark)
{
	if (mark == ZTUNNEL_REPLY_MARK)
		return 1;
	__u32 wanted = ztunnel_mark();
	return wanted != 0 && mark == wanted;
}

/*
 * Reads one 32-bit context field as exactly one 4-byte load. Without it clang may merge two
 * neighbouring u32 loads (e.g. local_ip6[0] and [1]) into one 8-byte load, which the verifier
 * rejects for sock_ops and sk_lookup contexts ("invalid bpf_context access").
 */
#define CTX_U32(field) (*(volatile __u32 *)&(field))

/* The port of a bpf_sock_addr context, host order. user_port holds a network-order port in
 * its first two bytes. */
static __always_inline __u16 sock_addr_port(const struct bpf_sock_addr *ctx)
{
	return bpf_ntohs((__u16)ctx->user_port);
}

#endif /* ZTUNNEL_COMMON_H */
