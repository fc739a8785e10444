/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Knowing which flows need the host stack on receive, without asking
 * conntrack for every packet.
 *
 * How it works: with --fast-path, a local pod's packets to the cluster go
 * out through from_pod and never see netfilter, so no NAT can apply to
 * them. The only pod flows that netfilter can have NAT'ed on this node
 * (kube-proxy's Service DNAT, a masquerade) are those whose packets left
 * through the host stack — and those all pass to_overlay on the way out.
 * to_overlay records each such flow, keyed as its replies will arrive, in
 * the LRU map twill_nat_flows (a lookup, and an update only for a new
 * flow); deliver_local sends any arriving packet of a recorded flow to the
 * stack, where conntrack reverses the NAT. One hash lookup per received
 * packet replaces a conntrack lookup plus its reference counting.
 * The other way round too: a flow that reached a local pod through the
 * stack (to_pod sees it at the bridge's egress: DNAT'ed here, e.g. a
 * NodePort or hostPort reached by a remote pod) is recorded keyed as the
 * pod's replies will leave, and from_pod leaves those replies to the stack
 * for their reverse NAT. One map holds both directions: a key is the
 * packet's own (source, destination), so the two never collide.
 */
#ifndef TWILL_NATFLOW_H
#define TWILL_NATFLOW_H

#include "parse.h"
#include "maps.h"
#include "ct.h"

/* Fills the key of packet p as it arrives (reverse = 0) or of its replies
 * (reverse = 1). Returns 0, or -1 when the packet has no usable L4 identity. */
static __always_inline int flow_key(struct twill_flow_key *k, const struct pkt *p, int reverse)
{
	if (!p->l4_ok || p->frag || p->icmp_err)
		return -1;
	__builtin_memset(k, 0, sizeof(*k));
	k->family = p->family;
	k->proto = p->proto;
	if (reverse) {
		__builtin_memcpy(k->saddr, p->daddr, 16);
		__builtin_memcpy(k->daddr, p->saddr, 16);
		k->sport = p->dport;
		k->dport = p->sport;
	} else {
		__builtin_memcpy(k->saddr, p->saddr, 16);
		__builtin_memcpy(k->daddr, p->daddr, 16);
		k->sport = p->sport;
		k->dport = p->dport;
	}
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		/* echo: the identifier is the same both ways */
		k->sport = p->sport;
		k->dport = 0;
	}
	return 0;
}

/* Records that packet p (which went through the stack) belongs to a flow
 * whose replies must go through the stack too. Returns nothing: a full LRU
 * evicts the oldest flow. */
static __always_inline void nat_flow_record(struct __sk_buff *skb, const struct pkt *p)
{
	struct twill_flow_key k;
	__u32 one = 1;

	/* Only flows conntrack NAT'ed: one that took the stack for another
	 * reason (a pod not learnt yet, MTU, TTL) must not lose the fast path. */
	if (flow_nat_state(skb, p) == 0)
		return;
	if (flow_key(&k, p, 1))
		return;
	if (bpf_map_lookup_elem(&twill_nat_flows, &k))
		return;
	bpf_map_update_elem(&twill_nat_flows, &k, &one, BPF_ANY);
}

/* Returns 1 when the fast path must leave packet p (arriving from the
 * overlay, or leaving a pod) to the stack: it belongs to a recorded flow,
 * or it has no L4 identity to judge it by (a fragment, an ICMP error, an
 * IPv6 extension header, a header cut short). */
static __always_inline int needs_stack(const struct pkt *p)
{
	struct twill_flow_key k;

	if (flow_key(&k, p, 0))
		return 1;
	return bpf_map_lookup_elem(&twill_nat_flows, &k) != NULL;
}

#endif
