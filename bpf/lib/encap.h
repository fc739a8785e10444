/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * VXLAN encapsulation metadata: the vxlan device is in external
 * (collect-metadata) mode, so "encapsulating" means attaching a tunnel key
 * (VNI, remote and local underlay address) and setting the inner Ethernet
 * header to what a flannel peer expects: destination = its VTEP MAC.
 */
#ifndef TWILL_ENCAP_H
#define TWILL_ENCAP_H

#include "l3.h"

/*
 * Sets the tunnel key and inner MACs for `peer`. Returns the ifindex of the
 * vxlan device to send on (> 0), or -TWILL_C_DROP_* as a negative reason.
 */
static __always_inline int encap_prepare(struct __sk_buff *skb, const struct twill_peer *peer,
					 const struct twill_config *cfg)
{
	const struct twill_family_config *fc;
	struct bpf_tunnel_key key;
	__u64 flags = 0;
	int fi = fam_index(peer->remote_family);

	if (fi)
		fc = &cfg->fam[1];
	else
		fc = &cfg->fam[0];
	if (!fc->vxlan_ifindex)
		return -TWILL_C_DROP_NO_CONFIG;

	__builtin_memset(&key, 0, sizeof(key));
	key.tunnel_id = peer->vni;
	key.tunnel_ttl = 64;
	if (peer->remote_family == TWILL_FAMILY_V6) {
		__builtin_memcpy(key.remote_ipv6, peer->remote, 16);
		__builtin_memcpy(key.local_ipv6, fc->local_ip, 16);
		flags = BPF_F_TUNINFO_IPV6;
	} else {
		__u32 r, l;

		__builtin_memcpy(&r, peer->remote, 4);
		__builtin_memcpy(&l, fc->local_ip, 4);
		/* bpf_tunnel_key holds IPv4 addresses in host byte order. */
		key.remote_ipv4 = bpf_ntohl(r);
		key.local_ipv4 = bpf_ntohl(l);
	}
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags))
		return -TWILL_C_DROP_ENCAP;
	if (set_macs(skb, peer->vtep_mac, fc->vtep_mac))
		return -TWILL_C_DROP_ENCAP;
	return fc->vxlan_ifindex;
}

#endif
