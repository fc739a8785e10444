/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of twill, one BTF block each, all pinned by name under the
 * node's pin directory so a restarted controller adopts them.
 */
#ifndef TWILL_MAPS_H
#define TWILL_MAPS_H

#include "common.h"

/* Remote subnets (plus our own subnet and the cluster network) by prefix. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct twill_lpm_key);
	__type(value, struct twill_peer);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_peers SEC(".maps");

/* The node config: one entry, written by the controller. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct twill_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_config SEC(".maps");

/* Local pods, learnt from the packets they send on their veth. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct twill_ep_key);
	__type(value, struct twill_ep);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_endpoints SEC(".maps");

/* Counters by (peer, enum twill_counter), per CPU. Entries appear on first
 * use; the controller deletes those of peers that are gone. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct twill_stat_key);
	__type(value, struct twill_stat);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_stats SEC(".maps");

/* The underlay addresses of the peers: the only VXLAN senders whose packets
 * BPF decapsulates or delivers into a pod (the outer source check). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct twill_ep_key);
	__type(value, struct twill_remote);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_remotes SEC(".maps");

/* Flows whose packets left through the host stack (fast path only), keyed
 * as their replies arrive: those replies go to the stack too, for conntrack's
 * reverse NAT. Written by to_overlay, read by deliver_local. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct twill_flow_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} twill_nat_flows SEC(".maps");

#endif
