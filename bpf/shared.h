/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The structs and constants that the BPF programs and the TypeScript control
 * plane both read. This header is their single source of truth: the
 * TypeScript mirror (src/bpf/layout.ts) is checked against the BTF of the
 * compiled object by test/unit/layout.test.ts, so the two cannot drift.
 *
 * Every struct has explicit padding; every field says what it holds.
 * Addresses are stored as 16 bytes in network order; an IPv4 address uses
 * the first 4 bytes and leaves the rest zero, so IPv4 and IPv6 share one
 * code path everywhere.
 */
#ifndef TWILL_SHARED_H
#define TWILL_SHARED_H

/* Address families as twill stores them (not AF_*: these are the IP versions). */
#define TWILL_FAMILY_V4 4
#define TWILL_FAMILY_V6 6

/* Bits of the LPM key that precede the address: the family word. */
#define TWILL_LPM_FAMILY_BITS 32

/* Peer kinds: what a longest-prefix match on a destination means. */
enum twill_peer_kind {
	TWILL_PEER_VXLAN   = 1, /* a remote subnet reached over VXLAN */
	TWILL_PEER_DIRECT  = 2, /* a remote subnet routed directly (DirectRouting) */
	TWILL_PEER_LOCAL   = 3, /* our own pod subnet: leave it to the bridge */
	TWILL_PEER_CLUSTER = 4, /* the cluster network: a miss if nothing longer matched */
};

/* twill_config.flags */
#define TWILL_CFG_FAST_PATH (1U << 0) /* redirect pod traffic past the host stack */
#define TWILL_CFG_BPF_ENCAP (1U << 1) /* write and strip VXLAN headers in BPF (IPv4 underlay) */
/* The upper 16 bits of twill_config.flags hold the VXLAN UDP port (a
 * number, e.g. 8472). It lives there, not in a field of its own, so that
 * the struct keeps twill 0.1's layout and a rollback to 0.1 adopts the pin. */
#define TWILL_CFG_PORT_SHIFT 16

/* The mark from_pod leaves on a packet it handed to the vxlan device with a
 * tunnel key (the device path), so that device's egress program passes it
 * through untouched (and clears the mark). */
#define TWILL_MARK_ENCAPPED 0x7a11c0deU

/* Key of the peers LPM trie. prefixlen = TWILL_LPM_FAMILY_BITS + prefix length. */
struct twill_lpm_key {
	__u32 prefixlen; /* bits of (family, addr) that must match */
	__u32 family;    /* TWILL_FAMILY_V4 or TWILL_FAMILY_V6 */
	__u8  addr[16];  /* destination prefix, network order, v4 in addr[0..3] */
};

/* Value of the peers LPM trie: how to reach one remote subnet. */
struct twill_peer {
	__u8  remote[16];    /* the peer's underlay address, network order */
	__u8  vtep_mac[6];   /* inner destination MAC: the peer's VTEP MAC */
	__u8  kind;          /* enum twill_peer_kind */
	__u8  remote_family; /* TWILL_FAMILY_V4/V6: family of `remote` */
	__u32 vni;           /* VXLAN network identifier */
	__u32 id;            /* the controller's id for this peer (per-peer counters) */
};

/* Per-family part of the node config. Index 0 is IPv4, 1 is IPv6. */
struct twill_family_config {
	__u32 vxlan_ifindex;    /* the external vxlan device carrying this family, 0 if none */
	__u8  vtep_mac[6];      /* that device's MAC: our VTEP MAC */
	__u8  pad[2];
	__u8  local_ip[16];     /* our underlay address (tunnel source), network order */
	__u32 underlay_ifindex; /* the underlay interface (DirectRouting egress) */
};

/* The one entry of the config array map. */
struct twill_config {
	__u32 flags;          /* TWILL_CFG_* in bits 0-15; the VXLAN UDP port in bits 16-31 */
	__u32 vni;            /* our VNI: decapsulated packets with another are dropped */
	__u32 bridge_ifindex; /* the pod bridge (cni0) */
	__u8  bridge_mac[6];  /* its MAC: source MAC of packets delivered to pods */
	__u8  pad[2];
	struct twill_family_config fam[2];
};

/* Key of the local endpoints map: a local pod's address. */
struct twill_ep_key {
	__u32 family;   /* TWILL_FAMILY_V4/V6 */
	__u8  addr[16]; /* pod address, network order */
};

/* Value of the local endpoints map: where that pod is. */
struct twill_ep {
	__u32 ifindex; /* host side of the pod's veth */
	__u8  mac[6];  /* the pod's MAC */
	__u8  pad[2];
};

/* Value of the remotes map (key: struct twill_ep_key with the peer's
 * underlay address): a VXLAN sender twill accepts. */
struct twill_remote {
	__u32 peer_id; /* twill_peer.id of (one of) the peer's subnets, for counters */
	__u32 flags;   /* reserved, 0 */
};

/* Key of the NAT flows map: a flow, as its packets arrive from the overlay,
 * whose other direction left through the host stack (so conntrack may have
 * NAT'ed it: kube-proxy's Service DNAT). The fast path leaves its packets to
 * the stack. ICMP echo flows use the identifier as sport, dport 0. */
struct twill_flow_key {
	__u32 family;   /* TWILL_FAMILY_V4/V6 */
	__u8  proto;    /* IPPROTO_TCP, _UDP, _ICMP or _ICMPV6 */
	__u8  pad;
	__be16 sport;   /* source port of the arriving packet */
	__be16 dport;   /* destination port of the arriving packet */
	__u8  pad2[2];
	__u8  saddr[16]; /* source address of the arriving packet (remote) */
	__u8  daddr[16]; /* destination address of the arriving packet (local pod) */
};

/* One counter: per CPU, summed by the controller. */
struct twill_stat {
	__u64 packets;
	__u64 bytes;
};

/* Key of the stats map: one counter of one peer. */
struct twill_stat_key {
	__u32 peer_id; /* twill_peer.id of the peer concerned; 0 = no peer (e.g. a miss) */
	__u32 counter; /* enum twill_counter */
};

/* What happened to a packet. Keep in step with COUNTERS in src/bpf/layout.ts
 * (the layout test checks the names against BTF). */
enum twill_counter {
	TWILL_C_ENCAP           = 0,  /* encapsulated in BPF at the vxlan device's egress (stack traffic) */
	TWILL_C_ENCAP_FAST      = 1,  /* encapsulated in BPF straight from a pod veth (fast path) */
	TWILL_C_DIRECT          = 2,  /* sent unencapsulated to a peer on our L2 segment (DirectRouting) */
	TWILL_C_DELIVERED       = 3,  /* received over VXLAN, redirected into a pod */
	TWILL_C_DECAP_STACK     = 4,  /* decapsulated by the vxlan driver, handed to the host stack */
	TWILL_C_RX_DIRECT       = 5,  /* received unencapsulated from a DirectRouting peer */
	TWILL_C_MISS            = 6,  /* cluster destination with no lease: to the stack */
	TWILL_C_STACK_MTU       = 7,  /* too big for the path: to the stack for ICMP */
	TWILL_C_STACK_NAT       = 8,  /* fast path declined: a flow that left through the stack (NAT), an ICMP error, a fragment, an extension header */
	TWILL_C_STACK_TTL       = 9,  /* TTL expiring: to the stack for ICMP */
	TWILL_C_DROP_NO_LEASE   = 10, /* dropped: vxlan egress with no peer for the destination */
	TWILL_C_DROP_VNI        = 11, /* dropped: decapsulated with a foreign VNI */
	TWILL_C_DROP_NO_TUNNEL  = 12, /* unused since 0.2 (BPF-decapsulated packets carry no tunnel metadata) */
	TWILL_C_DROP_ENCAP      = 13, /* dropped: setting the tunnel key failed */
	TWILL_C_DROP_NO_CONFIG  = 14, /* dropped: the node config is not loaded */
	TWILL_C_DROP_UNSUPPORTED= 15, /* dropped: on the vxlan device, not IP or not for the cluster network */
	TWILL_C_ENCAP_DEVICE    = 16, /* handed to the vxlan driver with a tunnel key (IPv6 underlay, --encap device, fallback) */
	TWILL_C_DECAP           = 17, /* decapsulated in BPF at the underlay, handed to the stack as the vxlan device's */
	TWILL_C_RX_UNKNOWN      = 18, /* VXLAN from a sender that is no known peer: left to the kernel, never into a pod by BPF */
	TWILL_C_RX_FALLBACK     = 19, /* VXLAN to us that BPF did not decapsulate (not for a local pod, flags, VNI, helper failed): left to the kernel */
	TWILL_C_TO_POD          = 20, /* routed to a local pod: from the bridge's egress straight to its veth */
	TWILL_C_MAX             = 21,
};

#endif /* TWILL_SHARED_H */
