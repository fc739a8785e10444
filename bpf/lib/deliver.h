/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Receive side: delivering a packet from another host to a local pod. With
 * the fast path, a known pod (learnt in twill_endpoints) gets the packet by
 * bpf_redirect_peer straight into its namespace — unless the packet needs
 * the host stack: a flow that left through the stack (natflow.h: kube-proxy
 * NAT), an ICMP error about another flow, a fragment, an IPv6 extension
 * header, anything without a readable TCP/UDP/ICMP header, a TTL about to
 * expire.
 */
#ifndef TWILL_DELIVER_H
#define TWILL_DELIVER_H

#include "counters.h"
#include "lookup.h"
#include "l3.h"
#include "natflow.h"

/*
 * Tries to deliver packet p from peer `peer_id` straight into a local pod.
 * Returns TC_ACT_REDIRECT (counted as `rx`), or a negative counter for a
 * packet the caller must hand to the stack (counted by the caller):
 * -TWILL_C_STACK_NAT / -TWILL_C_STACK_TTL, or -(int)rx_stack for an
 * ordinary one (no fast path, unknown pod).
 */
static __always_inline int deliver_local(struct __sk_buff *skb, const struct pkt *p,
					 const struct twill_config *cfg, __u32 peer_id,
					 __u32 rx, __u32 rx_stack)
{
	struct twill_ep *ep;

	if (!(cfg->flags & TWILL_CFG_FAST_PATH))
		return -(int)rx_stack;
	ep = ep_lookup(p->family, p->daddr);
	if (!ep)
		return -(int)rx_stack;
	if (needs_stack(p))
		return -TWILL_C_STACK_NAT;
	if (dec_ttl(skb, p))
		return -TWILL_C_STACK_TTL;
	if (set_macs(skb, ep->mac, cfg->bridge_mac))
		return -(int)rx_stack;
	count(peer_id, rx, skb->len);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/*
 * deliver_local, or else the stack: counts why (the negative reason) and
 * returns TC_ACT_OK, or — for a packet BPF decapsulated, `via_ifindex` being
 * the vxlan device — redirects it into that device's ingress so the stack
 * takes it as the device's.
 */
static __always_inline int deliver_or_stack(struct __sk_buff *skb, const struct pkt *p,
					    const struct twill_config *cfg, __u32 peer_id,
					    __u32 rx, __u32 rx_stack, __u32 via_ifindex)
{
	int ret = deliver_local(skb, p, cfg, peer_id, rx, rx_stack);

	if (ret >= 0)
		return ret;
	count(peer_id, -ret, skb->len);
	return via_ifindex ? bpf_redirect(via_ifindex, BPF_F_INGRESS) : TC_ACT_OK;
}

#endif
