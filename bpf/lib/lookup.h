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

/* Returns the local endpoint for an address, or NULL. */
static __always_inline struct twill_ep *ep_lookup(__u32 family, const __u8 *addr)
{
	struct twill_ep_key key;

	__builtin_memset(&key, 0, sizeof(key));
	key.family = family;
	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&twill_endpoints, &key);
}

/* Returns 1 when two MACs are equal (clang has no inline memcmp for BPF). */
static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/*
 * Learns that a local pod with source address p->saddr sits behind the veth
 * the packet came in on. Only addresses inside our own subnet are learnt,
 * and the map is written only when something changed. Returns nothing.
 */
static __always_inline void ep_learn(struct __sk_buff *skb, __u32 family, const __u8 *saddr)
{
	struct twill_ep_key key;
	struct twill_ep val, *cur;
	struct twill_peer *own;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return;
	cur = ep_lookup(family, saddr);
	if (cur && cur->ifindex == skb->ifindex && mac_equal(cur->mac, eth->h_source))
		return;
	own = peer_lookup(family, saddr);
	if (!own || own->kind != TWILL_PEER_LOCAL)
		return;
	__builtin_memset(&key, 0, sizeof(key));
	key.family = family;
	__builtin_memcpy(key.addr, saddr, 16);
	__builtin_memset(&val, 0, sizeof(val));
	val.ifindex = skb->ifindex;
	__builtin_memcpy(val.mac, eth->h_source, ETH_ALEN);
	bpf_map_update_elem(&twill_endpoints, &key, &val, BPF_ANY);
}

#endif
