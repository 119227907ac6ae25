/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exclusions.h: per-pod capture exclusions (pod_excluded_ports, pod_excluded_cidrs4/6,
 * pod_inbound_exclusions), looked up by connect4/6 and sk_lookup. Look-ups only; ztunnel
 * writes the maps from the pod's exclusion settings when it enrolls the pod.
 */
#ifndef ZTUNNEL_EXCLUSIONS_H
#define ZTUNNEL_EXCLUSIONS_H

#include "common.h"

/* The pod in `netns` excluded outbound connects to `port` (host order). */
static __always_inline int outbound_port_excluded(__u64 netns, __u16 port)
{
	struct pod_port_key key = { .netns = netns, .port = port };
	return bpf_map_lookup_elem(&pod_excluded_ports, &key) != 0;
}

/* The pod in `netns` excluded outbound connects to IPv4 `ip` (network order). */
static __always_inline int outbound_ip4_excluded(__u64 netns, __u32 ip)
{
	struct pod_cidr4_key key = { .prefixlen = 96 };
	__builtin_memcpy(key.netns, &netns, sizeof(netns));
	__builtin_memcpy(key.addr, &ip, sizeof(ip));
	return bpf_map_lookup_elem(&pod_excluded_cidrs4, &key) != 0;
}

/* The pod in `netns` excluded outbound connects to IPv6 `ip` (words in network order). */
static __always_inline int outbound_ip6_excluded(__u64 netns, const __u32 ip[4])
{
	struct pod_cidr6_key key = { .prefixlen = 192 };
	__builtin_memcpy(key.netns, &netns, sizeof(netns));
	__builtin_memcpy(key.addr, ip, 16);
	return bpf_map_lookup_elem(&pod_excluded_cidrs6, &key) != 0;
}

/* Inbound TCP to the pod address `ip` (family, 16 bytes) at local `port` bypasses 15006:
 * the port is excluded, or the pod bypasses inbound capture altogether (port 0). */
static __always_inline int inbound_excluded(const __u8 ip[16], __u16 family, __u16 port)
{
	struct ip_port_key key = { .port = port, .family = family };
	__builtin_memcpy(key.ip, ip, 16);
	if (bpf_map_lookup_elem(&pod_inbound_exclusions, &key))
		return 1;
	key.port = 0;
	return bpf_map_lookup_elem(&pod_inbound_exclusions, &key) != 0;
}

#endif /* ZTUNNEL_EXCLUSIONS_H */
