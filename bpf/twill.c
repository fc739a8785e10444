// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill's tc programs. This file holds only the entry points; the work is in
 * the helpers under lib/, which return reasons that only these programs turn
 * into TC actions and counters.
 *
 *   pod ──veth──▶ [from_pod]  (tc ingress of each pod veth, fast path only)
 *                    │ peer found: tunnel key + MACs, mark, redirect ─┐
 *                    └ anything else: TC_ACT_OK (bridge / host stack) │
 *   host stack ──route 10.244.0.0/16 dev flannel.1──▶ [to_overlay] ◀──┘
 *                    (tc egress of the vxlan device: encapsulate, or pass
 *                     what from_pod already did)
 *   underlay ──▶ vxlan decap ──▶ [from_overlay] (tc ingress of the vxlan device)
 *                    fast path: known local pod, not NAT'ed → redirect_peer
 *                    otherwise: TC_ACT_OK (host stack → cni0 → pod)
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/counters.h"
#include "lib/parse.h"
#include "lib/lookup.h"
#include "lib/l3.h"
#include "lib/encap.h"
#include "lib/ct.h"

/* Keep the shared enums in BTF for the layout test. */
const volatile enum twill_counter twill_counter_max = TWILL_C_MAX;
const volatile enum twill_peer_kind twill_peer_kind_max = TWILL_PEER_CLUSTER;

SEC("tc")
int twill_from_pod(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct twill_peer *peer;
	struct pkt p;
	int ifindex;
	__u32 mtu_len = 0;

	if (!parse_pkt(skb, &p))
		return TC_ACT_OK;
	cfg = config_get();
	if (!cfg || !(cfg->flags & TWILL_CFG_FAST_PATH))
		return TC_ACT_OK;
	ep_learn(skb, p.family, p.saddr);

	peer = peer_lookup(p.family, p.daddr);
	if (!peer || peer->kind == TWILL_PEER_LOCAL)
		return TC_ACT_OK;
	if (peer->kind != TWILL_PEER_VXLAN) {
		if (peer->kind == TWILL_PEER_CLUSTER)
			count(TWILL_C_MISS, skb->len);
		return TC_ACT_OK;
	}
	ifindex = cfg->fam[fam_index(peer->remote_family)].vxlan_ifindex;
	if (!ifindex)
		return TC_ACT_OK;
	/* Oversized (or GSO segments too big for the tunnel): the stack sends
	 * ICMP "fragmentation needed"; bpf_redirect would not. */
	if (bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS)) {
		count(TWILL_C_STACK_MTU, skb->len);
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, &p)) {
		count(TWILL_C_STACK_TTL, skb->len);
		return TC_ACT_OK;
	}
	ifindex = encap_prepare(skb, peer, cfg);
	if (ifindex < 0) {
		count(-ifindex, skb->len);
		return TC_ACT_SHOT;
	}
	skb->mark = TWILL_MARK_ENCAPPED;
	count(TWILL_C_ENCAP_FAST, skb->len);
	return bpf_redirect(ifindex, 0);
}

SEC("tc")
int twill_to_overlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct twill_peer *peer;
	struct pkt p;
	int ret;

	if (skb->mark == TWILL_MARK_ENCAPPED) {
		/* from_pod did the work; the mark goes no further. */
		skb->mark = 0;
		return TC_ACT_OK;
	}
	if (!parse_pkt(skb, &p)) {
		count(TWILL_C_DROP_UNSUPPORTED, skb->len);
		return TC_ACT_SHOT;
	}
	cfg = config_get();
	if (!cfg) {
		count(TWILL_C_DROP_NO_CONFIG, skb->len);
		return TC_ACT_SHOT;
	}
	peer = peer_lookup(p.family, p.daddr);
	if (!peer) {
		/* Not for the cluster network: e.g. the kernel's own IPv6
		 * router solicitations from the device's link-local address. */
		count(TWILL_C_DROP_UNSUPPORTED, skb->len);
		return TC_ACT_SHOT;
	}
	if (peer->kind != TWILL_PEER_VXLAN) {
		count(TWILL_C_DROP_NO_LEASE, skb->len);
		return TC_ACT_SHOT;
	}
	ret = encap_prepare(skb, peer, cfg);
	if (ret < 0) {
		count(-ret, skb->len);
		return TC_ACT_SHOT;
	}
	count(TWILL_C_ENCAP, skb->len);
	return TC_ACT_OK;
}

SEC("tc")
int twill_from_overlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct bpf_tunnel_key key;
	struct twill_ep *ep;
	struct pkt p;
	__u64 flags = 0;

	cfg = config_get();
	if (!cfg) {
		count(TWILL_C_DROP_NO_CONFIG, skb->len);
		return TC_ACT_SHOT;
	}
	if (skb->ifindex == cfg->fam[1].vxlan_ifindex)
		flags = BPF_F_TUNINFO_IPV6;
	__builtin_memset(&key, 0, sizeof(key));
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), flags)) {
		count(TWILL_C_DROP_NO_TUNNEL, skb->len);
		return TC_ACT_SHOT;
	}
	if (key.tunnel_id != cfg->vni) {
		count(TWILL_C_DROP_VNI, skb->len);
		return TC_ACT_SHOT;
	}
	if (!(cfg->flags & TWILL_CFG_FAST_PATH) || !parse_pkt(skb, &p))
		goto to_stack;
	ep = ep_lookup(p.family, p.daddr);
	if (!ep)
		goto to_stack;
	if (p.icmp_err || flow_is_nat(skb, &p)) {
		count(TWILL_C_STACK_NAT, skb->len);
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, &p)) {
		count(TWILL_C_STACK_TTL, skb->len);
		return TC_ACT_OK;
	}
	if (set_macs(skb, ep->mac, cfg->bridge_mac))
		goto to_stack;
	count(TWILL_C_DELIVERED, skb->len);
	return bpf_redirect_peer(ep->ifindex, 0);

to_stack:
	count(TWILL_C_DECAP_STACK, skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
