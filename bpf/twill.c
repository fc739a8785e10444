// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * twill's tc programs. This file holds only the entry points; the work is in
 * the helpers under lib/, which return reasons that only these programs turn
 * into TC actions and counters (per peer, in twill_stats).
 *
 *   pod ──veth──▶ [from_pod]  (tc ingress of each pod veth, fast path only)
 *                    │ VXLAN peer: encapsulate (lib/vxlan.h), redirect_neigh ──▶ underlay
 *                    │ DIRECT peer: bpf_redirect_neigh out of the underlay
 *                    └ anything else: TC_ACT_OK (bridge / host stack)
 *   host stack ──route <cluster net> dev flannel.1──▶ [to_overlay]
 *                    (tc egress of the vxlan device, after routing and
 *                     netfilter: encapsulate and redirect_neigh out of the
 *                     underlay; a DIRECT peer's packet goes out unencapsulated)
 *   underlay ──▶ [from_underlay] (tc ingress of the underlay)
 *                    VXLAN from a known peer to a local pod: decapsulate, then
 *                    fast path: known pod, no NAT → redirect_peer into it;
 *                    otherwise redirect into flannel.1's ingress (the stack
 *                    sees it exactly as if the vxlan driver had received it)
 *                    DirectRouting pod traffic: fast path as above, or the stack
 *                    anything else: TC_ACT_OK (the kernel's vxlan device, as before)
 *   host stack ──route <our subnet> dev cni0──▶ [to_pod] (tc egress of the pod bridge)
 *                    known pod, the MAC the stack resolved: straight to its
 *                    veth (after routing and netfilter, before the bridge; a
 *                    BPF-decapsulated GSO packet keeps its UDP-tunnel GSO
 *                    type, which the bridge would segment in software)
 *   underlay ──▶ vxlan driver ──▶ [from_overlay] (tc ingress of the vxlan device)
 *                    the device path (IPv6 underlay, --encap device, fallback)
 *
 * The device path stays whole: with --encap device, over an IPv6 underlay,
 * or when a helper is missing, encapsulation is a tunnel key for the vxlan
 * driver (lib/encap.h) and decapsulation is the driver's.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/counters.h"
#include "lib/parse.h"
#include "lib/lookup.h"
#include "lib/l3.h"
#include "lib/encap.h"
#include "lib/vxlan.h"
#include "lib/direct.h"
#include "lib/deliver.h"

/* Keep the shared enums in BTF for the layout test. */
const volatile enum twill_counter twill_counter_max = TWILL_C_MAX;
const volatile enum twill_peer_kind twill_peer_kind_max = TWILL_PEER_CLUSTER;

/* Hands a packet to the vxlan driver with a tunnel key (the device path).
 * Returns the TC action; with `redirect` (from_pod) the packet is sent to
 * the device, marked so that the device's own egress program lets it pass. */
static __always_inline int send_device(struct __sk_buff *skb, const struct twill_peer *peer,
				       const struct twill_config *cfg, int redirect)
{
	int ifindex = encap_prepare(skb, peer, cfg);

	if (ifindex < 0) {
		count(peer->id, -ifindex, skb->len);
		return TC_ACT_SHOT;
	}
	count(peer->id, TWILL_C_ENCAP_DEVICE, skb->len);
	if (!redirect)
		return TC_ACT_OK;
	skb->mark = TWILL_MARK_ENCAPPED;
	return bpf_redirect(ifindex, 0);
}

/* Sends packet p to VXLAN peer `peer`: encapsulated in BPF and out of the
 * underlay (counted as `counter`), else by the device path. Returns the TC
 * action. */
static __always_inline int send_vxlan(struct __sk_buff *skb, const struct pkt *p, const struct twill_peer *peer,
				      const struct twill_config *cfg, __u32 counter, int redirect)
{
	int ifindex = vxlan_encap(skb, p, peer, cfg);

	if (ifindex > 0) {
		count(peer->id, counter, skb->len);
		return bpf_redirect_neigh(ifindex, NULL, 0, 0);
	}
	if (ifindex == -TWILL_C_ENCAP_DEVICE)
		return send_device(skb, peer, cfg, redirect);
	count(peer->id, -ifindex, skb->len);
	return TC_ACT_SHOT;
}

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
	if (!cfg)
		return TC_ACT_OK;
	/* In every mode: to_pod (and the fast path's delivery) need to know
	 * which veth a local pod sits behind. */
	ep_learn(skb, p.family, p.saddr);
	if (!(cfg->flags & TWILL_CFG_FAST_PATH))
		return TC_ACT_OK;

	peer = peer_lookup(p.family, p.daddr);
	if (!peer || peer->kind == TWILL_PEER_LOCAL)
		return TC_ACT_OK;
	if (peer->kind == TWILL_PEER_CLUSTER) {
		count(0, TWILL_C_MISS, skb->len);
		return TC_ACT_OK;
	}
	/* A reply in a flow that reached the pod through the stack (NAT'ed
	 * here): conntrack must reverse it. Fragments and ICMP errors too. */
	if (needs_stack(&p)) {
		count(peer->id, TWILL_C_STACK_NAT, skb->len);
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
	 * ICMP "fragmentation needed"; a redirect would drop it silently. The
	 * vxlan device's MTU is the underlay's minus the 50 bytes of VXLAN. */
	if (bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS)) {
		count(peer->id, TWILL_C_STACK_MTU, skb->len);
		return TC_ACT_OK;
	}
	if (dec_ttl(skb, &p)) {
		count(peer->id, TWILL_C_STACK_TTL, skb->len);
		return TC_ACT_OK;
	}
	return send_vxlan(skb, &p, peer, cfg, TWILL_C_ENCAP_FAST, 1);
}

SEC("tc")
int twill_to_overlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct twill_peer *peer;
	struct pkt p;
	int ret;

	if (skb->mark == TWILL_MARK_ENCAPPED) {
		/* from_pod set the tunnel key; the mark goes no further. */
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
	if (peer->kind != TWILL_PEER_VXLAN && peer->kind != TWILL_PEER_DIRECT) {
		count(0, TWILL_C_DROP_NO_LEASE, skb->len);
		return TC_ACT_SHOT;
	}
	if (cfg->flags & TWILL_CFG_FAST_PATH) {
		/* This flow left through the stack (maybe NAT'ed): its replies
		 * must come back through it too. Only pod flows matter. */
		struct twill_peer *src = peer_lookup(p.family, p.saddr);

		if (src && src->kind == TWILL_PEER_LOCAL)
			nat_flow_record(skb, &p);
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
	return send_vxlan(skb, &p, peer, cfg, TWILL_C_ENCAP, 0);
}

SEC("tc")
int twill_from_overlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct bpf_tunnel_key key;
	struct twill_remote *r;
	struct pkt p;
	__u8 remote[16];
	__u32 family = TWILL_FAMILY_V4;

	cfg = config_get();
	if (!cfg) {
		count(0, TWILL_C_DROP_NO_CONFIG, skb->len);
		return TC_ACT_SHOT;
	}
	/* One collect-metadata device carries both underlay families. */
	__builtin_memset(&key, 0, sizeof(key));
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0)) {
		if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6))
			/* No tunnel metadata: from_underlay decapsulated it and
			 * redirected it here (nothing else can); already counted. */
			return TC_ACT_OK;
		family = TWILL_FAMILY_V6;
	}
	if (key.tunnel_id != cfg->vni) {
		count(0, TWILL_C_DROP_VNI, skb->len);
		return TC_ACT_SHOT;
	}
	__builtin_memset(remote, 0, sizeof(remote));
	if (family == TWILL_FAMILY_V6) {
		__builtin_memcpy(remote, key.remote_ipv6, 16);
	} else {
		__be32 a = bpf_htonl(key.remote_ipv4); /* host order in the key */

		__builtin_memcpy(remote, &a, 4);
	}
	r = remote_lookup(family, remote);
	if (!r) {
		/* Not from a peer: the stack judges it as before, BPF never
		 * delivers it into a pod. Over an IPv4 underlay with BPF
		 * decapsulation, from_underlay already counted it. */
		if (family == TWILL_FAMILY_V6 || !(cfg->flags & TWILL_CFG_BPF_ENCAP))
			count(0, TWILL_C_RX_UNKNOWN, skb->len);
		return TC_ACT_OK;
	}
	if (!parse_pkt(skb, &p)) {
		count(r->peer_id, TWILL_C_DECAP_STACK, skb->len);
		return TC_ACT_OK;
	}
	return deliver_or_stack(skb, &p, cfg, r->peer_id, TWILL_C_DELIVERED, TWILL_C_DECAP_STACK, 0);
}

SEC("tc")
int twill_from_underlay(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct twill_peer *peer, *dst;
	struct pkt p;
	__u32 peer_id = 0, reason = 0;
	int ret;

	cfg = config_get();
	if (!cfg)
		return TC_ACT_OK;
	ret = vxlan_rx(skb, cfg, &peer_id, &reason);
	if (ret == VXLAN_RX_KERNEL) {
		count(peer_id, reason, skb->len);
		return TC_ACT_OK;
	}
	if (ret == VXLAN_RX_DECAPPED) {
		/* The frame is the inner one now. Into the stack as the vxlan
		 * device's (netfilter, conntrack, rp_filter see what they saw
		 * with the kernel's decapsulation), or with the fast path into
		 * the pod. */
		__u32 vx = cfg->fam[0].vxlan_ifindex;

		if (!(cfg->flags & TWILL_CFG_FAST_PATH) || !parse_pkt(skb, &p)) {
			count(peer_id, TWILL_C_DECAP, skb->len);
			return bpf_redirect(vx, BPF_F_INGRESS);
		}
		return deliver_or_stack(skb, &p, cfg, peer_id, TWILL_C_DELIVERED, TWILL_C_DECAP, vx);
	}

	/* Not VXLAN: DirectRouting pod traffic from a peer on our segment? */
	if (!parse_pkt(skb, &p))
		return TC_ACT_OK;
	peer = peer_lookup(p.family, p.saddr);
	if (!peer || peer->kind != TWILL_PEER_DIRECT)
		return TC_ACT_OK; /* not pod traffic from a DirectRouting peer */
	dst = peer_lookup(p.family, p.daddr);
	if (!dst || dst->kind != TWILL_PEER_LOCAL)
		return TC_ACT_OK;
	return deliver_or_stack(skb, &p, cfg, peer->id, TWILL_C_RX_DIRECT, TWILL_C_RX_DIRECT, 0);
}

SEC("tc")
int twill_to_pod(struct __sk_buff *skb)
{
	struct twill_config *cfg;
	struct twill_ep *ep;
	struct ethhdr *eth;
	struct pkt p;

	cfg = config_get();
	if (!cfg || !(cfg->flags & (TWILL_CFG_BPF_ENCAP | TWILL_CFG_FAST_PATH)))
		return TC_ACT_OK;
	if (!parse_pkt(skb, &p))
		return TC_ACT_OK;
	if (cfg->flags & TWILL_CFG_FAST_PATH) {
		/* A remote pod's flow reached a local pod through the stack
		 * (maybe DNAT'ed here: a NodePort, a hostPort): its replies
		 * must leave through the stack too, not by from_pod's shortcut. */
		struct twill_peer *src = peer_lookup(p.family, p.saddr);

		if (src && (src->kind == TWILL_PEER_VXLAN || src->kind == TWILL_PEER_DIRECT))
			nat_flow_record(skb, &p);
	}
	if (!(cfg->flags & TWILL_CFG_BPF_ENCAP))
		return TC_ACT_OK;
	ep = ep_lookup(p.family, p.daddr);
	if (!ep)
		return TC_ACT_OK;
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return TC_ACT_OK;
	/* The stack resolved the pod's MAC: it must be the one we learnt
	 * (else a stale entry: let the bridge decide). */
	if (!mac_equal(eth->h_dest, ep->mac))
		return TC_ACT_OK;
	count(0, TWILL_C_TO_POD, skb->len);
	return bpf_redirect(ep->ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
