/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L2/L3 rewrites done when twill forwards a packet itself. */
#ifndef TWILL_L3_H
#define TWILL_L3_H

#include "parse.h"

/*
 * Decrements the TTL / hop limit, as a router would. Returns 0, or -1 when
 * the TTL would expire (the caller leaves the packet to the stack, which
 * sends ICMP time exceeded) or the rewrite failed.
 */
static __always_inline int dec_ttl(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 ttl = p->ttl;

	if (ttl <= 1)
		return -1;
	if (p->family == TWILL_FAMILY_V4) {
		__u32 ttl_off = p->l3_off + offsetof(struct iphdr, ttl);
		/* The checksum covers ttl and protocol as one 16-bit word. */
		__be16 old = bpf_htons((__u16)ttl << 8 | p->proto);
		__be16 new = bpf_htons((__u16)(ttl - 1) << 8 | p->proto);
		__u8 nttl = ttl - 1;

		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), old, new, 2))
			return -1;
		if (bpf_skb_store_bytes(skb, ttl_off, &nttl, 1, 0))
			return -1;
	} else {
		__u8 nttl = ttl - 1;

		/* No header checksum in IPv6, but a CHECKSUM_COMPLETE skb's csum
		 * covers the hop limit: BPF_F_RECOMPUTE_CSUM keeps it right. */
		if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, hop_limit), &nttl, 1,
					BPF_F_RECOMPUTE_CSUM))
			return -1;
	}
	return 0;
}

/* Writes destination and source MAC. Returns 0 or a negative error. */
static __always_inline int set_macs(struct __sk_buff *skb, const __u8 *dst, const __u8 *src)
{
	__u8 macs[2 * ETH_ALEN];

	__builtin_memcpy(macs, dst, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, src, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0);
}

#endif
