/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Asking conntrack whether a flow that went through the stack was NAT'ed,
 * so that only NAT'ed flows are recorded in twill_nat_flows (natflow.h).
 * Called on the stack's side only (to_overlay, to_pod with --fast-path),
 * never per packet of the fast path itself. The packet's tuple is reversed:
 * that is the reply tuple conntrack hashes a flow under (for a DNAT'ed flow
 * the original tuple names the Service address, which the packet no longer
 * carries). The kfuncs are weak: on a kernel without them the answer is
 * "unknown" and the caller records the flow anyway (safe, only slower).
 */
#ifndef TWILL_CT_H
#define TWILL_CT_H

#include "parse.h"

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym __weak;
extern void bpf_ct_release(struct nf_conn *ct) __ksym __weak;

#define TWILL_IPS_NAT (IPS_SRC_NAT | IPS_DST_NAT)

#define CT_NAT_UNKNOWN (-1)

/* Returns 1 when conntrack has the flow of packet p with NAT, 0 when it has
 * it without (or has no entry: conntrack never saw it, nothing NAT'ed it),
 * CT_NAT_UNKNOWN when it cannot be asked (no kfunc, not TCP/UDP). */
static __always_inline int flow_nat_state(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_sock_tuple tuple;
	struct bpf_ct_opts opts;
	struct nf_conn *ct;
	__u32 tsz;
	int nat;

	if (!bpf_skb_ct_lookup) /* weak: NULL when the kernel lacks it */
		return CT_NAT_UNKNOWN;
	if ((p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) || !p->l4_ok || p->frag)
		return CT_NAT_UNKNOWN;
	__builtin_memset(&tuple, 0, sizeof(tuple));
	__builtin_memset(&opts, 0, sizeof(opts));
	/* Reversed: the reply tuple. */
	if (p->family == TWILL_FAMILY_V4) {
		__builtin_memcpy(&tuple.ipv4.saddr, p->daddr, 4);
		__builtin_memcpy(&tuple.ipv4.daddr, p->saddr, 4);
		tuple.ipv4.sport = p->dport;
		tuple.ipv4.dport = p->sport;
		tsz = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.saddr, p->daddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, p->saddr, 16);
		tuple.ipv6.sport = p->dport;
		tuple.ipv6.dport = p->sport;
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
