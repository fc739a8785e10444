/**
 * The dataplanes the benchmark compares, and the reference none can beat.
 *
 * How it works: a Mode names one way of carrying pod-to-pod traffic between
 * two hosts, with the exact twill flags and network config that produce it.
 * Every cluster mode runs real twill daemons (bench/lib/twill.ts) on the same
 * two-host topology and the same pre-written leases; only the flags differ:
 *
 *   kernel-vxlan             --dataplane kernel                           flannel's vxlan backend, entry for entry
 *   twill-vxlan              --dataplane bpf --encap bpf                  eBPF over VXLAN, through the host stack
 *   twill-vxlan-fast         --dataplane bpf --encap bpf --fast-path      eBPF over VXLAN, pod veth ⇄ underlay redirects
 *   twill-vxlan-device       --dataplane bpf --encap device               as twill-vxlan, the vxlan driver encapsulates
 *   twill-vxlan-fast-device  --dataplane bpf --encap device --fast-path   as twill-vxlan-fast, the vxlan driver encapsulates
 *   kernel-direct            --dataplane kernel, DirectRouting            flannel's host-gw style routes ("kernel host-gw")
 *   twill-direct             --dataplane bpf --fast-path, DirectRouting
 *   underlay                 no twill: host to host on the underlay (the reference)
 *
 * `--encap bpf` (twill's default: the tc programs write and strip the VXLAN
 * headers) against `--encap device` (the kernel's vxlan driver does it, as
 * twill 0.1 did) shows what BPF encapsulation buys; the flag is given
 * explicitly so every command line says which one ran. kernel-direct is
 * flannel with DirectRouting between hosts on one L2 segment: one route
 * per peer via the peer's underlay address — exactly the host-gw backend's
 * routes, so it is the "kernel host-gw" reference of the targets.
 *
 * `underlay` is the limit: it is the wire every other mode's packets cross
 * (host eth0 ⇄ veth ⇄ bridge ⇄ veth ⇄ host eth0) with nothing else — no pod
 * namespace and its veth, no cni0 bridge, no encapsulation (and on bare
 * hosts no netfilter rules; real-node hosts carry the same rules in every
 * mode, this one included). Any pod-to-pod path is this path plus at least one veth crossing
 * per side, so on this machine no overlay can be faster than it; a mode
 * that seems to be is within the noise.
 */
import type { NodeOptions } from "./lib/twill.js";

export const MODE_IDS = [
  "kernel-vxlan", "twill-vxlan", "twill-vxlan-fast", "twill-vxlan-device", "twill-vxlan-fast-device", "kernel-direct", "twill-direct", "underlay",
] as const;
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
  /** bpf VXLAN modes: who encapsulates (`--encap`, given in node.extraArgs). */
  readonly encap?: "bpf" | "device";
  /** Ratios in the report are against this mode (kernel-vxlan). */
  readonly baseline?: true;
}

const QUIET = ["--log-level", "info"];
const ENCAP_BPF = [...QUIET, "--encap", "bpf"];
const ENCAP_DEVICE = [...QUIET, "--encap", "device"];

export const MODES: Readonly<Record<ModeId, Mode>> = {
  "kernel-vxlan": {
    id: "kernel-vxlan", what: "flannel's vxlan backend exactly (`--dataplane kernel`): per peer a neighbour, an FDB entry and a route",
    node: { dataplane: "kernel", extraArgs: QUIET }, directRouting: false, path: "vxlan", baseline: true,
  },
  "twill-vxlan": {
    id: "twill-vxlan", what: "eBPF over VXLAN (`--dataplane bpf --encap bpf`, the default): the tc programs write and strip the VXLAN headers; pod traffic goes through the host stack and netfilter",
    node: { dataplane: "bpf", fastPath: false, extraArgs: ENCAP_BPF }, directRouting: false, path: "vxlan", encap: "bpf",
  },
  "twill-vxlan-fast": {
    id: "twill-vxlan-fast", what: "eBPF over VXLAN with `--fast-path` (`--encap bpf`): pod veth → underlay and underlay → pod redirects, skipping the host's netfilter",
    node: { dataplane: "bpf", fastPath: true, extraArgs: ENCAP_BPF }, directRouting: false, path: "vxlan", encap: "bpf",
  },
  "twill-vxlan-device": {
    id: "twill-vxlan-device", what: "as twill-vxlan but `--encap device`: the kernel's vxlan driver builds and strips the VXLAN headers (twill 0.1's path)",
    node: { dataplane: "bpf", fastPath: false, extraArgs: ENCAP_DEVICE }, directRouting: false, path: "vxlan", encap: "device",
  },
  "twill-vxlan-fast-device": {
    id: "twill-vxlan-fast-device", what: "as twill-vxlan-fast but `--encap device`: pod veth ⇄ vxlan device redirects, the vxlan driver encapsulates",
    node: { dataplane: "bpf", fastPath: true, extraArgs: ENCAP_DEVICE }, directRouting: false, path: "vxlan", encap: "device",
  },
  "kernel-direct": {
    id: "kernel-direct", what: "flannel with `\"DirectRouting\": true` (`--dataplane kernel`): a host-gw style route per peer (the \"kernel host-gw\" reference)",
    node: { dataplane: "kernel", extraArgs: QUIET }, directRouting: true, path: "direct",
  },
  "twill-direct": {
    id: "twill-direct", what: "eBPF with DirectRouting and `--fast-path`: `bpf_redirect_neigh` out of the underlay, no encapsulation",
    node: { dataplane: "bpf", fastPath: true, extraArgs: QUIET }, directRouting: true, path: "direct",
  },
  underlay: {
    id: "underlay", what: "reference: host to host on the underlay (eth0 → eth0), no pods, no overlay; the host profile's rules like every other mode",
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
