/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * VXLAN written and stripped by the tc programs themselves (IPv4 underlay),
 * so known peers' traffic never goes through the vxlan driver.
 *
 * How it works:
 * - Encap: bpf_skb_adjust_room opens 50 bytes after the Ethernet header
 *   (FIXED_GSO: the pod MTU already leaves them; ENCAP_* so GSO segments
 *   and checksum offload treat the packet as UDP-tunnelled), then one store
 *   writes the outer Ethernet, IPv4, UDP and VXLAN headers and the inner
 *   Ethernet header, with the values the kernel's vxlan driver uses in
 *   flannel's configuration: DF clear, TTL 64, ECN copied from the inner
 *   packet, UDP checksum 0, source port a hash of the inner flow in
 *   32768–60999 (udp_flow_src_port), VXLAN flags 0x08 and the peer's VNI,
 *   inner destination MAC = the peer's VTEP MAC, source = ours. The caller
 *   sends the result with bpf_redirect_neigh and no next hop (a FIB lookup
 *   of the outer destination: a given next hop loses the first packet while
 *   the neighbour resolves).
 * - Decap: at the underlay's tc ingress, a packet is stripped only when it
 *   is VXLAN exactly as twill sends it — IPv4 without options, not a
 *   fragment, UDP to our port and address, flags 0x08, our VNI, inner
 *   destination MAC = our VTEP MAC — from a known peer (outer source in
 *   twill_remotes: the spoofing check) to our own pod subnet (a decapsulated
 *   GSO packet keeps SKB_GSO_UDP_TUNNEL, harmless for local delivery only).
 *   Anything else goes to the kernel's vxlan device untouched, as before.
 *   If a helper or flag is missing (older kernels), the same happens.
 */
#ifndef TWILL_VXLAN_H
#define TWILL_VXLAN_H

#include "parse.h"
#include "lookup.h"

#define VXLAN_FLAGS_I   0x08000000U /* "VNI present", network order when htonl'd */
#define VXLAN_ENCAP_LEN 50          /* outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 */
#define SPORT_MIN       32768       /* net.ipv4.ip_local_port_range's defaults */
#define SPORT_MAX       60999
#define ADJ_ROOM_ENCAP_L2(len) (((__u64)(len) & 0xff) << 56)

/* The 64 bytes at the front of a VXLAN frame: outer Ethernet to inner Ethernet. */
struct vxlan_hdrs {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct vxlanhdr vx;
	struct ethhdr inner;
} __attribute__((packed));

/* The VXLAN UDP port of the config, network order. */
static __always_inline __be16 cfg_port(const struct twill_config *cfg)
{
	return bpf_htons((__u16)(cfg->flags >> TWILL_CFG_PORT_SHIFT));
}

static __always_inline __u16 csum_fold32(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* ECN of the outer header, as INET_ECN_encapsulate(0, inner) computes it. */
static __always_inline __u8 ecn_encap(__u8 inner_tos)
{
	__u8 ecn = inner_tos & 3;

	return ecn == 3 ? 2 : ecn; /* CE inside: ECT(0) outside */
}

/*
 * Encapsulates the IPv4 packet p for `peer` (IPv4 underlay). Returns the
 * underlay ifindex to redirect to (> 0), or a negative reason with the
 * packet unchanged: -TWILL_C_ENCAP_DEVICE when BPF cannot do it here (the
 * caller falls back to the vxlan device), -TWILL_C_DROP_ENCAP when the
 * packet was already changed and must be dropped.
 */
static __always_inline int vxlan_encap(struct __sk_buff *skb, const struct pkt *p, const struct twill_peer *peer,
				       const struct twill_config *cfg)
{
	const struct twill_family_config *fc = &cfg->fam[0];
	struct vxlan_hdrs h;
	struct iphdr ip;
	__u32 inner_len = skb->len - sizeof(struct ethhdr);
	__u32 hash = skb->hash;
	__u64 sum;
	__u16 sport;

	if (!(cfg->flags & TWILL_CFG_BPF_ENCAP) || p->family != TWILL_FAMILY_V4 ||
	    peer->remote_family != TWILL_FAMILY_V4 || !fc->underlay_ifindex)
		return -TWILL_C_ENCAP_DEVICE;
	if (!hash)
		hash = bpf_get_hash_recalc(skb);
	hash ^= hash << 16; /* as udp_flow_src_port: only the upper bits count */
	sport = (__u16)((((__u64)hash * (SPORT_MAX - SPORT_MIN)) >> 32) + SPORT_MIN);

	__builtin_memset(&h, 0, sizeof(h));
	/* Outer Ethernet: bpf_redirect_neigh writes the real addresses; it only
	 * needs a unicast destination and the type. */
	__builtin_memcpy(h.eth.h_dest, peer->vtep_mac, ETH_ALEN);
	__builtin_memcpy(h.eth.h_source, fc->vtep_mac, ETH_ALEN);
	h.eth.h_proto = bpf_htons(ETH_P_IP);
	/* Built apart (aligned) for bpf_csum_diff, then copied in. */
	__builtin_memset(&ip, 0, sizeof(ip));
	ip.version = 4;
	ip.ihl = 5;
	ip.tos = ecn_encap(p->tos);
	ip.tot_len = bpf_htons(inner_len + VXLAN_ENCAP_LEN);
	ip.id = (__be16)bpf_get_prandom_u32();
	ip.ttl = 64;
	ip.protocol = IPPROTO_UDP;
	__builtin_memcpy(&ip.saddr, fc->local_ip, 4);
	__builtin_memcpy(&ip.daddr, peer->remote, 4);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0);
	ip.check = csum_fold32(sum);
	__builtin_memcpy(&h.ip, &ip, sizeof(ip));
	h.udp.source = bpf_htons(sport);
	h.udp.dest = cfg_port(cfg);
	h.udp.len = bpf_htons(inner_len + VXLAN_ENCAP_LEN - sizeof(struct iphdr));
	h.vx.vx_flags = bpf_htonl(VXLAN_FLAGS_I);
	h.vx.vx_vni = bpf_htonl(peer->vni << 8);
	__builtin_memcpy(h.inner.h_dest, peer->vtep_mac, ETH_ALEN);
	__builtin_memcpy(h.inner.h_source, fc->vtep_mac, ETH_ALEN);
	h.inner.h_proto = bpf_htons(ETH_P_IP);

	if (bpf_skb_adjust_room(skb, VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
				BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
				ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr))))
		return -TWILL_C_ENCAP_DEVICE; /* unchanged: e.g. a kernel without these flags */
	if (bpf_skb_store_bytes(skb, 0, &h, sizeof(h), 0))
		return -TWILL_C_DROP_ENCAP;
	return fc->underlay_ifindex;
}

/* What vxlan_rx decided. */
enum vxlan_rx_result {
	VXLAN_RX_NOT_VXLAN = 0, /* not VXLAN to our port: someone else's packet */
	VXLAN_RX_KERNEL    = 1, /* VXLAN to us that the kernel's vxlan device handles (counted) */
	VXLAN_RX_DECAPPED  = 2, /* stripped: the frame is now the inner one */
};

/*
 * Checks and strips VXLAN at the underlay's ingress. Returns an
 * enum vxlan_rx_result; for VXLAN_RX_KERNEL, *reason is the counter
 * (TWILL_C_RX_UNKNOWN or TWILL_C_RX_FALLBACK); *peer_id is the sender's id
 * when known.
 */
static __always_inline int vxlan_rx(struct __sk_buff *skb, const struct twill_config *cfg, __u32 *peer_id,
				    __u32 *reason)
{
	const struct twill_family_config *fc = &cfg->fam[0];
	struct vxlan_hdrs h;
	struct twill_remote *r;
	struct twill_peer *dst;
	__u8 inner_daddr[16] = {};
	__u32 l3 = VXLAN_ENCAP_LEN + sizeof(struct ethhdr);
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET;
	__u32 family;
	__be32 local;
	struct iphdr ip;

	/* Only the 42 bytes up to the UDP header first: most packets stop here. */
	if (bpf_skb_load_bytes(skb, 0, &h, offsetof(struct vxlan_hdrs, vx)))
		return VXLAN_RX_NOT_VXLAN;
	if (h.eth.h_proto != bpf_htons(ETH_P_IP) || h.ip.protocol != IPPROTO_UDP)
		return VXLAN_RX_NOT_VXLAN;
	if (h.ip.version != 4 || h.ip.ihl != 5) {
		__be16 dport;

		/* Options (or a broken header): the kernel judges it. */
		if (h.ip.ihl >= 5 && !bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + h.ip.ihl * 4 + 2, &dport, 2) &&
		    dport == cfg_port(cfg)) {
			*reason = TWILL_C_RX_FALLBACK;
			return VXLAN_RX_KERNEL;
		}
		return VXLAN_RX_NOT_VXLAN;
	}
	if (h.udp.dest != cfg_port(cfg))
		return VXLAN_RX_NOT_VXLAN;
	*reason = TWILL_C_RX_FALLBACK;
	if (!(cfg->flags & TWILL_CFG_BPF_ENCAP) || !fc->vxlan_ifindex)
		return VXLAN_RX_KERNEL;
	if (h.ip.frag_off & bpf_htons(TWILL_IP_MF | TWILL_IP_OFFSET))
		return VXLAN_RX_KERNEL;
	/* What ip_rcv would drop stays the kernel's to drop: a total length
	 * past the frame's end (trailing padding is fine), a bad header
	 * checksum. (The outer UDP checksum, when not 0, is left unchecked:
	 * the inner packet's own checksum still guards it, see below.) */
	if (skb->len < sizeof(struct ethhdr) + bpf_ntohs(h.ip.tot_len) ||
	    bpf_ntohs(h.ip.tot_len) < VXLAN_ENCAP_LEN + sizeof(struct iphdr))
		return VXLAN_RX_KERNEL;
	__builtin_memcpy(&ip, &h.ip, sizeof(ip));
	if (csum_fold32(bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0)) != 0)
		return VXLAN_RX_KERNEL;
	__builtin_memcpy(&local, fc->local_ip, 4);
	if (h.ip.daddr != local)
		return VXLAN_RX_KERNEL;
	/* Congestion Experienced outside: the kernel merges it into the inner
	 * header (INET_ECN_decapsulate), or drops a non-ECT inner packet. */
	if ((h.ip.tos & 3) == 3)
		return VXLAN_RX_KERNEL;
	r = remote_lookup(TWILL_FAMILY_V4, (const __u8 *)&h.ip.saddr);
	if (!r) {
		*reason = TWILL_C_RX_UNKNOWN;
		return VXLAN_RX_KERNEL;
	}
	*peer_id = r->peer_id;
	if (bpf_skb_load_bytes(skb, offsetof(struct vxlan_hdrs, vx), &h.vx, sizeof(h.vx) + sizeof(h.inner)))
		return VXLAN_RX_KERNEL;
	if (h.vx.vx_flags != bpf_htonl(VXLAN_FLAGS_I) || h.vx.vx_vni != bpf_htonl(cfg->vni << 8))
		return VXLAN_RX_KERNEL;
	if (!mac_equal(h.inner.h_dest, fc->vtep_mac))
		return VXLAN_RX_KERNEL;
	if (h.inner.h_proto == bpf_htons(ETH_P_IP)) {
		family = TWILL_FAMILY_V4;
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
		if (bpf_skb_load_bytes(skb, l3 + offsetof(struct iphdr, daddr), inner_daddr, 4))
			return VXLAN_RX_KERNEL;
	} else if (h.inner.h_proto == bpf_htons(ETH_P_IPV6)) {
		family = TWILL_FAMILY_V6;
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
		if (bpf_skb_load_bytes(skb, l3 + offsetof(struct ipv6hdr, daddr), inner_daddr, 16))
			return VXLAN_RX_KERNEL;
	} else {
		return VXLAN_RX_KERNEL;
	}
	dst = peer_lookup(family, inner_daddr);
	if (!dst || dst->kind != TWILL_PEER_LOCAL)
		return VXLAN_RX_KERNEL; /* forwarded elsewhere: the kernel's path */

	if (bpf_skb_adjust_room(skb, -VXLAN_ENCAP_LEN, BPF_ADJ_ROOM_MAC, flags))
		return VXLAN_RX_KERNEL; /* unchanged: e.g. a kernel without DECAP_L3 */
	/* The outer UDP checksum (if the device validated one) is gone: one
	 * level less of CHECKSUM_UNNECESSARY, so an inner checksum nobody
	 * validated is checked by the stack (CHECKSUM_NONE / _COMPLETE /
	 * _PARTIAL need nothing: the inner checksum is verified or local). */
	bpf_csum_level(skb, BPF_CSUM_LEVEL_DEC);
	/* The frame keeps the outer Ethernet header's place: make it the inner one. */
	if (bpf_skb_store_bytes(skb, 0, &h.inner, sizeof(h.inner), 0))
		return VXLAN_RX_DECAPPED; /* cannot fail after adjust_room; the stack copes */
	return VXLAN_RX_DECAPPED;
}

#endif
