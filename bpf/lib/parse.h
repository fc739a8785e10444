/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing: Ethernet, then IPv4 or IPv6, into one family-neutral
 * struct pkt so that every later step has one code path for both families.
 */
#ifndef TWILL_PARSE_H
#define TWILL_PARSE_H

#include "common.h"

struct pkt {
	__u32 family;   /* TWILL_FAMILY_V4/V6, 0 if not IP */
	__u32 l3_off;   /* offset of the IP header */
	__u8  proto;    /* L4 protocol (IPv6: the first next header) */
	__u8  ttl;      /* TTL / hop limit */
	__u8  icmp_err; /* 1 when ICMP(v6) carries an error about another flow */
	__u8  pad;
	__u32 l4_off;   /* offset of the L4 header */
	__u8  saddr[16];
	__u8  daddr[16];
	__be16 sport, dport; /* TCP/UDP ports, 0 otherwise */
};

/* Fills *p from the packet. Returns 1 for IP, 0 for anything else. */
static __always_inline int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(eth + 1) > end)
		return 0;
	p->l3_off = sizeof(*eth);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return 0;
		p->family = TWILL_FAMILY_V4;
		p->proto = ip->protocol;
		p->ttl = ip->ttl;
		__builtin_memcpy(p->saddr, &ip->saddr, 4);
		__builtin_memcpy(p->daddr, &ip->daddr, 4);
		p->l4_off = p->l3_off + ip->ihl * 4;
		if (ip->frag_off & bpf_htons(0x1fff)) /* a later fragment: no L4 header */
			p->proto = 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		p->family = TWILL_FAMILY_V6;
		p->proto = ip6->nexthdr;
		p->ttl = ip6->hop_limit;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->l4_off = p->l3_off + sizeof(*ip6);
	} else {
		return 0;
	}

	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)) == 0) {
			p->sport = ports[0];
			p->dport = ports[1];
		}
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		__u8 type;

		if (bpf_skb_load_bytes(skb, p->l4_off, &type, 1) == 0)
			/* echo request/reply are not errors; v6 errors are types < 128 */
			p->icmp_err = p->proto == IPPROTO_ICMP ? (type != 0 && type != 8) : (type < 128);
	}
	return 1;
}

#endif
