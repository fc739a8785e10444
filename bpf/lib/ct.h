/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Asking conntrack whether a flow is NAT'ed (kube-proxy's Service DNAT,
 * masquerade), so that the receive-side fast path leaves such flows to the
 * stack for their reverse NAT. The kfuncs are weak: on a kernel without
 * them (or without nf_conntrack loaded) every flow counts as not NAT'ed.
 */
#ifndef TWILL_CT_H
#define TWILL_CT_H

#include "parse.h"

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym __weak;
extern void bpf_ct_release(struct nf_conn *ct) __ksym __weak;

#define TWILL_IPS_NAT (IPS_SRC_NAT | IPS_DST_NAT)

/* Returns 1 when conntrack has this TCP/UDP flow with NAT, else 0. */
static __always_inline int flow_is_nat(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple tuple;
	struct bpf_ct_opts opts;
	struct nf_conn *ct;
	__u32 tsz;
	int nat;

	if (!bpf_skb_ct_lookup) /* weak: NULL when the kernel lacks it */
		return 0;
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return 0;
	__builtin_memset(&tuple, 0, sizeof(tuple));
	__builtin_memset(&opts, 0, sizeof(opts));
	if (p->family == TWILL_FAMILY_V4) {
		__builtin_memcpy(&tuple.ipv4.saddr, p->saddr, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, p->daddr, 4);
		tuple.ipv4.sport = p->sport;
		tuple.ipv4.dport = p->dport;
		tsz = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.saddr, p->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, p->daddr, 16);
		tuple.ipv6.sport = p->sport;
		tuple.ipv6.dport = p->dport;
		tsz = sizeof(tuple.ipv6);
	}
	opts.netns_id = BPF_F_CURRENT_NETNS;
	opts.l4proto = p->proto;
	/* Verifier/ABI: this kernel takes an opts size of 12 or 16 only. */
	ct = bpf_skb_ct_lookup(skb, &tuple, tsz, &opts, 12);
	if (!ct)
		return 0;
	nat = (ct->status & TWILL_IPS_NAT) != 0;
	bpf_ct_release(ct);
	return nat;
}

#endif
