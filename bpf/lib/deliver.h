/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Receive side: delivering a packet from another host to a local pod. With
 * the fast path, a known pod (learnt in twill_endpoints) gets the packet by
 * bpf_redirect_peer straight into its namespace, unless conntrack says the
 * flow is NAT'ed (kube-proxy Services: the reverse NAT happens in the
 * stack) or the packet is an ICMP error about another flow.
 */
#ifndef TWILL_DELIVER_H
#define TWILL_DELIVER_H

#include "counters.h"
#include "lookup.h"
#include "l3.h"
#include "ct.h"

/*
 * Returns the TC action for a packet from peer `peer_id` addressed to a
 * local pod: TC_ACT_REDIRECT into the pod, or TC_ACT_OK to the stack.
 * `rx` is the counter for a delivered packet, `rx_stack` for one that
 * goes to the stack.
 */
static __always_inline int deliver_local(struct __sk_buff *skb, const struct pkt *p,
					 const struct twill_config *cfg, __u32 peer_id,
					 __u32 rx, __u32 rx_stack)
{
	struct twill_ep *ep;

	if (!(cfg->flags & TWILL_CFG_FAST_PATH))
		goto to_stack;
	ep = ep_lookup(p->family, p->daddr);
	if (!ep)
		goto to_stack;
	if (p->icmp_err || flow_is_nat(skb, p)) {
		count(peer_id, TWILL_C_STACK_NAT, skb->len);
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, p)) {
		count(peer_id, TWILL_C_STACK_TTL, skb->len);
		return TC_ACT_OK;
	}
	if (set_macs(skb, ep->mac, cfg->bridge_mac))
		goto to_stack;
	count(peer_id, rx, skb->len);
	return bpf_redirect_peer(ep->ifindex, 0);

to_stack:
	count(peer_id, rx_stack, skb->len);
	return TC_ACT_OK;
}

#endif
