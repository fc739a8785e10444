/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map lookups: the node config, peers by destination, local endpoints. */
#ifndef TWILL_LOOKUP_H
#define TWILL_LOOKUP_H

#include "maps.h"

/* Returns the node config, or NULL before the controller wrote it. */
static __always_inline struct twill_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&twill_config, &zero);
}

/* Returns the longest-prefix peer entry for an address, or NULL. */
static __always_inline struct twill_peer *peer_lookup(__u32 family, const __u8 *addr)
{
	struct twill_lpm_key key;

	__builtin_memset(&key, 0, sizeof(key));
	key.family = family;
	key.prefixlen = TWILL_LPM_FAMILY_BITS + (family == TWILL_FAMILY_V6 ? 128 : 32);
	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&twill_peers, &key);
}

/* Fills the (family, address) key of the endpoints and remotes maps. An
 * IPv4 `addr` needs only its 4 bytes (it may sit in a packet header). */
static __always_inline void addr_key(struct twill_ep_key *key, __u32 family, const __u8 *addr)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = family;
	if (family == TWILL_FAMILY_V6)
		__builtin_memcpy(key->addr, addr, 16);
	else
		__builtin_memcpy(key->addr, addr, 4);
}

/* Returns the local endpoint for an address, or NULL. */
static __always_inline struct twill_ep *ep_lookup(__u32 family, const __u8 *addr)
{
	struct twill_ep_key key;

	addr_key(&key, family, addr);
	return bpf_map_lookup_elem(&twill_endpoints, &key);
}

/* Returns 1 when two MACs are equal. Byte by byte: clang has no inline
 * memcmp for BPF, and either MAC may sit unaligned (packed headers). */
static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* Returns the remotes entry of a VXLAN sender (its underlay address), or NULL. */
static __always_inline struct twill_remote *remote_lookup(__u32 family, const __u8 *addr)
{
	struct twill_ep_key key;

	addr_key(&key, family, addr);
	return bpf_map_lookup_elem(&twill_remotes, &key);
}

/*
 * Learns that a local pod with source address p->saddr sits behind the veth
 * the packet came in on. Only addresses inside our own subnet are learnt,
 * and only when nobody holds them yet: the first veth to use an address
 * keeps it (BPF_NOEXIST), so a pod cannot take over another pod's address
 * and receive its traffic by sending with it. The controller deletes the
 * entries of veths that are gone, which frees the address for its next
 * owner. Returns nothing.
 */
static __always_inline void ep_learn(struct __sk_buff *skb, __u32 family, const __u8 *saddr)
{
	struct twill_ep_key key;
	struct twill_ep val, *cur;
	struct twill_peer *own;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u64 flags = BPF_NOEXIST;

	if ((void *)(eth + 1) > end)
		return;

	cur = ep_lookup(family, saddr);
	if (cur) {
		/* Claimed by another veth: first claim wins. */
		if (cur->ifindex != skb->ifindex || mac_equal(cur->mac, eth->h_source))
			return;
		flags = BPF_EXIST; /* the same veth, a new MAC */
	}
	own = peer_lookup(family, saddr);
	if (!own || own->kind != TWILL_PEER_LOCAL)
		return;
	addr_key(&key, family, saddr);
	__builtin_memset(&val, 0, sizeof(val));
	val.ifindex = skb->ifindex;
	__builtin_memcpy(val.mac, eth->h_source, ETH_ALEN);
	bpf_map_update_elem(&twill_endpoints, &key, &val, flags);
}

#endif
