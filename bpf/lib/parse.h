/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing: Ethernet, then IPv4 or IPv6, into one family-neutral
 * struct pkt so that every later step has one code path for both families.
 * What the fast path must not judge by ports (fragments, IPv6 extension
 * headers, a truncated L4 header) is flagged, never guessed.
 */
#ifndef TWILL_PARSE_H
#define TWILL_PARSE_H

#include "common.h"

#define TWILL_IP_MF     0x2000
#define TWILL_IP_OFFSET 0x1fff

struct pkt {
	__u32 family;   /* TWILL_FAMILY_V4/V6, 0 if not IP */
	__u32 l3_off;   /* offset of the IP header */
	__u8  proto;    /* L4 protocol (IPv6: the first next header); 0 for a later fragment */
	__u8  ttl;      /* TTL / hop limit */
	__u8  icmp_err; /* 1 when ICMP(v6) carries an error about another flow */
	__u8  tos;      /* IPv4 TOS / IPv6 traffic class (ECN in the low 2 bits) */
	__u32 l4_off;   /* offset of the L4 header */
	__u8  saddr[16];
	__u8  daddr[16];
	__be16 sport, dport; /* TCP/UDP ports; ICMP echo: identifier, 0; else 0 */
	__u8  frag;     /* 1: an IPv4 fragment (first or later) */
	__u8  l4_ok;    /* 1: TCP, UDP or ICMP(v6) whose header was read (ports valid) */
	__u8  pad[2];
};

/* Fills *p from the packet at `l3_off` with Ethernet type `proto` (network
 * order). Returns 1 for IP, 0 for anything else (including IPv4 with IHL < 5
 * and headers cut short). */
static __always_inline int parse_l3(struct __sk_buff *skb, struct pkt *p, __u32 l3_off, __be16 proto)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->l3_off = l3_off;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, l3_off, &ip, sizeof(ip)))
			return 0;
		if (ip.version != 4 || ip.ihl < 5)
			return 0;
		p->family = TWILL_FAMILY_V4;
		p->proto = ip.protocol;
		p->ttl = ip.ttl;
		p->tos = ip.tos;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		p->l4_off = l3_off + ip.ihl * 4;
		if (ip.frag_off & bpf_htons(TWILL_IP_MF | TWILL_IP_OFFSET)) {
			p->frag = 1;
			if (ip.frag_off & bpf_htons(TWILL_IP_OFFSET)) /* a later fragment: no L4 header */
				p->proto = 0;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, l3_off, &ip6, sizeof(ip6)))
			return 0;
		if (ip6.version != 6)
			return 0;
		p->family = TWILL_FAMILY_V6;
		p->proto = ip6.nexthdr;
		p->ttl = ip6.hop_limit;
		p->tos = (ip6.priority << 4) | (ip6.flow_lbl[0] >> 4);
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->l4_off = l3_off + sizeof(ip6);
	} else {
		return 0;
	}

	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)) == 0) {
			p->sport = ports[0];
			p->dport = ports[1];
			p->l4_ok = 1;
		}
	} else if ((p->proto == IPPROTO_ICMP && p->family == TWILL_FAMILY_V4) ||
		   (p->proto == IPPROTO_ICMPV6 && p->family == TWILL_FAMILY_V6)) {
		__u8 icmp[8];

		if (bpf_skb_load_bytes(skb, p->l4_off, icmp, sizeof(icmp)) == 0) {
			__u8 type = icmp[0];

			/* echo request/reply are not errors; v6 errors are types < 128 */
			if (p->proto == IPPROTO_ICMP)
				p->icmp_err = type != 0 && type != 8;
			else
				p->icmp_err = type < 128;
			if (!p->icmp_err)
				__builtin_memcpy(&p->sport, icmp + 4, 2); /* echo identifier */
			p->l4_ok = 1;
		}
	}
	return 1;
}

/* Fills *p from an Ethernet frame. Returns 1 for IP, 0 for anything else. */
static __always_inline int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end) {
		__builtin_memset(p, 0, sizeof(*p));
		return 0;
	}
	return parse_l3(skb, p, sizeof(*eth), eth->h_proto);
}

#endif
