/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef TWILL_COUNTERS_H
#define TWILL_COUNTERS_H

#include "maps.h"

/* Adds one packet of `len` bytes to counter `idx`. Returns nothing. */
static __always_inline void count(__u32 idx, __u32 len)
{
	struct twill_stat *s = bpf_map_lookup_elem(&twill_counters, &idx);

	if (s) {
		s->packets++;
		s->bytes += len;
	}
}

#endif
