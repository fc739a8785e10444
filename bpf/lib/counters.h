/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef TWILL_COUNTERS_H
#define TWILL_COUNTERS_H

#include "maps.h"

/* Adds one packet of `len` bytes to counter `idx` of peer `peer_id`
 * (0: no peer). Returns nothing: a full map only loses the count. */
static __always_inline void count(__u32 peer_id, __u32 idx, __u32 len)
{
	struct twill_stat_key key = { .peer_id = peer_id, .counter = idx };
	struct twill_stat *s = bpf_map_lookup_elem(&twill_stats, &key);

	if (!s) {
		struct twill_stat zero = {};

		bpf_map_update_elem(&twill_stats, &key, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&twill_stats, &key);
		if (!s)
			return;
	}
	s->packets++;
	s->bytes += len;
}

#endif
