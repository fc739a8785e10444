/**
 * What the running kernel offers the BPF VXLAN path, probed once at start.
 *
 * How it works: bpf_skb_adjust_room's flags are an anonymous enum of the
 * kernel's UAPI, so the names of the ones a kernel knows are in its BTF
 * string table (/sys/kernel/btf/vmlinux). Encapsulating needs
 * BPF_F_ADJ_ROOM_ENCAP_L2_ETH (5.10), decapsulating an inner packet into
 * the right protocol needs BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (6.x). Without them
 * (or without BTF) twill keeps the vxlan device's encapsulation — the same
 * wire format, the slower path — and says so once in the log and in
 * /metrics. The programs also fall back per packet if a helper refuses, so
 * a wrong answer here costs speed, never packets.
 */
import { readFileSync } from "node:fs";

const NEEDED = ["BPF_F_ADJ_ROOM_ENCAP_L2_ETH", "BPF_F_ADJ_ROOM_DECAP_L3_IPV4", "BPF_F_ADJ_ROOM_DECAP_L3_IPV6"] as const;

export interface EncapProbe {
  /** True when the kernel has every flag the BPF VXLAN path uses. */
  readonly ok: boolean;
  /** Why not, in words (empty when ok). */
  readonly reason: string;
}

/** Probes the kernel; `btfPath` is for tests. */
export function probeBpfEncap(btfPath = "/sys/kernel/btf/vmlinux"): EncapProbe {
  let btf: Buffer;
  try {
    btf = readFileSync(btfPath);
  } catch (e) {
    return { ok: false, reason: `cannot read the kernel's BTF (${btfPath}: ${(e as NodeJS.ErrnoException).code ?? e})` };
  }
  const missing = NEEDED.filter((name) => btf.indexOf(Buffer.from(`${name}\0`, "latin1")) < 0);
  return missing.length ? { ok: false, reason: `the kernel lacks ${missing.join(", ")}` } : { ok: true, reason: "" };
}
