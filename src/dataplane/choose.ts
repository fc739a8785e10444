/**
 * Which dataplane a node runs: `--dataplane auto` (the default) runs `bpf`
 * where it can and `kernel` (flannel's own per-peer routes, neighbours and
 * FDB entries) where it cannot, so twill's image runs unchanged in
 * kube-flannel's container spec (unprivileged, NET_ADMIN and NET_RAW, no
 * bpffs mount) as well as in twill's own DaemonSet.
 *
 * How it works: two facts decide, read once at start from /proc (no
 * syscall that could fail half-way, no process):
 *  1) capabilities: the effective set (/proc/self/status CapEff) must hold
 *     CAP_NET_ADMIN (tc attachments, links) and either CAP_BPF with
 *     CAP_PERFMON (kernels >= 5.8: loading the tc programs, whose pointer
 *     arithmetic needs a "trusted" loader) or CAP_SYS_ADMIN (which implies
 *     both);
 *  2) bpffs: the pin directory must lie on a mount of type "bpf"
 *     (/proc/self/mountinfo: the longest mount point above it), or the maps
 *     could not outlive the process and a restart would lose the dataplane;
 *  3) bpf() itself: one tiny array map is created and closed. A seccomp
 *     profile that refuses bpf() (podman's and CRI-O's default, a kubelet
 *     with --seccomp-default) passes both checks above and would otherwise
 *     crash the start with EPERM.
 * `auto` without them is `kernel`, with the reason, which the daemon logs
 * once, exports as twill_dataplane_info{reason} and `twill status` prints.
 * An explicit `--dataplane bpf` without them is an error naming what is
 * missing, never a silent switch.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { TwillError } from "../errors.js";
import { libbpf } from "../bpf/libbpf.js";
import { strerror } from "../net/netlink/libc.js";

export type DataplaneFlag = "auto" | "bpf" | "kernel";

export interface DataplaneChoice {
  readonly kind: "bpf" | "kernel";
  /** Why `auto` fell back to kernel; "" otherwise. */
  readonly reason: string;
}

/** Capability numbers (linux/capability.h). */
const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;

/** The host facts the choice reads; tests hand in their own. */
export interface HostFacts {
  /** /proc/self/status. */
  readonly status: () => string;
  /** /proc/self/mountinfo. */
  readonly mountinfo: () => string;
  /** Tries bpf(BPF_MAP_CREATE): 0, or the negative errno. */
  readonly bpf?: () => number;
}

/** BPF_MAP_TYPE_ARRAY, 1 entry of 4 bytes: the cheapest map there is; closed at once. */
function trialMap(): number {
  const lib = libbpf();
  const fd = lib.map_create(2, "twill_probe", 4, 4, 1, null);
  if (fd >= 0) lib.close(fd);
  return fd >= 0 ? 0 : fd;
}

const procFacts: HostFacts = {
  status: () => readFileSync("/proc/self/status", "utf8"),
  mountinfo: () => readFileSync("/proc/self/mountinfo", "utf8"),
  bpf: trialMap,
};

/** The effective capability set, or undefined when /proc does not say. */
export function effectiveCaps(status: string): bigint | undefined {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : undefined;
}

const has = (caps: bigint, cap: number): boolean => ((caps >> BigInt(cap)) & 1n) === 1n;

/** mountinfo's octal escapes (\040 for a space, ...). */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** The filesystem type of the mount that holds `path` (the longest mount point above it); undefined when none. */
export function fsTypeOf(path: string, mountinfo: string): string | undefined {
  const target = resolve(path);
  let best: { point: string; type: string } | undefined;
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (!left || !right) continue;
    const point = unescape(left.split(" ")[4] ?? "");
    const type = right.split(" ")[0] ?? "";
    const inside = point === "/" || target === point || target.startsWith(point.endsWith("/") ? point : `${point}/`);
    if (inside && (!best || point.length >= best.point.length)) best = { point, type };
  }
  return best?.type;
}

/** Why this process cannot run the bpf dataplane with its pins under `pinDir`; "" when it can. */
export function bpfUnavailable(pinDir: string, facts: HostFacts = procFacts): string {
  let caps: bigint | undefined;
  try {
    caps = effectiveCaps(facts.status());
  } catch {
    caps = undefined;
  }
  if (caps !== undefined) {
    const missing: string[] = [];
    if (!has(caps, CAP.NET_ADMIN)) missing.push("CAP_NET_ADMIN");
    if (!has(caps, CAP.SYS_ADMIN) && !(has(caps, CAP.BPF) && has(caps, CAP.PERFMON))) {
      missing.push(has(caps, CAP.BPF) ? "CAP_PERFMON (with CAP_BPF)" : "CAP_BPF (with CAP_PERFMON, or CAP_SYS_ADMIN)");
    }
    if (missing.length) return `the process lacks ${missing.join(" and ")}`;
  }
  let type: string | undefined;
  try {
    type = fsTypeOf(pinDir, facts.mountinfo());
  } catch {
    return "cannot read /proc/self/mountinfo to find the bpffs";
  }
  if (type !== "bpf") return `--bpf-pin-dir ${pinDir} is not on a bpffs mount (it is on ${type ?? "no mount"}; mount one at /sys/fs/bpf)`;
  let r: number;
  try {
    r = facts.bpf?.() ?? 0;
  } catch (e) {
    return `cannot call bpf(): ${(e as Error).message}`;
  }
  if (r < 0) return `bpf() is refused (${strerror(-r)}: a seccomp profile that blocks it, e.g. a container runtime's default, or a missing capability)`;
  return "";
}

/** The dataplane to run for `--dataplane asked`; throws ERR_DATAPLANE when bpf was asked for and cannot run. */
export function chooseDataplane(asked: DataplaneFlag, pinDir: string, facts: HostFacts = procFacts): DataplaneChoice {
  if (asked === "kernel") return { kind: "kernel", reason: "" };
  const why = bpfUnavailable(pinDir, facts);
  if (!why) return { kind: "bpf", reason: "" };
  if (asked === "bpf") throw new TwillError("ERR_DATAPLANE", `--dataplane bpf cannot run here: ${why} (--dataplane auto would run the kernel dataplane)`);
  return { kind: "kernel", reason: `bpf unavailable: ${why}` };
}
