/**
 * The dataplanes the benchmark compares, and the reference none can beat.
 *
 * How it works: a Mode names one way of carrying pod-to-pod traffic between
 * two hosts, with the exact twill flags and network config that produce it.
 * Every cluster mode runs real twill daemons (test/lib/twill.ts) on the same
 * two-host topology and the same pre-written leases; only the flags differ:
 *
 *   kernel-vxlan      --dataplane kernel                 flannel's vxlan backend, entry for entry
 *   twill-vxlan       --dataplane bpf                    eBPF over VXLAN, through the host stack
 *   twill-vxlan-fast  --dataplane bpf --fast-path        eBPF over VXLAN, pod veth ⇄ vxlan redirects
 *   kernel-direct     --dataplane kernel, DirectRouting  flannel's host-gw style routes
 *   twill-direct      --dataplane bpf --fast-path, DirectRouting
 *   underlay          no twill: host to host on the underlay (the reference)
 *
 * `underlay` is the limit: it is the wire every other mode's packets cross
 * (host eth0 ⇄ veth ⇄ bridge ⇄ veth ⇄ host eth0) with nothing else — no pod
 * namespace and its veth, no cni0 bridge, no encapsulation, no netfilter
 * rules. Any pod-to-pod path is this path plus at least one veth crossing
 * per side, so on this machine no overlay can be faster than it; a mode
 * that seems to be is within the noise.
 */
import type { NodeOptions } from "../test/lib/twill.js";

export const MODE_IDS = ["kernel-vxlan", "twill-vxlan", "twill-vxlan-fast", "kernel-direct", "twill-direct", "underlay"] as const;
export type ModeId = (typeof MODE_IDS)[number];

/** What the first host must use to reach the second host's pod subnet. */
export type Path = "vxlan" | "direct" | "underlay";

export interface Mode {
  readonly id: ModeId;
  /** One line for the report. */
  readonly what: string;
  /** Daemon options of both nodes; absent for the underlay reference. */
  readonly node?: NodeOptions;
  readonly directRouting: boolean;
  readonly path: Path;
  /** Ratios in the report are against this mode (kernel-vxlan). */
  readonly baseline?: true;
}

const QUIET = ["--log-level", "info"];

export const MODES: Readonly<Record<ModeId, Mode>> = {
  "kernel-vxlan": {
    id: "kernel-vxlan", what: "flannel's vxlan backend exactly (`--dataplane kernel`): per peer a neighbour, an FDB entry and a route",
    node: { dataplane: "kernel", extraArgs: QUIET }, directRouting: false, path: "vxlan", baseline: true,
  },
  "twill-vxlan": {
    id: "twill-vxlan", what: "eBPF over VXLAN (`--dataplane bpf`), pod traffic through the host stack and netfilter",
    node: { dataplane: "bpf", fastPath: false, extraArgs: QUIET }, directRouting: false, path: "vxlan",
  },
  "twill-vxlan-fast": {
    id: "twill-vxlan-fast", what: "eBPF over VXLAN with `--fast-path`: pod veth → vxlan and vxlan → pod redirects",
    node: { dataplane: "bpf", fastPath: true, extraArgs: QUIET }, directRouting: false, path: "vxlan",
  },
  "kernel-direct": {
    id: "kernel-direct", what: "flannel with `\"DirectRouting\": true` (`--dataplane kernel`): a host-gw style route per peer",
    node: { dataplane: "kernel", extraArgs: QUIET }, directRouting: true, path: "direct",
  },
  "twill-direct": {
    id: "twill-direct", what: "eBPF with DirectRouting and `--fast-path`: `bpf_redirect_neigh` out of the underlay, no encapsulation",
    node: { dataplane: "bpf", fastPath: true, extraArgs: QUIET }, directRouting: true, path: "direct",
  },
  underlay: {
    id: "underlay", what: "reference: host to host on the underlay (eth0 → eth0), no pods, no overlay, no netfilter rules",
    directRouting: false, path: "underlay",
  },
};

/** Parses a comma-separated list of mode ids; kernel-vxlan (the baseline) is always included, first. */
export function parseModes(text: string): ModeId[] {
  const ids = text.split(",").map((s) => s.trim()).filter(Boolean);
  const bad = ids.filter((id) => !(MODE_IDS as readonly string[]).includes(id));
  if (bad.length) throw new Error(`Cannot use --modes ${text}: unknown mode ${bad.join(", ")} (known: ${MODE_IDS.join(", ")})`);
  const set = new Set<ModeId>(["kernel-vxlan", ...(ids as ModeId[])]);
  return MODE_IDS.filter((id) => set.has(id));
}
