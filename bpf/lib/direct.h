/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DirectRouting: a peer on our own L2 segment is reached without
 * encapsulation. The pod packet goes out of the underlay interface with
 * bpf_redirect_neigh, the peer's underlay address as next hop, so the
 * kernel's ordinary ARP/ND resolves its MAC: no per-peer route.
 */
#ifndef TWILL_DIRECT_H
#define TWILL_DIRECT_H

#include "parse.h"

#define TWILL_AF_INET  2
#define TWILL_AF_INET6 10

/*
 * Checks that the packet fits the underlay. Returns the underlay ifindex
 * (> 0), or -TWILL_C_STACK_MTU when it does not fit (the stack then sends
 * ICMP "fragmentation needed"), or -TWILL_C_DROP_NO_CONFIG.
 */
static __always_inline int direct_prepare(struct __sk_buff *skb, const struct twill_peer *peer,
					  const struct twill_config *cfg)
{
	__u32 mtu_len = 0;
	int ifindex;

	if (peer->remote_family == TWILL_FAMILY_V6)
		ifindex = cfg->fam[1].underlay_ifindex;
	else
		ifindex = cfg->fam[0].underlay_ifindex;
	if (!ifindex)
		return -TWILL_C_DROP_NO_CONFIG;
	/* BPF_MTU_CHK_SEGS: GSO packets are judged by their segments, which
	 * bpf_redirect_neigh would otherwise drop silently on the wire. */
	if (bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS))
		return -TWILL_C_STACK_MTU;
	return ifindex;
}

/* Sends the packet to the peer's underlay address. Returns a TC action. */
static __always_inline int direct_redirect(const struct twill_peer *peer, int ifindex)
{
	struct bpf_redir_neigh nh;

	__builtin_memset(&nh, 0, sizeof(nh));
	if (peer->remote_family == TWILL_FAMILY_V6) {
		nh.nh_family = TWILL_AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, peer->remote, 16);
	} else {
		nh.nh_family = TWILL_AF_INET;
		__builtin_memcpy(&nh.ipv4_nh, peer->remote, 4);
	}
	return bpf_redirect_neigh(ifindex, &nh, sizeof(nh), 0);
}

#endif
