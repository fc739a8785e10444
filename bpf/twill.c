// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill's tc programs. This file holds only the entry points; the work is in
 * the helpers under lib/, which return reasons that only these programs turn
 * into TC actions and counters (per peer, in twill_stats).
 *
 *   pod ──veth──▶ [from_pod]  (tc ingress of each pod veth, fast path only)
 *                    │ VXLAN peer: tunnel key + MACs, mark, redirect ───┐
 *                    │ DIRECT peer: bpf_redirect_neigh out of the underlay
 *                    └ anything else: TC_ACT_OK (bridge / host stack)   │
 *   host stack ──route <cluster net> dev flannel.1──▶ [to_overlay] ◀────┘
 *                    (tc egress of the vxlan device: encapsulate, or send a
 *                     DIRECT peer's packet out of the underlay; pass what
 *                     from_pod already did)
 *   underlay ──▶ vxlan decap ──▶ [from_overlay] (tc ingress of the vxlan device)
 *   underlay ──▶ [from_underlay] (tc ingress of the underlay, DirectRouting only)
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
#include "lib/direct.h"
#include "lib/deliver.h"

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
	if (peer->kind == TWILL_PEER_CLUSTER) {
		count(0, TWILL_C_MISS, skb->len);
		return TC_ACT_OK;
	}
	if (peer->kind == TWILL_PEER_DIRECT) {
		ifindex = direct_prepare(skb, peer, cfg);
		if (ifindex < 0) {
			count(peer->id, -ifindex, skb->len);
			return TC_ACT_OK;
		}
		if (dec_ttl(skb, &p)) {
			count(peer->id, TWILL_C_STACK_TTL, skb->len);
			return TC_ACT_OK;
		}
		count(peer->id, TWILL_C_DIRECT, skb->len);
		return direct_redirect(peer, ifindex);
	}
	ifindex = cfg->fam[fam_index(peer->remote_family)].vxlan_ifindex;
	if (!ifindex)
		return TC_ACT_OK;
	/* Oversized (or GSO segments too big for the tunnel): the stack sends
	 * ICMP "fragmentation needed"; bpf_redirect would not. */
	if (bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS)) {
		count(peer->id, TWILL_C_STACK_MTU, skb->len);
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, &p)) {
		count(peer->id, TWILL_C_STACK_TTL, skb->len);
		return TC_ACT_OK;
	}
	ifindex = encap_prepare(skb, peer, cfg);
	if (ifindex < 0) {
		count(peer->id, -ifindex, skb->len);
		return TC_ACT_SHOT;
	}
	skb->mark = TWILL_MARK_ENCAPPED;
	count(peer->id, TWILL_C_ENCAP_FAST, skb->len);
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
		count(0, TWILL_C_DROP_UNSUPPORTED, skb->len);
		return TC_ACT_SHOT;
	}
	cfg = config_get();
	if (!cfg) {
		count(0, TWILL_C_DROP_NO_CONFIG, skb->len);
		return TC_ACT_SHOT;
	}
	peer = peer_lookup(p.family, p.daddr);
	if (!peer) {
		/* Not for the cluster network: e.g. the kernel's own IPv6
		 * router solicitations from the device's link-local address. */
		count(0, TWILL_C_DROP_UNSUPPORTED, skb->len);
		return TC_ACT_SHOT;
	}
	if (peer->kind == TWILL_PEER_DIRECT) {
		/* The stack routed it here (host traffic, or the fast path is
		 * off): send it out of the underlay, unencapsulated. */
		ret = direct_prepare(skb, peer, cfg);
		if (ret < 0) {
			count(peer->id, -ret, skb->len);
			return TC_ACT_SHOT;
		}
		count(peer->id, TWILL_C_DIRECT, skb->len);
		return direct_redirect(peer, ret);
	}
	if (peer->kind != TWILL_PEER_VXLAN) {
		count(0, TWILL_C_DROP_NO_LEASE, skb->len);
		return TC_ACT_SHOT;
	}
	ret = encap_prepare(skb, peer, cfg);
	if (ret < 0) {
		count(peer->id, -ret, skb->len);
		return TC_ACT_SHOT;
	}
	count(peer->id, TWILL_C_ENCAP, skb->len);
	return TC_ACT_OK;
}

SEC("tc")
int twill_from_overlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct bpf_tunnel_key key;
	struct twill_peer *peer;
	struct pkt p;

	cfg = config_get();
	if (!cfg) {
		count(0, TWILL_C_DROP_NO_CONFIG, skb->len);
		return TC_ACT_SHOT;
	}
	/* One collect-metadata device carries both underlay families. */
	__builtin_memset(&key, 0, sizeof(key));
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) &&
	    bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6)) {
		count(0, TWILL_C_DROP_NO_TUNNEL, skb->len);
		return TC_ACT_SHOT;
	}
	if (key.tunnel_id != cfg->vni) {
		count(0, TWILL_C_DROP_VNI, skb->len);
		return TC_ACT_SHOT;
	}
	if (!parse_pkt(skb, &p)) {
		count(0, TWILL_C_DECAP_STACK, skb->len);
		return TC_ACT_OK;
	}
	peer = peer_lookup(p.family, p.saddr);
	return deliver_local(skb, &p, cfg, peer_id_of(peer), TWILL_C_DELIVERED, TWILL_C_DECAP_STACK);
}

SEC("tc")
int twill_from_underlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct twill_peer *peer, *dst;
	struct pkt p;

	if (!parse_pkt(skb, &p))
		return TC_ACT_OK;
	peer = peer_lookup(p.family, p.saddr);
	if (!peer || peer->kind != TWILL_PEER_DIRECT)
		return TC_ACT_OK; /* not pod traffic from a DirectRouting peer */
	dst = peer_lookup(p.family, p.daddr);
	if (!dst || dst->kind != TWILL_PEER_LOCAL)
		return TC_ACT_OK;
	cfg = config_get();
	if (!cfg)
		return TC_ACT_OK;
	return deliver_local(skb, &p, cfg, peer->id, TWILL_C_RX_DIRECT, TWILL_C_RX_DIRECT);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
