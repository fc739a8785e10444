/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Basic includes and constants for every twill program. */
#ifndef TWILL_COMMON_H
#define TWILL_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "shared.h"

/* From linux/pkt_cls.h and linux/if_ether.h, which do not mix with vmlinux.h. */
#define TC_ACT_OK       0
#define TC_ACT_SHOT     2
#define TC_ACT_REDIRECT 7
#define ETH_P_IP        0x0800
#define ETH_P_IPV6      0x86DD
#define ETH_ALEN        6
#define IPPROTO_ICMPV6  58

/* Reasons helpers return (negative), turned into counters by the entry program. */
#define REASON_OK 0

static __always_inline int fam_index(__u32 family)
{
	return family == TWILL_FAMILY_V6 ? 1 : 0;
}

#endif
